"""The Python face of the C frame scanner (``csrc/wsscan.c``).

Python crosses into C once per reap: `Scanner.feed_spans` takes where every chunk of
bytes one ``Loop.reap_raw`` received lies, for every connection, and C parses the
frames where they are (no copy), checks each message and counts it. What Python must act on (a ping
owed a pong, a close, a protocol error) comes back as `Note`s.

Messages come in two formats (``PAYLOADS``; layouts in ``csrc/wsscan_api.h``): ``binary``, a
header and a pseudo-random pattern, and ``json``, a ticker-like JSON object that compresses
as a real feed does. A connection that negotiated permessage-deflate (`Scanner.set_deflate`)
may get compressed messages, which C inflates with zlib and checks like any other. Memory:
with ``server_no_context_takeover`` a connection holds an inflate stream only while a
compressed message is arriving; without it, from its first compressed message to its end,
about 7 KiB plus the server's window (32 KiB at the default 15 bits: 39 KiB in all);
`Scanner.count` ``inflate_bytes`` says what zlib holds.
"""

from __future__ import annotations

import array
from collections.abc import Sequence
from typing import Any, NamedTuple

from hdrh.histogram import HdrHistogram
from typing_extensions import Buffer

try:
    from ringcast.loadtest._wsscan import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "ringcast.loadtest._wsscan is not built: reinstall ringcast (pip install -e .) "
        "or run `python -m ringcast.loadtest._build` (needs a C compiler)"
    ) from exc

HEADER_SIZE = 20
"""Bytes of a message before its pattern: sequence, timestamp, publisher id."""
MIN_SIZE = 24
"""Smallest binary message the loadtest sends: the header and 4 bytes of pattern."""
JSON_MIN_SIZE: int = lib.WS_JSON_MIN
"""Smallest json message: its header (sequence, timestamp, publisher id), one tick and
the padding object."""

OP_TEXT, OP_BINARY = 1, 2
FMT_BINARY, FMT_JSON = lib.WS_FMT_BINARY, lib.WS_FMT_JSON
PAYLOADS = {"binary": FMT_BINARY, "json": FMT_JSON}
"""``--payload`` names and their formats."""
OPCODES = {FMT_BINARY: OP_BINARY, FMT_JSON: OP_TEXT}
"""The frame opcode each format travels in."""
ROLE_NONE, ROLE_SUB, ROLE_PUB = lib.WS_ROLE_NONE, lib.WS_ROLE_SUB, lib.WS_ROLE_PUB
NOTE_PING, NOTE_CLOSE, NOTE_PROTOCOL = lib.WS_NOTE_PING, lib.WS_NOTE_CLOSE, lib.WS_NOTE_PROTOCOL

PROTOCOL_ERRORS = {
    lib.WS_ERR_RSV: "reserved bits set",
    lib.WS_ERR_MASKED: "masked server frame",
    lib.WS_ERR_OPCODE: "reserved opcode",
    lib.WS_ERR_CONTROL: "fragmented or oversized control frame",
    lib.WS_ERR_CONTINUATION: "continuation frame without a message",
    lib.WS_ERR_INTERLEAVED: "data frame inside a fragmented message",
    lib.WS_ERR_LENGTH: "64-bit length with its top bit set",
    lib.WS_ERR_AFTER_CLOSE: "bytes after a close frame",
}

DONE_SIZE = ffi.sizeof("ws_done")

HIST_DELIVERY, HIST_LAST, HIST_DELIVERY_INTERVAL, HIST_LAST_INTERVAL = range(4)
COUNT_NAMES: tuple[str, ...] = tuple(f[0] for f in ffi.typeof("ws_counts").fields)

N_BUCKETS = lib.ws_hist_buckets()
# A bucket stands for the middle of its range when it is turned into an HDR histogram.
BUCKET_VALUE: tuple[int, ...] = tuple(
    (lib.ws_bucket_low(i) + lib.ws_bucket_high(i)) // 2 for i in range(N_BUCKETS)
)
HDR_HIGHEST = 1 << 43
"""Largest latency the histograms hold, ns (about 2.4 hours)."""


class Note(NamedTuple):
    conn: int
    kind: int
    aux: int
    payload: bytes


