"""Hostile input over real sockets: every stream gets its HTTP error or close code, and a
healthy subscriber on the same server loses nothing meanwhile.

The cases (bad handshakes, invalid frames, oversized headers, fragment abuse, invalid
UTF-8, close codes out of range, garbage after close) are in `hostile.py`, each with the
answer the RFCs and the README's close-code table call for. They all run at once
against one server while an HTTP publisher sends a stamped message every 10 ms to a
healthy subscriber.

The tests after the first are clients that send well-formed input but never read what
the server answers: the server must not buffer more for them than
``limits.queue_max_bytes``.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.support.rawws import OP_BINARY, OP_CONT, OP_PING, OP_TEXT, frame, handshake_request

from . import wsload as W
from .conftest import MakeSwarm, StartServer
from .hostile import HTTP_CASES, MAX_MESSAGE, PIPELINED, WS_CASES, Case
from .report import record

pytestmark = pytest.mark.timeout(120)

HEALTHY = 5
PUBLISH_EVERY = 0.01
QUEUE_CAP = 65536


def test_hostile_streams_get_the_right_answer_and_spare_a_healthy_subscriber(
        start_server: StartServer, swarm: MakeSwarm, backend: str) -> None:
    srv = start_server(LIMITS_MAX_MESSAGE_SIZE=MAX_MESSAGE)
    sw = swarm(srv.port)
    healthy = sw.connect(HEALTHY, W.SUB, "live")
    pub = W.Publisher(sw, "live", 200)
    sw.run_until(W.all_open([*healthy, pub.conn]), 10, "the healthy subscribers to open")
    W.assert_opened(healthy, "healthy subscribers")
    sw.every(PUBLISH_EVERY, pub.publish)
    sw.run_until(lambda: all(c.received >= 5 for c in healthy), 10, "the first messages")

    cases: list[tuple[Case, W.Conn]] = []
    for case in [*HTTP_CASES, PIPELINED]:
        cases.append((case, sw.connect(1, W.RAW, "-", send=case.data)[0]))
    for case in WS_CASES:
        cases.append((case, sw.connect(1, W.RAW, "hostile", send=handshake_request("/hostile"),
                                       after=case.data)[0]))
    sw.run_until(lambda: all(c.state == W.CLOSED for _, c in cases), 30,
                 lambda: "the server to end every hostile connection; still open: "
                 f"{[case.name for case, c in cases if c.state != W.CLOSED]}")
    # Keep publishing a little after the last hostile stream, then let it drain.
    stop_at = pub.sent + 20
    sw.run_until(lambda: pub.sent >= stop_at, 10, "20 more publishes")
    sw.cancel_timers()
    sw.run_until(pub.done, 10, pub.describe)
    sent = pub.sent
    sw.run_until(lambda: all(c.received == sent for c in healthy), 10,
                 lambda: f"{sent} messages at every healthy subscriber: "
                 f"{[c.received for c in healthy]}")

    wrong = []
    for case, conn in cases:
        got = conn.close_code if conn.http_status == 101 else conn.http_status
        if got not in case.expect or conn.reset:
            wrong.append(f"{case.name}: expected {sorted(case.expect)}, got {got}"
                         f"{' (connection reset)' if conn.reset else ''}: "
                         f"{conn.head[:60]!r} {bytes(conn.rbuf[:80])!r} {conn.close_reason!r}")
        if conn.http_status not in (None, 101):
            assert b"connection: close" in conn.head.lower(), (case.name, conn.head)
    assert not wrong, "\n".join(wrong)

    srv.assert_alive()
    assert not sw.errors, sw.errors
    assert all(c.state == W.OPEN and c.order_errors == 0 for c in healthy)
    assert pub.answers == [200] * sent
    m = W.metrics(srv.port)
    assert m["ringcast_connections"] == HEALTHY + 2   # + the publisher + this scrape
    record("malformed", backend, cases=len(cases), healthy_messages=sent,
           p99_ms=round(W.percentile(sw.latencies_ns, 99) / 1e6, 2))
    sw.close_all()


# -- clients that never read -----------------------------------------------------------


def _flood(port: int, first: bytes, chunk: bytes, total: int) -> tuple[socket.socket, int]:
    """Connect with a tiny receive buffer, send ``first`` (read its answer if it is a
    handshake), then up to ``total`` bytes of ``chunk`` without ever reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((W.HOST, port))
    sock.settimeout(5)
    if first:
        sock.sendall(first)
        assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    sent = 0
    try:
        while sent < total:
            sock.sendall(chunk)
            sent += len(chunk)
    except (TimeoutError, ConnectionError):
        pass    # the server stopped reading, or closed: both bound what it holds
    return sock, sent


