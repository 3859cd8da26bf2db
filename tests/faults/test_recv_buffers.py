"""Provided receive buffers exhausted: a tiny buffer ring under many concurrent senders.

The server runs with ``ring.buffer_count`` 8 and ``ring.buffer_size`` 256: 2 KiB of
receive buffers shared by every connection. 200 WebSocket publishers each send 3 messages
of 64 KiB at once (38 MiB in all), each on its own channel with one subscriber. A third
of the publishers fragment every message into 3 frames; half send text whose multi-byte
UTF-8 characters straddle every 256-byte buffer boundary, half binary.

What must hold: no inbound byte is lost or reordered — every subscriber receives exactly
its publisher's messages, in order, byte for byte; no publisher is closed; and on io_uring
``ringcast_recv_buffer_exhausted_total`` > 0 shows the multishot receives really ran dry
(on epoll the buffer ring does not exist: the same load runs through 256-byte reads).
"""

from __future__ import annotations

import hashlib
import random
import time

import pytest

from tests.support.rawws import OP_BINARY, OP_CONT, OP_TEXT, frame, handshake_request

from . import wsload as W
from .conftest import MakeSwarm, StartServer
from .report import record

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PUBLISHERS = 200
MESSAGES = 3
SIZE = 64 << 10
TEXT = "héllo wörld € 😀 ½ ŵ "


def message(pub: int, seq: int) -> tuple[int, bytes]:
    """Publisher ``pub``'s message ``seq``: (opcode, payload of exactly SIZE bytes)."""
    head = b"%03d %d " % (pub, seq)
    rng = random.Random(pub * 1000 + seq)
    if pub % 2:
        return OP_BINARY, head + rng.randbytes(SIZE - len(head))
    text = TEXT[rng.randrange(len(TEXT)):] + TEXT * (SIZE // len(TEXT.encode()) + 2)
    body = text.encode()[: SIZE - len(head)]
    while True:     # cut at a character boundary, pad with ASCII to the exact size
        try:
            body.decode()
            break
        except UnicodeDecodeError:
            body = body[:-1]
    payload = head + body
    return OP_TEXT, payload + b"." * (SIZE - len(payload))


def frames(pub: int) -> bytes:
    out = []
    for seq in range(MESSAGES):
        opcode, payload = message(pub, seq)
        if pub % 3 == 0:
            third = len(payload) // 3
            parts = [payload[:third], payload[third:2 * third], payload[2 * third:]]
            out += [frame(opcode, parts[0], fin=False), frame(OP_CONT, parts[1], fin=False),
                    frame(OP_CONT, parts[2])]
        else:
            out.append(frame(opcode, payload))
    return b"".join(out)


def test_tiny_buffer_ring_under_200_publishers_loses_no_byte(
        start_server: StartServer, swarm: MakeSwarm, backend: str) -> None:
    srv = start_server(RING_BUFFER_COUNT=8, RING_BUFFER_SIZE=256)
    sw = swarm(srv.port, window=400)
    expected = {(p, s): hashlib.sha256(message(p, s)[1]).digest()
                for p in range(PUBLISHERS) for s in range(MESSAGES)}
    opcodes = {p: message(p, 0)[0] for p in range(PUBLISHERS)}
    bad: list[str] = []

    def check(conn: W.Conn, opcode: int, payload: bytes) -> None:
        pub, seq = conn.tag, conn.next_seq
        if opcode != opcodes[pub] or hashlib.sha256(payload).digest() != expected.get((pub, seq)):
            bad.append(f"subscriber of p{pub}: message {seq} differs "
                       f"({len(payload)} bytes, starts {payload[:12]!r})")
        conn.next_seq += 1

    subs = [sw.connect(1, W.SUB, f"p{p}", check=check, tag=p)[0] for p in range(PUBLISHERS)]
    sw.run_until(W.all_open(subs), 30, "the subscribers to open")
    W.assert_opened(subs, "subscribers")
    before = W.metrics(srv.port)
    data = {p: frames(p) for p in range(PUBLISHERS)}
    total = sum(len(d) for d in data.values())
    started = time.monotonic()
    pubs = [sw.connect(1, W.RAW, f"p{p}", send=handshake_request(f"/p{p}"), after=data[p])[0]
            for p in range(PUBLISHERS)]
    sw.run_until(lambda: all(c.received == MESSAGES for c in subs) or bool(bad), 120,
                 lambda: f"{MESSAGES} messages at every subscriber: received "
                 f"{sum(c.received for c in subs)} of {PUBLISHERS * MESSAGES}, "
                 f"publishers {W.states(pubs)}")
    took = time.monotonic() - started
    assert not bad, bad[:10]
    assert not sw.errors, sw.errors
    assert all(c.http_status == 101 and c.state == W.OPEN and not c.frames for c in pubs), \
        [(c.http_status, c.state, c.frames[:1]) for c in pubs if c.state != W.OPEN][:5]
    assert all(c.state == W.OPEN for c in subs)
    m = W.metrics(srv.port)
    bytes_in = m["ringcast_bytes_in_total"] - before["ringcast_bytes_in_total"]
    assert bytes_in >= total
    exhausted = m["ringcast_recv_buffer_exhausted_total"]
    if backend == "io_uring":
        assert exhausted > 0, "the buffer ring never ran dry: the test proved nothing"
    for c in pubs:
        c.ws_close(1000)
    sw.run_until(lambda: all(c.state == W.CLOSED for c in pubs), 20, "the publishers to leave")
    assert [c.close_code for c in pubs] == [1000] * PUBLISHERS
    record("recv_buffers", backend, publishers=PUBLISHERS, messages=PUBLISHERS * MESSAGES,
           message_bytes=SIZE, bytes_sent=total, bytes_in_metric=bytes_in, seconds=round(took, 1),
           recv_buffer_exhausted=exhausted,
           rearm_ratio=round(exhausted / max(1, bytes_in / 256), 3))
