"""The C scanner through Python: framing edge cases and delivery accounting."""

from __future__ import annotations

import struct

import pytest

from ringcast.loadtest import scanner as sc
from ringcast.loadtest.scanner import Scanner

SIZE = 64


def hdr(op: int, length: int, fin: bool = True) -> bytes:
    b0 = (0x80 if fin else 0) | op
    if length < 126:
        return bytes([b0, length])
    if length < 65536:
        return bytes([b0, 126]) + struct.pack("!H", length)
    return bytes([b0, 127]) + struct.pack("!Q", length)


def new(size: int = SIZE, conns: int = 4, pubs: int = 1, subs: int = 1) -> Scanner:
    s = Scanner(conns, pubs, size)
    for c in range(subs):
        s.set_role(c, sc.ROLE_SUB)
    return s


def publish(s: Scanner, n: int, pub: int = 0, expected: int = 1, ts: int = 1000) -> list[bytes]:
    out = []
    for _ in range(n):
        seq = s.published(pub)
        s.publish(pub, seq, ts, expected)
        out.append(sc.frame(pub, seq, ts, s.size))
    return out


def test_payload_roundtrip_and_check() -> None:
    p = sc.payload(3, 7, 123456789, 100)
    assert len(p) == 100
    assert struct.unpack_from("<QQI", p) == (7, 123456789, 3)
    assert sc.check(p, 100)
    for i in range(100):
        bad = bytearray(p)
        bad[i] ^= 0x40
        assert not sc.check(bytes(bad), 100), i
    assert not sc.check(p[:-1], 100)


def test_masked_frame_unmasks_to_payload() -> None:
    f = sc.frame(0, 5, 99, 300, mask_key=0x11223344)
    assert f[0] == 0x82 and f[1] == 0x80 | 126
    assert struct.unpack("!H", f[2:4])[0] == 300
    key = f[4:8]
    body = bytes(b ^ key[i % 4] for i, b in enumerate(f[8:]))
    assert body == sc.payload(0, 5, 99, 300)


def test_whole_frames_are_delivered_with_latency() -> None:
    s = new()
    frames = publish(s, 3, ts=1_000)
    s.feed(0, b"".join(frames), now_ns=1_000 + 5_000)
    c = s.counts()
    assert c["delivered"] == 3 and c["completed"] == 3 and c["completed_all"] == 3
    assert sum(c[k] for k in ("lost", "duplicated", "out_of_order", "corrupted")) == 0
    h = s.histogram(sc.HIST_DELIVERY)
    assert h.get_total_count() == 3
    assert abs(h.get_value_at_percentile(50) - 5_000) < 5_000 * 0.01


@pytest.mark.parametrize("size", [24, 64, 125, 126, 1000, 65535, 65536, 70000])
def test_lengths_7_16_and_64_bit(size: int) -> None:
    s = new(size)
    frames = publish(s, 2)
    data = b"".join(frames)
    if size > 65535:
        assert data[1] == 127
    elif size > 125:
        assert data[1] == 126
    s.feed(0, data)
    assert s.counts()["delivered"] == 2
    assert s.counts()["corrupted"] == 0


@pytest.mark.parametrize("size", [24, 200, 70000])
def test_every_split_point(size: int) -> None:
    """Header split across reads, payload split across reads: one byte at a time too."""
    s = new(size, conns=2)
    data = b"".join(publish(s, 2))
    cuts = range(1, len(data)) if size < 1000 else [1, 2, 3, 5, 9, 10, 11, 100, len(data) - 1]
    delivered = 0
    for cut in cuts:
        s2 = new(size, conns=2)
        data2 = b"".join(publish(s2, 2))
        s2.feed(0, data2[:cut])
        s2.feed(0, data2[cut:])
        assert s2.counts()["delivered"] == 2, cut
        delivered += 1
    assert delivered
    s3 = new(size)
    data3 = b"".join(publish(s3, 2))
    if size < 1000:
        for i in range(len(data3)):
            s3.feed(0, data3[i:i + 1])
        assert s3.counts()["delivered"] == 2
    assert s3.counts()["corrupted"] == 0


