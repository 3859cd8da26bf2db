"""limits.max_connections_per_ip: per source address, answered with a 503, freed on close."""

from __future__ import annotations

import socket

from .conftest import StartServer
from .helpers import (
    HOST,
    TIMEOUT,
    RawWebSocket,
    metrics,
    parse_http_response,
    recv_until_eof,
    run,
    upgrade_request,
    wait_until,
)

LIMIT = 3
SCRAPER = "127.0.0.3"   # /metrics counts toward its own address's limit too


def _connect_from(source: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.bind((source, 0))
    sock.connect((HOST, port))
    sock.sendall(upgrade_request("/news"))
    return sock


def _open_from(source: str, port: int) -> RawWebSocket:
    ws = RawWebSocket(_connect_from(source, port))
    head = ws._read_until(b"\r\n\r\n", TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return ws


def _refused_from(source: str, port: int) -> None:
    with _connect_from(source, port) as sock:
        resp = parse_http_response(recv_until_eof(sock, TIMEOUT), closed=True)
    assert resp.status == 503, resp
    assert b"too many connections from your address" in resp.body, resp.body


def test_connections_past_the_per_ip_limit_get_503_and_others_are_unaffected(
        start_server: StartServer) -> None:
    srv = start_server(LIMITS_MAX_CONNECTIONS_PER_IP=LIMIT)
    port = srv.port
    first: list[RawWebSocket] = []
    other: list[RawWebSocket] = []
    try:
        first += [_open_from("127.0.0.1", port) for _ in range(LIMIT)]
        _refused_from("127.0.0.1", port)
        # Another source address has its own count.
        other += [_open_from("127.0.0.2", port) for _ in range(LIMIT)]
        _refused_from("127.0.0.2", port)

        m = metrics(port, SCRAPER)
        assert m.value("ringcast_refusals_total", reason="too_many_connections_per_ip") == 2
        assert m.value("ringcast_connections") == 2 * LIMIT + 1  # + this /metrics request

        # A connection that leaves frees its address's place.
        first.pop().close()

        def freed() -> bool:
            return metrics(port, SCRAPER).value("ringcast_connections") == 2 * LIMIT

        run(wait_until(freed, TIMEOUT, "the closed connection to be counted out"))
        first.append(_open_from("127.0.0.1", port))
        _refused_from("127.0.0.1", port)
    finally:
        for ws in first + other:
            ws.close()