class Scanner:
    """Frame parsing and delivery accounting for up to ``max_conns`` connection ids."""

    def __init__(self, max_conns: int, publishers: int, size: int, *,
                 opcode: int = OP_BINARY, ring_bits: int = 16, fmt: int = FMT_BINARY) -> None:
        smallest = JSON_MIN_SIZE if fmt == FMT_JSON else HEADER_SIZE
        if size < smallest:
            raise ValueError(f"message size must be at least {smallest} bytes")
        s = lib.ws_new(max_conns, publishers, size, opcode, ring_bits, fmt)
        if s == ffi.NULL:
            raise MemoryError("cannot allocate the frame scanner")
        self._s = ffi.gc(s, lib.ws_free)
        self._counts = lib.ws_get_counts(self._s)
        self._nnotes = ffi.new("uint32_t *")
        self.max_conns = max_conns
        self.publishers = publishers
        self.size = size
        self.fmt = fmt

    # -- connections ------------------------------------------------------

    def set_role(self, conn: int, role: int) -> None:
        if lib.ws_conn_set(self._s, conn, role) < 0:
            raise ValueError(f"connection id {conn} out of range")

    def set_deflate(self, conn: int, *, no_takeover: bool, window_bits: int = 15) -> None:
        """``conn`` negotiated permessage-deflate (after `set_role`, which clears it).
        ``no_takeover``: the server answered ``server_no_context_takeover``; else
        ``window_bits`` is its ``server_max_window_bits`` (15 when not given)."""
        if lib.ws_conn_deflate(self._s, conn, int(no_takeover), window_bits) < 0:
            raise ValueError(f"connection id {conn} or window bits {window_bits} out of range")

    def gone(self, conn: int) -> None:
        lib.ws_conn_gone(self._s, conn)

    # -- bytes in ---------------------------------------------------------

    def feed(self, conn: int, data: bytes, now_ns: int = 0) -> int:
        """Parse bytes received on one connection; returns the notes waiting."""
        rc = lib.ws_feed(self._s, conn, data, len(data), now_ns)
        if rc < 0:
            raise ValueError(f"connection id {conn} out of range")
        return int(rc)

    def feed_spans(self, conns: Sequence[int], offs: Sequence[int], lens: Sequence[int],
                   received: Buffer, now_ns: int = 0) -> int:
        """Parse ``received[offs[i]:offs[i] + lens[i]]``, received on ``conns[i]``, all in
        one call into C and where the bytes lie (`Loop.reap_raw`'s buffer: no copy)."""
        n = len(conns)
        if n == 0:
            return 0
        rc = lib.ws_feed_batch(self._s, ffi.from_buffer("uint32_t[]", array.array("I", conns)),
                               ffi.from_buffer("uint64_t[]", array.array("Q", offs)),
                               ffi.from_buffer("uint32_t[]", array.array("I", lens)), n,
                               ffi.from_buffer("uint8_t[]", received), now_ns)
        if rc < 0:
            raise ValueError("connection id out of range")
        return int(rc)

    def answer_pings(self, send_hook: tuple[int, int] | None) -> None:
        """Answer pings in C from now on, with the pong queued through ``send_hook``
        (`Loop.send_hook` of the loop the connections are on): no `NOTE_PING` but for a
        pong the loop failed to queue (no memory). None: pings come back as notes."""
        send, loop = send_hook or (0, 0)
        if lib.ws_answer_pings(self._s, send, loop) < 0:
            raise ValueError("a send hook needs both addresses")

    def notes(self) -> list[Note]:
        raw = lib.ws_take_notes(self._s, self._nnotes)
        out = []
        for i in range(self._nnotes[0]):
            n = raw[i]
            out.append(Note(int(n.conn), int(n.kind), int(n.aux),
                            bytes(ffi.buffer(n.payload, n.len))))
        return out

    # -- messages ---------------------------------------------------------

    def publish(self, pub: int, seq: int, ts_ns: int, expected: int) -> None:
        if lib.ws_publish(self._s, pub, seq, ts_ns, expected) < 0:
            raise ValueError(f"publisher {pub}: {seq} is not its next sequence number")

    def published(self, pub: int) -> int:
        return int(lib.ws_published(self._s, pub))

    def expire(self, cutoff_ns: int) -> int:
        return int(lib.ws_expire(self._s, cutoff_ns))

    def finish(self) -> None:
        """Count as undelivered what each live subscriber has not received by now."""
        lib.ws_finish(self._s)

    # -- a run over several processes (see `team`) -------------------------

    def join_team(self, *, follower: bool, peers: int = 0) -> None:
        """A follower logs each message it is done with for `take_done`; the lead
        holds each message until ``peers`` followers' records are `merge`-d."""
        if lib.ws_set_team(self._s, int(follower), peers) < 0:
            raise ValueError("a follower has no peers; a lead at most 4096")

    def set_deaf(self, pub: int, deaf: bool = True) -> None:
        """Publisher ``pub`` sends on another channel than this process's subscribers
        (``--channel-per-process``): nobody here expects its messages."""
        if lib.ws_set_deaf(self._s, pub, int(deaf)) < 0:
            raise ValueError(f"no publisher {pub}")

    def take_done(self) -> bytes:
        """The records logged since the last call, packed (`merge` reads them)."""
        raw = lib.ws_take_done(self._s, self._nnotes)
        return bytes(ffi.buffer(raw, self._nnotes[0] * DONE_SIZE)) if self._nnotes[0] else b""

    def merge(self, records: bytes) -> None:
        n, rest = divmod(len(records), DONE_SIZE)
        if rest or lib.ws_merge(self._s, ffi.from_buffer("ws_done[]", records), n) < 0:
            raise ValueError("not a whole number of valid done records")

    # -- results ----------------------------------------------------------

    def counts(self) -> dict[str, int]:
        c = self._counts
        return {name: int(getattr(c, name)) for name in COUNT_NAMES}

    def count(self, name: str) -> int:
        return int(getattr(self._counts, name))

    @property
    def resolved(self) -> int:
        """Messages that left flight: completed or given up on."""
        c = self._counts
        return int(c.completed + c.expired)

    @property
    def delivered(self) -> int:
        return int(self._counts.delivered)

    def buckets(self, which: int) -> array.array[int]:
        raw = lib.ws_hist(self._s, which)
        return array.array("Q", bytes(ffi.buffer(raw, N_BUCKETS * 8)))

    def reset_interval(self) -> None:
        lib.ws_hist_reset_interval(self._s)

    def histogram(self, which: int) -> HdrHistogram:
        return to_hdr(self.buckets(which))