def test_batch_feed_over_connections() -> None:
    s = new(conns=8, subs=8)
    frames = publish(s, 4, expected=8)
    data = b"".join(frames)
    conns, spans = [], []
    for c in range(8):  # each connection's bytes in two pieces, interleaved
        conns.append(c)
        spans.append((0, c + 1))
    for c in range(8):
        conns.append(c)
        spans.append((c + 1, len(data) - c - 1))
    received = bytearray(b"x" * 5 + data)   # where the bytes lie: not at offset 0
    s.feed_spans(conns, [5 + off for off, _ in spans], [n for _, n in spans], received)
    c = s.counts()
    assert c["delivered"] == 32 and c["completed_all"] == 4
    assert s.histogram(sc.HIST_LAST).get_total_count() == 4


def test_fragmented_message_with_ping_inside_is_valid() -> None:
    s = new()
    publish(s, 1)
    p = sc.payload(0, 0, 1000, SIZE)
    data = (hdr(2, 10, fin=False) + p[:10] + hdr(9, 3) + b"abc"
            + hdr(0, 30, fin=False) + p[10:40] + hdr(0, SIZE - 40) + p[40:])
    s.feed(0, data)
    c = s.counts()
    assert c["delivered"] == 1 and c["fragmented"] == 1 and c["corrupted"] == 0
    notes = s.notes()
    assert notes == [sc.Note(0, sc.NOTE_PING, 0, b"abc")]
    assert s.notes() == []


def test_close_frame_is_reported_with_code() -> None:
    s = new()
    s.feed(0, hdr(8, 6) + struct.pack("!H", 1001) + b"bye!")
    assert s.notes() == [sc.Note(0, sc.NOTE_CLOSE, 1001, b"bye!")]
    s.feed(0, hdr(8, 0))  # after close: nothing parsed, reported once
    notes = s.notes()
    assert [n.kind for n in notes] == [sc.NOTE_PROTOCOL]
    s2 = new()
    s2.feed(0, hdr(8, 0))
    assert s2.notes() == [sc.Note(0, sc.NOTE_CLOSE, 1005, b"")]


@pytest.mark.parametrize(("data", "why"), [
    (bytes([0xC2, 0]), "reserved bits set"),
    (bytes([0x82, 0x80, 0, 0, 0, 0]), "masked server frame"),
    (bytes([0x83, 0]), "reserved opcode"),
    (bytes([0x09, 0]), "fragmented or oversized control frame"),
    (bytes([0x89, 126, 0, 200]), "fragmented or oversized control frame"),
    (bytes([0x80, 0]), "continuation frame without a message"),
    (bytes([0x02, 1, 0, 0x82, 0]), "data frame inside a fragmented message"),
    (bytes([0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]), "64-bit length with its top bit set"),
])
def test_protocol_errors(data: bytes, why: str) -> None:
    s = new()
    s.feed(0, data)
    notes = s.notes()
    assert len(notes) == 1 and notes[0].kind == sc.NOTE_PROTOCOL
    assert sc.PROTOCOL_ERRORS[notes[0].aux] == why
    assert s.counts()["protocol_errors"] == 1


def test_loss_duplicate_reorder_corruption_counts() -> None:
    s = new()
    f = publish(s, 10)
    bad = bytearray(f[6])
    bad[-1] ^= 1
    # 0 1 3 2 4 4 6' 7 9   (5 and 8 lost, 2/3 swapped, 4 twice, 6 corrupted)
    order = [f[0], f[1], f[3], f[2], f[4], f[4], bytes(bad), f[7], f[9]]
    s.feed(0, b"".join(order))
    c = s.counts()
    assert c["lost"] == 2 and c["out_of_order"] == 1 and c["duplicated"] == 1
    assert c["corrupted"] == 1 and c["delivered"] == 7
    s.finish()
    assert s.counts()["lost"] == 2 and s.counts()["undelivered"] == 0


