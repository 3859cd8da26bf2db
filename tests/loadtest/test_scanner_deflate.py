"""The C scanner on permessage-deflate connections: compressed messages (made here with
Python's zlib, as a server would) inflated and checked like plain ones, and every way
they go wrong counted, in bounded memory."""

from __future__ import annotations

import json
import zlib

import pytest

from ringcast.loadtest import scanner as sc
from ringcast.loadtest.scanner import Scanner
from tests.support.rawws import OP_BINARY, OP_CONT, OP_PING, OP_TEXT, RSV1, RSV2, frame

SIZE = 1024
TS = 1000
TAIL = b"\x00\x00\xff\xff"
POOL = 16               # free streams the scanner keeps (ZPOOL in wsscan.c)


def new(*, no_takeover: bool = True, bits: int = 15, conns: int = 4, subs: int = 1,
        size: int = SIZE, fmt: int = sc.FMT_JSON) -> Scanner:
    s = Scanner(conns, 1, size, opcode=sc.OPCODES[fmt], fmt=fmt)
    for c in range(subs):
        s.set_role(c, sc.ROLE_SUB)
        s.set_deflate(c, no_takeover=no_takeover, window_bits=bits)
    return s


def publish(s: Scanner, n: int, expected: int = 1) -> list[bytes]:
    """Publish n messages; their payloads."""
    out = []
    for _ in range(n):
        seq = s.published(0)
        s.publish(0, seq, TS, expected)
        out.append(sc.payload(0, seq, TS, s.size, s.fmt))
    return out


def compressor(bits: int = 15) -> zlib._Compress:
    return zlib.compressobj(6, zlib.DEFLATED, -bits)


def deflated(payload: bytes, co: zlib._Compress | None = None) -> bytes:
    """What a sender puts in the frames: the deflate data, synced, without the tail."""
    co = co or compressor()
    data = co.compress(payload) + co.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(TAIL)
    return data[:-4]


def zframe(data: bytes, op: int = OP_TEXT, *, fin: bool = True, rsv: int = RSV1) -> bytes:
    return frame(op, data, fin=fin, rsv=rsv, masked=False)


def faults(s: Scanner) -> dict[str, int]:
    c = s.counts()
    return {k: c[k] for k in ("lost", "duplicated", "out_of_order", "corrupted", "bad_opcode",
                              "protocol_errors", "inflate_errors", "inflate_oversize")}


CLEAN = dict.fromkeys(("lost", "duplicated", "out_of_order", "corrupted", "bad_opcode",
                       "protocol_errors", "inflate_errors", "inflate_oversize"), 0)


# -- the json format ---------------------------------------------------------------


def test_json_payload_is_a_checked_json_object_of_exactly_its_size() -> None:
    for size in (163, 164, 237, 238, 300, 1024, 4096, 65536 + 7):
        p = sc.payload(3, 7, 123_456_789, size, sc.FMT_JSON)
        assert len(p) == size and sc.check(p, size, sc.FMT_JSON)
        obj = json.loads(p)
        assert (obj["seq"], obj["ts"], obj["pub"]) == (f"{7:016x}", f"{123_456_789:016x}",
                                                      f"{3:08x}")
        assert p[8:24] == b"%016x" % 7 and p[32:48] == b"%016x" % 123_456_789
        assert p[57:65] == b"%08x" % 3
        ticks = obj["ticks"]
        assert len(ticks) == (size - 76 - 12) // 75 + 1 and set(ticks[-1]) == {"pad"}
        assert all(t["ask"] > t["bid"] for t in ticks[:-1])
    with pytest.raises(ValueError):
        sc.payload(0, 0, 0, 162, sc.FMT_JSON)
    with pytest.raises(ValueError):
        Scanner(4, 1, 162, opcode=sc.OP_TEXT, fmt=sc.FMT_JSON)


def test_every_byte_of_a_json_message_is_checked() -> None:
    p = sc.payload(1, 2, 3, 300, sc.FMT_JSON)
    for i in range(len(p)):
        bad = bytearray(p)
        bad[i] = ord("X") if p[i] != ord("X") else ord("Y")
        assert not sc.check(bytes(bad), 300, sc.FMT_JSON), i
    assert not sc.check(p.upper(), 300, sc.FMT_JSON)       # hex is lowercase
    assert not sc.check(p[:-1], 300, sc.FMT_JSON)
    assert not sc.check(p, 300, sc.FMT_BINARY)