def to_hdr(buckets: Sequence[int]) -> HdrHistogram:
    """The C buckets as an HDR histogram (ns), one ``record_value`` per non-empty bucket."""
    h = HdrHistogram(1, HDR_HIGHEST, 3)
    for i, count in enumerate(buckets):
        if count:
            h.record_value(max(1, min(BUCKET_VALUE[i], HDR_HIGHEST)), count)
    return h


def bucket_percentile(buckets: Sequence[int], pct: float) -> int | None:
    """A percentile straight from the C buckets (ns), for the live progress line."""
    total = sum(buckets)
    if not total:
        return None
    rank = max(1, int(total * pct / 100.0 + 0.5))
    seen = 0
    for i, count in enumerate(buckets):
        seen += count
        if seen >= rank:
            return BUCKET_VALUE[i]
    return BUCKET_VALUE[-1]


def build_frames(buf: bytearray, offset: int, *, pub: int, seq: int, ts_ns: int, size: int,
                 opcode: int = OP_BINARY, mask_key: int | None = None,
                 fmt: int = FMT_BINARY) -> int:
    """Write one message of format ``fmt`` as a frame into ``buf`` at ``offset``; returns
    its length.

    ``mask_key`` given: a masked client frame with that key.
    """
    view: Any = ffi.from_buffer(buf)
    n = lib.ws_frame(view + offset, len(buf) - offset, pub, seq, ts_ns, size, opcode,
                     int(mask_key is not None), mask_key or 0, fmt)
    if n == 0:
        raise ValueError("buffer too small for the frame, or size too small for the format")
    return int(n)


def frame(pub: int, seq: int, ts_ns: int, size: int, *, opcode: int = OP_BINARY,
          mask_key: int | None = None, fmt: int = FMT_BINARY) -> bytes:
    buf = bytearray(size + 14)
    n = build_frames(buf, 0, pub=pub, seq=seq, ts_ns=ts_ns, size=size, opcode=opcode,
                     mask_key=mask_key, fmt=fmt)
    return bytes(buf[:n])


def payload(pub: int, seq: int, ts_ns: int, size: int, fmt: int = FMT_BINARY) -> bytes:
    """The ``size`` bytes of one message of format ``fmt`` (at least its smallest size)."""
    if size < (JSON_MIN_SIZE if fmt == FMT_JSON else 0):
        raise ValueError(f"a json message is at least {JSON_MIN_SIZE} bytes")
    buf = bytearray(size)
    lib.ws_payload(ffi.from_buffer(buf), pub, seq, ts_ns, size, fmt)
    return bytes(buf)


def check(data: bytes, size: int, fmt: int = FMT_BINARY) -> bool:
    """Is ``data`` an intact message of ``size`` bytes and format ``fmt``?"""
    return bool(lib.ws_check(data, len(data), size, fmt))


def frame_size(size: int, masked: bool) -> int:
    """Bytes of a single-frame message carrying ``size`` bytes of payload."""
    head = 2 + (8 if size > 65535 else 2 if size > 125 else 0) + (4 if masked else 0)
    return head + size
