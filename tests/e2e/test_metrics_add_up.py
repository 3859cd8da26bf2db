"""Connection metrics that add up: every accepted connection is counted once when it ends,
by why (``reason``) and by who ended it (``side``), so that at every scrape

    ringcast_connections_accepted_total - ringcast_connections_closed_total
        = ringcast_connections

— through a churn of WebSocket clients that close, reset or just hang up, HTTP requests
served and closed, and requests refused."""

from __future__ import annotations

import socket
import struct

from tests.support.metrics import Metrics
from tests.support.rawws import OP_CLOSE, RawWebSocket, close_payload

from .conftest import StartServer
from .helpers import http, metrics, raw_http

EACH = 5       # clients of each kind
STAYING = 3    # subscribers still open at the end


def closed(m: Metrics, reason: str, side: str) -> float:
    return m.value("ringcast_connections_closed_total", reason=reason, side=side) \
        if m.has("ringcast_connections_closed_total", reason=reason, side=side) else 0.0


def add_up(m: Metrics) -> None:
    accepted = m["ringcast_connections_accepted_total"]
    ended = m["ringcast_connections_closed_total"] if m.has(
        "ringcast_connections_closed_total") else 0.0
    assert accepted - ended == m["ringcast_connections"], m.text


def churn(port: int) -> list[RawWebSocket]:
    """Every kind of connection life once ``EACH`` times; the subscribers left open."""
    staying = [RawWebSocket.connect(port, "/churn") for _ in range(STAYING)]
    for _ in range(EACH):                  # a close handshake the client starts
        with RawWebSocket.connect(port, "/churn") as ws:
            ws.send_frame(OP_CLOSE, close_payload(1000))
            frame = ws.recv_frame()
            assert frame is not None and frame.close_code == 1000
            ws.wait_eof()
    for _ in range(EACH):                  # a reset (SO_LINGER 0)
        ws = RawWebSocket.connect(port, "/churn")
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        ws.close()
    for _ in range(EACH):                  # TCP closed, no close frame (1006)
        RawWebSocket.connect(port, "/churn").close()
    for _ in range(EACH):                  # served, then closed by the server as asked
        answer = raw_http(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.status == 200
    for _ in range(EACH):                  # refused: 404, and 426 for a channel's path
        assert raw_http(port, b"GET /no/such/path HTTP/1.1\r\nHost: x\r\n\r\n").status == 404
        assert raw_http(port, b"GET /churn HTTP/1.1\r\nHost: x\r\n\r\n").status == 426
    for _ in range(EACH):                  # keep-alive, left by the client
        assert http(port, "GET", "/healthz").status == 200
    return staying


def test_accepted_minus_closed_is_open_through_churn(start_server: StartServer) -> None:
    server = start_server()
    add_up(metrics(server.port))
    staying = churn(server.port)
    # The server may see the last hang-ups after our last request: scrape until the
    # STAYING subscribers (and the scrape itself) are all that is open; it adds up at
    # every scrape on the way.
    for _ in range(200):
        m = metrics(server.port)
        add_up(m)
        if m["ringcast_connections"] == STAYING + 1:
            break
    else:
        raise AssertionError(f"connections never settled at {STAYING + 1}:\n{m.text}")
    assert closed(m, "client_close", "client") == EACH
    assert closed(m, "peer_reset", "client") == EACH
    # 1006 hang-ups, keep-alive clients that left, and the scrapes before this one
    assert closed(m, "peer_closed", "client") >= 2 * EACH
    assert closed(m, "http_done", "server") == EACH
    assert closed(m, "refused", "server") == 2 * EACH
    for ws in staying:
        ws.close()


def test_server_side_closes_say_why(start_server: StartServer) -> None:
    # A subscriber that never answers a ping: the server closes it (1011), and counts it
    # as ended by the server once the closing handshake is over.
    server = start_server(LIMITS_PING_INTERVAL=0.2, LIMITS_PING_TIMEOUT=0.3)
    with RawWebSocket.connect(server.port, "/quiet") as ws:   # never answers pings
        frame = ws.recv_frame()
        while frame is not None and frame.opcode != OP_CLOSE:
            frame = ws.recv_frame()
        assert frame is not None and frame.close_code == 1011
        ws.send_frame(OP_CLOSE, close_payload(1011))
        ws.wait_eof()
    for _ in range(200):
        m = metrics(server.port)
        add_up(m)
        if closed(m, "ping_timeout", "server") == 1:
            break
    else:
        raise AssertionError(f"the ping timeout was never counted:\n{m.text}")