def test_json_deflates_like_a_feed() -> None:
    """1,024 bytes on their own (server_no_context_takeover) deflate to 15-35 %."""
    ratios = []
    for seq in range(100):
        p = sc.payload(0, seq, 1_700_000_000_000_000_000 + seq * 997_000, 1024, sc.FMT_JSON)
        ratios.append(len(deflated(p)) / 1024)
    assert 0.15 <= sum(ratios) / len(ratios) <= 0.35, ratios
    binary = sc.payload(0, 1, 2, 1024)
    assert len(deflated(binary)) > 1000                      # the binary one does not


def test_json_frames_split_at_every_byte_are_delivered() -> None:
    s = Scanner(2, 1, 300, opcode=sc.OP_TEXT, fmt=sc.FMT_JSON)
    s.set_role(0, sc.ROLE_SUB)
    s.publish(0, 0, TS, 1)
    data = sc.frame(0, 0, TS, 300, opcode=sc.OP_TEXT, fmt=sc.FMT_JSON)
    for i in range(len(data)):
        s.feed(0, data[i:i + 1])
    assert s.counts()["delivered"] == 1 and faults(s) == CLEAN


# -- compressed messages -----------------------------------------------------------


@pytest.mark.parametrize("no_takeover", [True, False], ids=["standalone", "takeover"])
def test_several_compressed_messages_in_one_read(no_takeover: bool) -> None:
    s = new(no_takeover=no_takeover)
    co = compressor()
    frames = [zframe(deflated(p, None if no_takeover else co)) for p in publish(s, 20)]
    s.feed(0, b"".join(frames), now_ns=TS + 5000)
    c = s.counts()
    assert c["delivered"] == 20 and c["compressed"] == 20 and faults(s) == CLEAN
    assert c["wire_bytes"] == sum(map(len, frames))
    assert c["wire_bytes"] < 20 * SIZE * (0.35 if no_takeover else 0.2)
    assert s.histogram(sc.HIST_DELIVERY).get_total_count() == 20


@pytest.mark.parametrize("no_takeover", [True, False], ids=["standalone", "takeover"])
def test_compressed_messages_split_across_reads_at_every_byte(no_takeover: bool) -> None:
    s = new(no_takeover=no_takeover)
    co = compressor()
    data = b"".join(zframe(deflated(p, None if no_takeover else co)) for p in publish(s, 3))
    for i in range(len(data)):
        s.feed(0, data[i:i + 1])
    assert s.counts()["delivered"] == 3 and faults(s) == CLEAN
    for cut in range(1, len(data), 7):                     # and in two pieces
        s2 = new(no_takeover=no_takeover)
        co2 = compressor()
        data2 = b"".join(zframe(deflated(p, None if no_takeover else co2))
                         for p in publish(s2, 3))
        s2.feed(0, data2[:cut])
        s2.feed(0, data2[cut:])
        assert s2.counts()["delivered"] == 3 and faults(s2) == CLEAN, cut