def test_tail_loss_counted_at_finish_and_expiry() -> None:
    s = new()
    f = publish(s, 5, ts=10)
    s.feed(0, b"".join(f[:3]))
    assert s.resolved == 3
    assert s.expire(11) == 2  # the two still in flight, sent before the cutoff
    assert s.resolved == 5
    s.finish()
    assert s.counts()["lost"] == 0 and s.counts()["undelivered"] == 2


def test_wrong_opcode_and_wrong_length() -> None:
    s = new()
    publish(s, 2)
    p0 = sc.payload(0, 0, 1000, SIZE)
    p1 = sc.payload(0, 1, 1000, SIZE)
    s.feed(0, hdr(1, SIZE) + p0 + hdr(2, SIZE + 1) + p1 + b"x")
    c = s.counts()
    assert c["bad_opcode"] == 1 and c["corrupted"] == 1 and c["delivered"] == 0


def test_publisher_connection_ignores_its_echoes() -> None:
    s = new(conns=2, subs=1)
    s.set_role(1, sc.ROLE_PUB)
    f = publish(s, 3)
    s.feed(1, b"".join(f))
    assert s.counts()["ignored"] == 3 and s.counts()["delivered"] == 0
    s.feed(0, b"".join(f))
    assert s.counts()["delivered"] == 3


def test_subscriber_gone_completes_messages() -> None:
    s = new(conns=2, subs=2)
    f = publish(s, 2, expected=2)
    s.feed(0, b"".join(f))
    assert s.count("completed") == 0
    s.gone(1)
    assert s.count("completed") == 2 and s.count("completed_all") == 2


def test_header_of_unknown_message_is_corrupt() -> None:
    s = new()
    publish(s, 1)
    s.feed(0, sc.frame(0, 5, 1000, SIZE) + sc.frame(7, 0, 1000, SIZE))
    assert s.counts()["corrupted"] == 2


