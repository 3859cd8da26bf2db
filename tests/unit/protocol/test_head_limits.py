"""Limits on the request head: RFC 9112 section 3 (414 URI Too Long) and RFC 6585
section 5 (431 Request Header Fields Too Large), decided the same way however the bytes
are cut."""

from __future__ import annotations

import pytest

from ringcast.server.protocol import (
    Action,
    CloseConnection,
    HttpQuery,
    Refusal,
    Refused,
    SendBytes,
    Session,
    Subscribe,
)
from ringcast.server.protocol.head_limits import HeadGuard, HeadLimitError

from .harness import http_request, parse_response, settings, upgrade_request

LIMITS = settings(max_request_line=100, max_header_size=200, max_headers=5)


def request_with_line(length: int, ending: bytes = b"\r\n") -> bytes:
    """``GET /healthz?xxx HTTP/1.1`` padded to ``length`` bytes, then a Host header."""
    fixed = len(b"GET /healthz? HTTP/1.1")
    line = b"GET /healthz?" + b"x" * (length - fixed) + b" HTTP/1.1"
    assert len(line) == length
    return line + ending + b"Host: a" + ending + ending


def feed(data: bytes, *, chunk: int = 0, protocol_settings: object = LIMITS) -> list[Action]:
    """Feed ``data`` at once, or ``chunk`` bytes at a time; all the actions."""
    session = Session(protocol_settings, 0.0)  # type: ignore[arg-type]
    if not chunk:
        return session.receive_data(data, 0.0)
    actions: list[Action] = []
    for i in range(0, len(data), chunk):
        actions += session.receive_data(data[i : i + chunk], 0.0)
    return actions


def assert_refused(actions: list[Action], status: int, reason: Refusal, text: str) -> None:
    assert [type(a) for a in actions] == [Refused, SendBytes, CloseConnection]
    answer = actions[1]
    assert isinstance(answer, SendBytes)
    response = parse_response(answer.data)
    assert (response.status, response.text) == (status, text)
    assert actions[0] == Refused(reason, status, text)


CHUNKS = [0, 1, 7]  # at once, byte by byte, odd pieces


class TestRFC9112Section3_RequestLine:
    @pytest.mark.parametrize("chunk", CHUNKS)
    @pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
    def test_a_line_at_the_limit_is_accepted(self, chunk: int, ending: bytes) -> None:
        actions = feed(request_with_line(100, ending), chunk=chunk)
        assert actions == [HttpQuery("/healthz")]

    @pytest.mark.parametrize("chunk", CHUNKS)
    def test_one_byte_over_is_414(self, chunk: int) -> None:
        actions = feed(request_with_line(101), chunk=chunk)
        text = "request line exceeds 100 bytes"
        assert_refused(actions, 414, Refusal.REQUEST_LINE_TOO_LONG, text)

    def test_decided_before_the_line_ends(self) -> None:
        session = Session(LIMITS, 0.0)
        assert session.receive_data(b"GET /" + b"x" * 95, 0.0) == []  # 100 bytes so far
        assert session.receive_data(b"\r", 0.0) == []  # may still be the line ending
        actions = session.receive_data(b"x", 0.0)
        assert isinstance(actions[0], Refused)
        assert actions[0].code == 414

    def test_the_default_is_8_kib(self) -> None:
        default = settings()
        assert default.max_request_line == 8192
        assert feed(request_with_line(8192), protocol_settings=default) == [HttpQuery("/healthz")]
        actions = feed(request_with_line(8193), protocol_settings=default)
        assert isinstance(actions[0], Refused)
        assert actions[0].code == 414

    def test_a_handshake_with_a_long_target(self) -> None:
        data = upgrade_request("/news?" + "x" * 200)
        actions = feed(data)
        assert isinstance(actions[0], Refused)
        assert actions[0].reason is Refusal.REQUEST_LINE_TOO_LONG