def _bounded(port: int, sent: int, what: str) -> None:
    m = W.metrics(port)
    queued = m["ringcast_queued_bytes"]
    assert queued <= 2 * QUEUE_CAP, (
        f"{what}: after {sent} bytes in, the server holds {queued:.0f} bytes for a client "
        f"that reads nothing (limits.queue_max_bytes is {QUEUE_CAP})"
    )


def test_ping_flood_without_reading_is_bounded(start_server: StartServer) -> None:
    srv = start_server(LIMITS_QUEUE_MAX_BYTES=QUEUE_CAP, LIMITS_PING_INTERVAL=0)
    ping = frame(OP_PING, b"p" * 125, key=b"abcd")
    sock, sent = _flood(srv.port, handshake_request("/flood"), ping * 1000, 8 << 20)
    try:
        srv.assert_alive()
        _bounded(srv.port, sent, "ping flood")
    finally:
        sock.close()


def test_pipelined_requests_without_reading_are_bounded(start_server: StartServer) -> None:
    srv = start_server(LIMITS_QUEUE_MAX_BYTES=QUEUE_CAP)
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    sock, sent = _flood(srv.port, b"", request * 1000, 300_000)
    try:
        srv.assert_alive()
        _bounded(srv.port, sent, "pipelined GET /metrics")
    finally:
        sock.close()


# -- pipelining --------------------------------------------------------------------------


def test_pipelined_publishes_do_not_wait_for_the_idle_timer(start_server: StartServer) -> None:
    """Regression: a pipelined POST /publish used to wait for the loop's next iteration,
    up to 1 s on epoll when nothing else woke it (fixed in runtime._flush_channels)."""
    srv = start_server()
    n = 20
    request = b"POST /publish/pipe HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
    with socket.create_connection((W.HOST, srv.port), timeout=30) as sock:
        start = time.monotonic()
        sock.sendall(request * n)
        got = b""
        while got.count(b"HTTP/1.1 200") < n:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {got.count(b'HTTP/1.1 200')} answers"
            got += chunk
        took = time.monotonic() - start
    # Unstalled this takes milliseconds; one idle-timer wait per request takes ~0.5 s each.
    assert took < 2.0, f"{n} pipelined publishes took {took:.1f}s"


def test_deep_pipelining_is_answered_in_full(start_server: StartServer) -> None:
    srv = start_server(RING_BUFFER_SIZE=131072, RING_BUFFER_COUNT=64)
    n = 4000
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection((W.HOST, srv.port), timeout=15) as sock:
        # Corked: the kernel sends full 64 KiB segments, so one receive holds ~1900 requests.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        sock.sendall(request * n)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        got = b""
        while got.count(b"HTTP/1.1 ") < n:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            got += chunk
    srv.assert_alive()
    assert got.count(b"HTTP/1.1 200") == n, (
        f"{got.count(b'HTTP/1.1 200')} of {n} pipelined requests answered 200, "
        f"{got.count(b'HTTP/1.1 500')} with 500"
    )


# -- valid frames cut at every byte ------------------------------------------------------


def test_frames_dribbled_one_byte_at_a_time_arrive_intact(
        start_server: StartServer, swarm: MakeSwarm) -> None:
    """A publisher whose handshake and frames arrive one byte per segment: every frame
    header form (7-bit, 16-bit and 64-bit lengths), a fragmented text message with a ping
    between its fragments, and multi-byte UTF-8 cut everywhere reach a subscriber intact."""
    srv = start_server()
    sw = swarm(srv.port)
    got: list[tuple[int, bytes]] = []
    sub = sw.connect(1, W.SUB, "drip", check=lambda c, op, payload: got.append((op, payload)))
    sw.run_until(W.all_open(sub), 10, "the subscriber to open")
    text = "héllo wörld 😀 ½".encode()
    binary = bytes(range(256)) + bytes(44)      # 300 bytes: 16-bit length
    big = bytes(i % 251 for i in range(70_000))  # 64-bit length
    frames = (frame(OP_TEXT, text) + frame(OP_BINARY, binary)
              + frame(OP_TEXT, b"frag-", fin=False) + frame(OP_PING, b"p")
              + frame(OP_CONT, "ment ü".encode()))
    pub = sw.connect(1, W.DRIP, "drip", send=frames, drip=1, drip_interval=0.001)[0]
    sw.run_until(lambda: len(got) == 3, 30, lambda: f"3 messages, got {len(got)}")
    # The 70 KB frame in 16 KiB pieces (a byte at a time would take minutes).
    pub.drip_more(frame(OP_BINARY, big), 16384)
    sw.run_until(lambda: len(got) == 4, 30, lambda: f"4 messages, got {len(got)}")
    assert got == [(OP_TEXT, text), (OP_BINARY, binary), (OP_TEXT, "frag-ment ü".encode()),
                   (OP_BINARY, big)]
    assert pub.state == W.OPEN and pub.http_status == 101
    assert not sw.errors, sw.errors