def test_bucket_scheme() -> None:
    for v in (0, 1, 255, 256, 1000, 123_456, 10**9, 2**42):
        b = sc.lib.ws_bucket_of(v)
        assert sc.lib.ws_bucket_low(b) <= v <= sc.lib.ws_bucket_high(b)
        assert sc.lib.ws_bucket_high(b) - sc.lib.ws_bucket_low(b) <= max(1, v // 100)
    assert sc.bucket_percentile([0] * sc.N_BUCKETS, 99) is None


# -- joining mid-run: what came before the join, and the first message after --------


def test_a_subscriber_joining_mid_run_is_not_faulted_for_messages_before_it() -> None:
    """A subscriber that connects while messages are on their way may get some that were
    published before the scanner saw it join: counted as before_join, not as duplicates."""
    s = new(subs=1)
    early = publish(s, 3, expected=1)
    s.set_role(1, sc.ROLE_SUB)          # joins now: expects from seq 3 on
    late = publish(s, 2, expected=2)
    s.feed(0, b"".join(early + late))
    s.feed(1, b"".join(early[1:] + late))
    c = s.counts()
    assert c["before_join"] == 2
    assert c["delivered"] == 5 + 2
    assert sum(c[k] for k in ("lost", "duplicated", "out_of_order", "corrupted")) == 0
    assert c["completed_all"] == 5


def test_a_damaged_message_from_before_the_join_is_still_corrupted() -> None:
    s = new(subs=1)
    (f,) = publish(s, 1)
    s.set_role(1, sc.ROLE_SUB)
    s.feed(1, f[:-1] + bytes([f[-1] ^ 1]))
    assert s.counts()["corrupted"] == 1 and s.counts()["before_join"] == 0


def test_receiving_counts_each_join_once_at_its_first_intact_message() -> None:
    s = new(subs=2)
    frames = publish(s, 3, expected=2)
    s.feed(0, b"".join(frames))
    assert s.counts()["receiving"] == 1
    s.feed(1, frames[0])
    assert s.counts()["receiving"] == 2
    s.gone(1)
    s.set_role(1, sc.ROLE_SUB)          # the same id joins again
    (f,) = publish(s, 1, expected=2)
    s.feed(1, f)
    assert s.counts()["receiving"] == 3


# -- a run over several processes: followers' records merged by the lead -------------


def test_the_lead_completes_a_message_only_with_every_followers_record() -> None:
    lead, follower = new(subs=1), new(subs=2)
    lead.join_team(follower=False, peers=1)
    follower.join_team(follower=True)
    frames = publish(lead, 2, expected=1, ts=1_000)
    publish(follower, 2, expected=2, ts=1_000)
    lead.feed(0, b"".join(frames), now_ns=2_000)
    assert lead.counts()["completed"] == 0          # the follower has not reported
    assert follower.take_done() == b""
    follower.feed(0, b"".join(frames), now_ns=3_000)
    follower.feed(1, frames[0], now_ns=9_000)
    records = follower.take_done()
    assert len(records) == sc.DONE_SIZE             # message 0 only
    lead.merge(records)
    c = lead.counts()
    assert c["completed"] == 1 and c["completed_all"] == 1
    h = lead.histogram(sc.HIST_LAST)                # the slowest of all three
    assert abs(h.get_value_at_percentile(100) - 8_000) < 8_000 * 0.01
    follower.gone(1)                                # message 1 never reaches it
    lead.merge(follower.take_done())
    c = lead.counts()
    assert c["completed"] == 2 and c["completed_all"] == 2


def test_a_message_a_follower_gave_up_on_is_not_fully_delivered() -> None:
    lead, follower = new(subs=1), new(subs=1)
    lead.join_team(follower=False, peers=1)
    follower.join_team(follower=True)
    frames = publish(lead, 1, ts=1_000)
    publish(follower, 1, ts=1_000)
    lead.feed(0, frames[0])
    follower.expire(2_000)
    lead.merge(follower.take_done())
    assert lead.counts()["completed"] == 0           # the lead gives up by its own timeout
    assert lead.expire(2_000) == 1


def test_done_records_must_be_whole_and_name_a_known_publisher() -> None:
    lead = new()
    lead.join_team(follower=False, peers=1)
    with pytest.raises(ValueError):
        lead.merge(b"x" * (sc.DONE_SIZE - 1))
    other = new(pubs=2)
    other.join_team(follower=True)
    publish(other, 1, pub=1, expected=0)
    with pytest.raises(ValueError):
        lead.merge(other.take_done())
    with pytest.raises(ValueError):
        new().join_team(follower=True, peers=2)


def test_a_deaf_publisher_is_expected_by_nobody() -> None:
    # --channel-per-process: publisher 1 sends on another channel than this process's
    # subscribers; its messages are published here with 0 expected.
    s = new(pubs=2, subs=2)
    s.set_deaf(1)
    mine = publish(s, 3, pub=0, expected=2)
    publish(s, 3, pub=1, expected=0)
    assert s.resolved == 3                       # the deaf ones are done at once
    s.feed(0, b"".join(mine))
    s.feed(1, b"".join(mine))
    assert s.resolved == 6 and s.counts()["completed_all"] == 3
    s.gone(1)                                    # leaving owes nothing of publisher 1
    s.finish()
    c = s.counts()
    assert c["undelivered"] == 0 and c["lost"] == 0 and c["delivered"] == 6
    # One of its messages reaching a subscriber here is on the wrong channel.
    stray = publish(s, 1, pub=1, expected=0)
    s.feed(0, stray[0])
    assert s.counts()["corrupted"] == 1
    with pytest.raises(ValueError, match="no publisher 2"):
        s.set_deaf(2)