def test_a_fragmented_compressed_message_with_a_ping_inside() -> None:
    """RSV1 on the first frame only; the continuations carry the rest of the deflate data."""
    s = new()
    (p,) = publish(s, 1)
    z = deflated(p)
    a, b = len(z) // 3, 2 * len(z) // 3
    data = (zframe(z[:a], fin=False) + frame(OP_PING, b"hi", masked=False)
            + zframe(z[a:b], OP_CONT, fin=False, rsv=0) + zframe(z[b:], OP_CONT, rsv=0))
    for cut in (1, 5, len(data) // 2, len(data) - 1):
        s = new()
        publish(s, 1)
        s.feed(0, data[:cut])
        s.feed(0, data[cut:])
        c = s.counts()
        assert c["delivered"] == 1 and c["fragmented"] == 1 and c["compressed"] == 1, cut
        assert c["wire_bytes"] == len(data) - len(frame(OP_PING, b"hi", masked=False))
        assert faults(s) == CLEAN and [n.kind for n in s.notes()] == [sc.NOTE_PING]


def test_uncompressed_messages_on_a_deflate_connection_are_fine() -> None:
    """RFC 7692 section 6: a sender may leave any message uncompressed."""
    s = new()
    p0, p1, p2 = publish(s, 3)
    plain = frame(OP_TEXT, p0, masked=False), frame(OP_TEXT, p2, masked=False)
    s.feed(0, plain[0] + zframe(deflated(p1)) + plain[1])
    assert s.counts()["delivered"] == 3 and s.counts()["compressed"] == 1
    assert faults(s) == CLEAN


def test_a_final_block_is_a_valid_end_and_keeps_the_window() -> None:
    """A sender may end a message with a BFINAL block; with context takeover the next
    message still refers to the window (here: zlib told of it as a dictionary)."""
    for no_takeover in (True, False):
        s = new(no_takeover=no_takeover)
        p0, p1 = publish(s, 2)
        co = compressor()
        first = co.compress(p0) + co.flush(zlib.Z_FINISH)
        co2 = compressor() if no_takeover else zlib.compressobj(6, zlib.DEFLATED, -15,
                                                                zdict=p0)
        second = deflated(p1, co2)
        assert no_takeover or len(second) < len(deflated(p1)) * 0.8  # refers to p0
        s.feed(0, zframe(first) + zframe(second))
        assert s.counts()["delivered"] == 2 and faults(s) == CLEAN, no_takeover


def test_a_zlib_error_is_counted_corrupted() -> None:
    s = new()
    p0, p1 = publish(s, 2)
    s.feed(0, zframe(b"\xff\xff\xff\xff" + deflated(p0)) + zframe(deflated(p1)))
    c = s.counts()
    assert c["corrupted"] == 1 and c["inflate_errors"] == 1 and c["delivered"] == 1
    assert c["protocol_errors"] == 0


def test_bytes_after_a_final_block_are_a_zlib_error() -> None:
    s = new()
    (p,) = publish(s, 1)
    co = compressor()
    s.feed(0, zframe(co.compress(p) + co.flush(zlib.Z_FINISH) + b"\x01\x02"))
    assert s.counts()["inflate_errors"] == 1 and s.counts()["corrupted"] == 1


def test_a_truncated_compressed_message_is_corrupted() -> None:
    s = new()
    (p,) = publish(s, 1)
    s.feed(0, zframe(deflated(p)[:-20]))
    assert s.counts()["corrupted"] == 1 and s.counts()["delivered"] == 0


def test_with_context_takeover_a_failed_message_loses_the_window() -> None:
    """The LZ77 window later messages refer to is gone: they count corrupted, uninflated."""
    s = new(no_takeover=False)
    co = compressor()
    ps = publish(s, 3)
    z = [deflated(p, co) for p in ps]
    s.feed(0, zframe(z[0]) + zframe(b"\xff" + z[1]) + zframe(z[2]))
    c = s.counts()
    assert c["delivered"] == 1 and c["corrupted"] == 2 and c["inflate_errors"] == 1
    assert c["inflate_streams"] <= 1       # the connection's own stream let go (or pooled)


@pytest.mark.parametrize("no_takeover", [True, False], ids=["standalone", "takeover"])
def test_a_bomb_stops_at_the_expected_size(no_takeover: bool) -> None:
    """64 MiB of zeros deflate to 64 KiB: inflating stops one byte past the size."""
    s = new(no_takeover=no_takeover)
    p0, p1 = publish(s, 2)
    bomb = deflated(p0 + bytes(64 << 20))
    assert len(bomb) < 100_000
    s.feed(0, zframe(bomb))
    c = s.counts()
    assert c["corrupted"] == 1 and c["inflate_oversize"] == 1 and c["inflate_errors"] == 0
    assert c["inflate_bytes"] < 100_000
    s.feed(0, zframe(deflated(p1)))
    assert s.counts()["delivered"] == (1 if no_takeover else 0)


def test_a_server_that_compresses_past_its_announced_window_is_caught() -> None:
    """server_max_window_bits=9: a reference 1 KiB back cannot be inflated."""
    s = new(no_takeover=False, bits=9)
    p0, p1 = publish(s, 2)
    co = compressor(15)
    s.feed(0, zframe(deflated(p0, co)) + zframe(deflated(p0[:SIZE // 2] + p1[SIZE // 2:], co)))
    c = s.counts()
    assert c["delivered"] == 1 and c["inflate_errors"] == 1
    s2 = new(no_takeover=False, bits=9)
    co9 = compressor(9)
    s2.feed(0, b"".join(zframe(deflated(p, co9)) for p in publish(s2, 4)))
    assert s2.counts()["delivered"] == 4 and faults(s2) == CLEAN


@pytest.mark.parametrize(("data", "deflate"), [
    (frame(OP_PING, b"x", rsv=RSV1, masked=False), True),            # control frame
    (zframe(b"", OP_TEXT, fin=False, rsv=0) + zframe(b"", OP_CONT), True),  # continuation
    (zframe(deflated(b"x" * 200)), False),                            # not negotiated
    (zframe(b"", rsv=RSV2), True),                                    # not permessage-deflate's
])
def test_rsv_bits_where_they_are_not_allowed(data: bytes, deflate: bool) -> None:
    s = new() if deflate else Scanner(4, 1, SIZE, opcode=sc.OP_TEXT, fmt=sc.FMT_JSON)
    if not deflate:
        s.set_role(0, sc.ROLE_SUB)
    s.feed(0, data)
    notes = s.notes()
    assert [(n.kind, n.aux) for n in notes] == [(sc.NOTE_PROTOCOL, sc.lib.WS_ERR_RSV)]
    assert s.counts()["protocol_errors"] == 1


def test_set_role_forgets_the_agreement() -> None:
    s = new()
    s.set_role(0, sc.ROLE_SUB)
    s.feed(0, zframe(deflated(publish(s, 1)[0])))
    assert s.counts()["protocol_errors"] == 1
    with pytest.raises(ValueError):
        s.set_deflate(0, no_takeover=False, window_bits=16)


def test_a_publisher_skips_its_compressed_echoes_without_inflating() -> None:
    s = new(subs=0)
    s.set_role(1, sc.ROLE_PUB)
    s.set_deflate(1, no_takeover=False)
    s.feed(1, b"".join(zframe(deflated(p)) for p in publish(s, 3, expected=0)))
    c = s.counts()
    assert c["ignored"] == 3 and c["inflate_streams"] == 0 and c["protocol_errors"] == 0


def test_binary_messages_compressed_too() -> None:
    s = new(size=100, fmt=sc.FMT_BINARY)
    frames = [zframe(deflated(p), OP_BINARY) for p in publish(s, 5)]
    s.feed(0, b"".join(frames))
    assert s.counts()["delivered"] == 5 and faults(s) == CLEAN


# -- memory ------------------------------------------------------------------------


def test_standalone_messages_hold_a_stream_only_while_they_arrive() -> None:
    """Each of 40 connections half way through a message holds a stream; once the
    messages end, a few stay pooled and the rest are freed; idle connections hold none."""
    n = 40
    s = new(conns=n, subs=n)
    (p,) = publish(s, 1, expected=n)
    data = zframe(deflated(p))
    half = len(data) // 2
    for c in range(n):
        s.feed(c, data[:half])
    assert s.count("inflate_streams") == n
    held = s.count("inflate_bytes")
    for c in range(n):
        s.feed(c, data[half:])
    assert s.counts()["delivered"] == n
    assert s.count("inflate_streams") == POOL
    assert s.count("inflate_bytes") == held * POOL // n
    (p2,) = publish(s, 1, expected=n)                       # whole messages: one stream
    for c in range(n):
        s.feed(c, zframe(deflated(p2)))
    assert s.count("inflate_streams") == POOL and s.counts()["delivered"] == 2 * n


def test_context_takeover_holds_a_stream_per_connection_until_it_goes() -> None:
    n = 20
    s = new(no_takeover=False, bits=10, conns=n, subs=n)
    (p,) = publish(s, 1, expected=n)
    for c in range(n):
        s.feed(c, zframe(deflated(p, compressor(10))))
    assert s.counts()["delivered"] == n
    assert s.count("inflate_streams") == n
    per_connection = s.count("inflate_bytes") / n
    assert 1024 < per_connection < 10 * 1024               # a 1 KiB window and zlib's state
    for c in range(n):
        s.gone(c)
        s.set_role(c, sc.ROLE_NONE)
    assert s.count("inflate_streams") == 0 and s.count("inflate_bytes") == 0