class TestRFC6585Section5_HeaderSection:
    def head(self, *headers: bytes) -> bytes:
        return b"GET /healthz HTTP/1.1\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"

    @pytest.mark.parametrize("chunk", CHUNKS)
    def test_a_header_section_at_the_limit_is_accepted(self, chunk: int) -> None:
        # "Host: a\r\n" is 9 bytes; "X: " + 186 + CRLF is 191: 200 in all
        data = self.head(b"Host: a", b"X: " + b"x" * 186)
        assert feed(data, chunk=chunk) == [HttpQuery("/healthz")]

    @pytest.mark.parametrize("chunk", CHUNKS)
    def test_one_byte_over_is_431(self, chunk: int) -> None:
        data = self.head(b"Host: a", b"X: " + b"x" * 187)
        text = "request header section exceeds 200 bytes"
        assert_refused(feed(data, chunk=chunk), 431, Refusal.HEADERS_TOO_LARGE, text)

    def test_decided_before_the_head_ends(self) -> None:
        session = Session(LIMITS, 0.0)
        actions = session.receive_data(b"GET / HTTP/1.1\r\nX: " + b"x" * 300, 0.0)
        assert isinstance(actions[0], Refused)
        assert actions[0].code == 431

    @pytest.mark.parametrize("chunk", CHUNKS)
    def test_header_count_at_the_limit_is_accepted(self, chunk: int) -> None:
        data = self.head(b"Host: a", *(b"X-%d: 1" % i for i in range(4)))
        assert feed(data, chunk=chunk) == [HttpQuery("/healthz")]

    @pytest.mark.parametrize("chunk", CHUNKS)
    def test_one_header_too_many_is_431(self, chunk: int) -> None:
        data = self.head(b"Host: a", *(b"X-%d: 1" % i for i in range(5)))
        text = "request has more than 5 header lines"
        assert_refused(feed(data, chunk=chunk), 431, Refusal.TOO_MANY_HEADERS, text)

    def test_the_request_line_does_not_count_as_a_header(self) -> None:
        protocol_settings = settings(max_request_line=8192, max_header_size=1024, max_headers=8)
        data = b"GET /healthz?" + b"x" * 2000 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
        assert feed(data, protocol_settings=protocol_settings) == [HttpQuery("/healthz")]

    def test_a_browser_handshake_fits_the_defaults(self) -> None:
        headers = {f"X_Browser_{i}": "v" * 100 for i in range(20)}
        data = upgrade_request(Origin="https://app.example.com", **headers)  # type: ignore[arg-type]
        actions = feed(data, protocol_settings=settings())
        assert [type(a) for a in actions] == [SendBytes, Subscribe]


class TestPipelinedRequests:
    def test_the_next_request_is_checked_after_the_answer(self) -> None:
        session = Session(LIMITS, 0.0)
        first = http_request("GET", "/healthz")
        assert session.receive_data(first + request_with_line(101), 0.0) == [HttpQuery("/healthz")]
        actions = session.respond(200, "text/plain", b"ok")
        assert [type(a) for a in actions] == [SendBytes, Refused, SendBytes, CloseConnection]
        refusal = actions[1]
        assert isinstance(refusal, Refused)
        assert refusal.reason is Refusal.REQUEST_LINE_TOO_LONG

    def test_bytes_held_during_the_answer_are_checked_too(self) -> None:
        session = Session(LIMITS, 0.0)
        assert session.receive_data(http_request("GET", "/healthz"), 0.0) == [
            HttpQuery("/healthz")
        ]
        assert session.receive_data(b"GET /healthz HTTP/1.1\r\n" + b"X: y\r\n" * 6, 0.0) == []
        actions = session.respond(200, "text/plain", b"ok")
        assert isinstance(actions[1], Refused)
        assert actions[1].reason is Refusal.TOO_MANY_HEADERS

    def test_a_request_split_around_the_answer(self) -> None:
        session = Session(LIMITS, 0.0)
        first = http_request("GET", "/healthz")
        session.receive_data(first + b"GET /healthz HT", 0.0)
        assert [type(a) for a in session.respond(200, "text/plain", b"ok")] == [SendBytes]
        assert session.receive_data(b"TP/1.1\r\nHost: a\r\n\r\n", 0.0) == [HttpQuery("/healthz")]


class TestHeadGuard:
    def test_every_split_gives_the_same_answer(self) -> None:
        data = request_with_line(100)
        for cut in range(len(data) + 1):
            guard = HeadGuard(100, 200, 5)
            guard.feed(data[:cut])
            guard.feed(data[cut:])
            assert not guard.active
        over = request_with_line(101)
        for cut in range(len(over) + 1):
            guard = HeadGuard(100, 200, 5)
            with pytest.raises(HeadLimitError) as info:
                guard.feed(over[:cut])
                guard.feed(over[cut:])
            assert info.value.status == 414

    @pytest.mark.parametrize(
        ("extra", "status"),
        [(186, None), (187, 431)],  # a header section of 200 bytes, then 201
    )
    def test_every_split_of_a_header_section(self, extra: int, status: int | None) -> None:
        data = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"x" * extra + b"\r\n\r\n"
        for cut in range(len(data) + 1):
            guard = HeadGuard(100, 200, 5)
            try:
                guard.feed(data[:cut])
                guard.feed(data[cut:])
            except HeadLimitError as exc:
                assert exc.status == status, cut
            else:
                assert status is None, cut
                assert not guard.active

    def test_bytes_after_the_head_are_ignored_until_start(self) -> None:
        guard = HeadGuard(10, 10, 1)
        guard.feed(b"GET / H\r\nA: b\r\n\r\n" + b"x" * 1000)
        assert not guard.active
        guard.start()
        with pytest.raises(HeadLimitError):
            guard.feed(b"x" * 20)
