"""Handshake and idle keep-alive timeouts (RFC 9112 section 9.5) and their deadlines."""

from __future__ import annotations

from ringcast.server.protocol import (
    CloseConnection,
    Ended,
    HttpQuery,
    Refusal,
    Refused,
    Session,
    SessionState,
)

from .harness import SETTINGS, http_request, settings, upgrade_request


class TestRFC9112Section9_5_FailuresAndTimeouts:
    def test_a_silent_connection_is_closed_at_the_handshake_timeout(self) -> None:
        session = Session(settings(handshake_timeout=10.0), 100.0)
        assert session.next_deadline() == 110.0
        assert session.tick(109.9) == []
        assert session.tick(110.0) == [
            Refused(Refusal.HANDSHAKE_TIMEOUT, 0, "no complete request within 10 seconds"),
            CloseConnection(Ended.TIMEOUT),
        ]
        assert session.state is SessionState.CLOSED
        assert session.next_deadline() is None

    def test_a_late_tick_still_closes(self) -> None:
        session = Session(SETTINGS, 0.0)
        assert [type(a) for a in session.tick(1e6)] == [Refused, CloseConnection]

    def test_a_slow_request_does_not_extend_the_deadline(self) -> None:
        session = Session(settings(handshake_timeout=10.0), 0.0)
        data = upgrade_request()
        for i, byte in enumerate(data[:-1]):
            assert session.receive_data(bytes([byte]), i * 0.001) == []
        assert session.next_deadline() == 10.0
        assert [type(a) for a in session.tick(10.0)] == [Refused, CloseConnection]

    def test_no_deadline_while_the_runtime_owes_an_answer(self) -> None:
        session = Session(SETTINGS, 0.0)
        session.receive_data(http_request("GET", "/healthz"), 1.0)
        assert session.next_deadline() is None
        assert session.tick(1e6) == []

    def test_an_idle_keep_alive_connection_times_out_too(self) -> None:
        session = Session(settings(handshake_timeout=10.0), 0.0)
        session.receive_data(http_request("GET", "/healthz"), 4.0)
        session.respond(200, "text/plain", b"ok")
        assert session.next_deadline() == 14.0  # from the last time the session saw
        assert session.tick(13.0) == []
        assert session.tick(14.0) == [CloseConnection(Ended.TIMEOUT)]  # idle, not refused

    def test_a_partial_request_on_a_keep_alive_connection_is_refused(self) -> None:
        session = Session(settings(handshake_timeout=10.0), 0.0)
        session.receive_data(http_request("GET", "/healthz"), 4.0)
        session.respond(200, "text/plain", b"ok")
        assert session.receive_data(b"GET /heal", 5.0) == []
        assert [type(a) for a in session.tick(14.0)] == [Refused, CloseConnection]

    def test_a_pipelined_partial_request_is_refused_too(self) -> None:
        session = Session(settings(handshake_timeout=10.0), 0.0)
        session.receive_data(http_request("GET", "/healthz") + b"GET /heal", 4.0)
        session.respond(200, "text/plain", b"ok")
        assert [type(a) for a in session.tick(14.0)] == [Refused, CloseConnection]

    def test_the_next_request_in_time_is_served(self) -> None:
        session = Session(settings(handshake_timeout=10.0), 0.0)
        session.receive_data(http_request("GET", "/healthz"), 4.0)
        session.respond(200, "text/plain", b"ok")
        assert session.receive_data(http_request("GET", "/healthz"), 13.0) == [
            HttpQuery("/healthz")
        ]

    def test_the_handshake_deadline_ends_with_the_handshake(self) -> None:
        session = Session(settings(handshake_timeout=10.0, ping_interval=30.0), 0.0)
        session.receive_data(upgrade_request(), 2.0)
        assert session.state is SessionState.OPEN
        assert session.next_deadline() == 32.0  # the first keepalive ping
        assert session.tick(10.0) == []

    def test_no_deadline_at_all_once_open_without_keepalive(self) -> None:
        session = Session(settings(ping_interval=0.0), 0.0)
        session.receive_data(upgrade_request(), 0.0)
        assert session.next_deadline() is None
