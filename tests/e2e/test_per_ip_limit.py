"""limits.max_connections_per_ip: per source address, answered with a 503, freed on close."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from http.client import HTTPConnection, RemoteDisconnected

import pytest

from tests.support.metrics import Metrics
from tests.support.rawws import RawWebSocket, handshake_request

from .conftest import StartServer
from .helpers import (
    HOST,
    TIMEOUT,
    parse_http_response,
    recv_until_eof,
    run,
    wait_until,
)

LIMIT = 3
SCRAPER = "127.0.0.3"   # /metrics counts toward its own address's limit too


@pytest.fixture
def scraper() -> Iterator[Callable[[int], Scraper]]:
    """``scraper(port)``: a `Scraper`, closed at teardown."""
    made: list[Scraper] = []

    def make(port: int) -> Scraper:
        made.append(Scraper(port))
        return made[-1]

    yield make
    for s in made:
        s.conn.close()


class Scraper:
    """GET /metrics from SCRAPER on one keep-alive connection, as Prometheus does: one
    place in the address's count, however often it polls (a fresh connection per poll
    could find the address's places still held by the polls before, not yet released)."""

    def __init__(self, port: int) -> None:
        self.conn = HTTPConnection(HOST, port, timeout=TIMEOUT, source_address=(SCRAPER, 0))

    def __call__(self) -> Metrics:
        self.conn.request("GET", "/metrics")
        resp = self.conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (resp.status, body)
        return Metrics(body.decode())


def _connect_from(source: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.bind((source, 0))
    sock.connect((HOST, port))
    sock.sendall(handshake_request("/news"))
    return sock


def _open_from(source: str, port: int) -> RawWebSocket:
    return RawWebSocket.connect(port, "/news", source=source)


def _refused_from(source: str, port: int) -> None:
    with _connect_from(source, port) as sock:
        resp = parse_http_response(recv_until_eof(sock, TIMEOUT), closed=True)
    assert resp.status == 503, resp
    assert b"too many connections from your address" in resp.body, resp.body


def test_connections_past_the_per_ip_limit_get_503_and_others_are_unaffected(
        start_server: StartServer, scraper: Callable[[int], Scraper]) -> None:
    srv = start_server(LIMITS_MAX_CONNECTIONS_PER_IP=LIMIT)
    port = srv.port
    scrape = scraper(port)
    first: list[RawWebSocket] = []
    other: list[RawWebSocket] = []
    try:
        first += [_open_from("127.0.0.1", port) for _ in range(LIMIT)]
        _refused_from("127.0.0.1", port)
        # Another source address has its own count.
        other += [_open_from("127.0.0.2", port) for _ in range(LIMIT)]
        _refused_from("127.0.0.2", port)

        m = scrape()
        assert m.value("ringcast_refusals_total", reason="too_many_connections_per_ip") == 2
        assert m.value("ringcast_connections") == 2 * LIMIT + 1  # + this /metrics request

        # A connection that leaves frees its address's place.
        first.pop().close()

        def freed() -> bool:
            return scrape().value("ringcast_connections") == 2 * LIMIT

        run(wait_until(freed, TIMEOUT, "the closed connection to be counted out"))
        first.append(_open_from("127.0.0.1", port))
        _refused_from("127.0.0.1", port)
    finally:
        for ws in first + other:
            ws.close()


ATTACKER = "127.0.0.2"
VISITOR = "127.0.0.4"


def _hold_open_from(source: str, port: int) -> socket.socket:
    """A connection that sends nothing and never reads (its receive buffer stays small)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((source, 0))
    sock.connect((HOST, port))
    return sock


def test_one_address_cannot_lock_out_others(start_server: StartServer,
                                            scraper: Callable[[int], Scraper]) -> None:
    # 200 connections from one address that never read nor close, against a table of
    # 100: a refused connection holds at most a refusal's place (64 at once, then refusals
    # are resets), a closed one keeps its address's place until it is really gone, so
    # the other addresses still get in.
    srv = start_server(LIMITS_MAX_CONNECTIONS=100, LIMITS_MAX_CONNECTIONS_PER_IP=5,
                       LIMITS_HANDSHAKE_TIMEOUT=30)
    port = srv.port
    scrape = scraper(port)
    held = [_hold_open_from(ATTACKER, port) for _ in range(200)]
    visitors: list[RawWebSocket] = []
    try:
        # When the 200 land in one reap, faster than the ids of the reset refusals come
        # free, the last ones can meet the loop's id limit: refused as well, as
        # too_many_connections (the table is full for a moment), never more than that.
        def refused(m: Metrics) -> tuple[float, float]:
            return (m.value("ringcast_refusals_total", reason="too_many_connections_per_ip"),
                    m.value("ringcast_refusals_total", reason="too_many_connections"))

        scrapes_refused = 0

        def all_seen() -> bool:
            nonlocal scrapes_refused
            try:
                # The attacker's 195, and the scrapes refused in the burst.
                return sum(refused(scrape())) == 195 + scrapes_refused
            except (ConnectionResetError, RemoteDisconnected):
                # The scrape came in the same burst and met the id limit (a refusal too):
                # the next one comes after it (HTTPConnection reconnects).
                scrapes_refused += 1
                scrape.conn.close()
                return False
        run(wait_until(all_seen, TIMEOUT, "195 of the 200 to be refused"))
        visitors += [_open_from(VISITOR, port) for _ in range(5)]
        m = scrape()
        assert m.value("ringcast_connections") == 5 + 5 + 1   # attacker, visitors, scrape
        per_ip, _ = refused(m)
        assert m.value("ringcast_refusals_reset_total") == per_ip - 64
    finally:
        for ws in visitors:
            ws.close()
        for sock in held:
            sock.close()


def test_closing_connections_keep_their_address_place_until_gone(
        start_server: StartServer, scraper: Callable[[int], Scraper]) -> None:
    # An address at its limit that closes a connection whose peer never finishes the
    # close (it reads nothing) does not get a new place until the old one is released.
    srv = start_server(LIMITS_MAX_CONNECTIONS_PER_IP=2, LIMITS_CLOSE_TIMEOUT=30)
    port = srv.port
    scrape = scraper(port)
    kept = [_open_from(ATTACKER, port) for _ in range(2)]
    try:
        # The server closes the first (a protocol error: an unmasked frame) and lingers,
        # waiting for an EOF this client never sends.
        kept[0].sock.sendall(b"\x81\x02hi")

        def closing() -> bool:
            return scrape().value("ringcast_connections_closing") == 1
        run(wait_until(closing, TIMEOUT, "the first connection to be closing"))
        _refused_from(ATTACKER, port)
        kept[0].sock.close()                    # now it can finish

        def released() -> bool:
            return scrape().value("ringcast_connections_closing") == 0
        run(wait_until(released, TIMEOUT, "the closing connection to be released"))
        kept[0] = _open_from(ATTACKER, port)
    finally:
        for ws in kept:
            ws.close()
