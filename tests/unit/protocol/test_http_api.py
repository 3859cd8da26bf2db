"""The HTTP API (publish, health, metrics) and its errors, RFC 9110 / 9112 / 6585."""

from __future__ import annotations

import json

import h11
import pytest

from ringcast.server.protocol import (
    CloseConnection,
    Ended,
    HttpPublish,
    HttpQuery,
    ProtocolSettings,
    Refusal,
    Refused,
    SendBytes,
    Session,
    SessionState,
    Subscribe,
)
from ringcast.server.protocol.http_phase import HttpPhase, held_limit

from .harness import (
    SETTINGS,
    HttpResponse,
    closes,
    http_request,
    parse_response,
    parse_responses,
    refusals,
    sent,
    settings,
    upgrade_request,
    without_bytes,
)


def slow() -> ProtocolSettings:
    """SETTINGS with the fast path off: every request through h11."""
    return settings(fast_path=False)


def publish(
    body: bytes,
    content_type: str | None = None,
    channel: str = "news",
    headers: list[tuple[str, str]] | None = None,
) -> bytes:
    all_headers = list(headers or [])
    if content_type is not None:
        all_headers.append(("Content-Type", content_type))
    return http_request("POST", f"/publish/{channel}", all_headers, body)


def refused(
    data: bytes, protocol_settings: ProtocolSettings = SETTINGS, method: bytes = b"GET"
) -> HttpResponse:
    """Feed a request that must be answered by an error; give the parsed error."""
    session = Session(protocol_settings, 0.0)
    actions = session.receive_data(data, 0.0)
    assert [type(a) for a in actions] == [Refused, SendBytes, CloseConnection]
    assert session.state is SessionState.CLOSED
    response = parse_response(sent(actions), method)
    refusal = actions[0]
    assert isinstance(refusal, Refused)
    assert refusal.code == response.status
    if method != b"HEAD":
        assert refusal.detail == response.text
    assert response.headers[b"connection"] == b"close"
    assert response.headers[b"content-type"] == b"text/plain; charset=utf-8"
    return response


class TestRFC9110Section9_3_3_PostPublish:
    @pytest.mark.parametrize(
        ("content_type", "text"),
        [
            ("text/plain", True),
            ("text/plain; charset=utf-8", True),
            ("TEXT/HTML", True),
            ("application/json", True),
            ("application/json; charset=utf-8", True),
            ("application/octet-stream", False),
            ("application/jsonp", False),
            (None, False),
        ],
    )
    def test_content_type_decides_the_opcode(self, content_type: str | None, text: bool) -> None:
        session = Session(SETTINGS, 0.0)
        actions = session.receive_data(publish(b'{"a": 1}', content_type), 0.0)
        assert actions == [HttpPublish("news", b'{"a": 1}', text)]
        assert session.state is SessionState.HTTP

    def test_binary_body_is_kept_as_is(self) -> None:
        session = Session(SETTINGS, 0.0)
        body = bytes(range(256))
        actions = session.receive_data(publish(body, "application/octet-stream"), 0.0)
        assert actions == [HttpPublish("news", body, False)]

    def test_empty_body(self) -> None:
        session = Session(SETTINGS, 0.0)
        assert session.receive_data(publish(b""), 0.0) == [HttpPublish("news", b"", False)]

    def test_chunked_body(self) -> None:
        session = Session(SETTINGS, 0.0)
        data = http_request(
            "POST",
            "/publish/news",
            [("Transfer-Encoding", "chunked"), ("Content-Type", "text/plain")],
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        assert session.receive_data(data, 0.0) == [HttpPublish("news", b"abcde", True)]

    def test_body_in_pieces(self) -> None:
        session = Session(SETTINGS, 0.0)
        data = publish(b"x" * 1000)
        actions = []
        for i in range(0, len(data), 7):
            actions += session.receive_data(data[i : i + 7], 0.0)
        assert actions == [HttpPublish("news", b"x" * 1000, False)]

    def test_publish_done_answers_200_with_json(self) -> None:
        session = Session(SETTINGS, 0.0)
        session.receive_data(publish(b"hi", channel="user:42"), 0.0)
        actions = session.publish_done(3)
        assert [type(a) for a in actions] == [SendBytes]
        response = parse_response(sent(actions))
        assert response.status == 200
        assert response.headers[b"content-type"] == b"application/json"
        assert json.loads(response.body) == {"channel": "user:42", "subscribers": 3}
        assert session.state is SessionState.HTTP  # keep-alive

    def test_publish_refused_answers_the_error_and_closes(self) -> None:
        session = Session(SETTINGS, 0.0)
        session.receive_data(publish(b"hi"), 0.0)
        actions = session.publish_refused(503, "broker unavailable, try again")
        assert closes(actions)
        response = parse_response(sent(actions))
        assert (response.status, response.text) == (503, "broker unavailable, try again")
        assert response.headers[b"connection"] == b"close"

    def test_text_body_must_be_utf8(self) -> None:
        response = refused(publish(b"\xff", "text/plain"))
        assert response.status == 400
        assert "UTF-8" in response.text

    def test_bad_channel(self) -> None:
        response = refused(publish(b"x", channel="a%2Fb"))
        assert response.status == 400
        assert "character '%' at position 1 is not allowed" in response.text

    def test_empty_channel(self) -> None:
        assert refused(publish(b"x", channel="")).status == 400

    def test_query_string_is_ignored(self) -> None:
        session = Session(SETTINGS, 0.0)
        data = http_request("POST", "/publish/news?x=1", [], b"x")
        assert session.receive_data(data, 0.0) == [HttpPublish("news", b"x", False)]

    def test_disabled_http_publish_is_404(self) -> None:
        assert refused(publish(b"x"), settings(http_enabled=False)).status == 404


class TestRFC9110Section11_6_2_Authorization:
    TOKEN_SETTINGS = settings(publish_token="s3cret")

    def test_right_token(self) -> None:
        session = Session(self.TOKEN_SETTINGS, 0.0)
        data = publish(b"x", headers=[("Authorization", "Bearer s3cret")])
        assert session.receive_data(data, 0.0) == [HttpPublish("news", b"x", False)]

    def test_scheme_is_case_insensitive(self) -> None:
        session = Session(self.TOKEN_SETTINGS, 0.0)
        data = publish(b"x", headers=[("Authorization", "bearer s3cret")])
        assert session.receive_data(data, 0.0) == [HttpPublish("news", b"x", False)]

    @pytest.mark.parametrize(
        "headers",
        [
            [],
            [("Authorization", "Bearer wrong")],
            [("Authorization", "Bearer s3cret2")],
            [("Authorization", "Basic czNjcmV0")],
            [("Authorization", "s3cret")],
            [("Authorization", "Bearer")],
        ],
    )
    def test_missing_or_wrong_token_is_401(self, headers: list[tuple[str, str]]) -> None:
        response = refused(publish(b"x", headers=headers), self.TOKEN_SETTINGS)
        assert response.status == 401
        # RFC 6750 section 3: a request without a bearer token gets the bare challenge;
        # a wrong token gets error="invalid_token".
        challenge = response.headers[b"www-authenticate"]
        assert challenge.startswith(b'Bearer realm="ringcast"')
        if any(value.lower().startswith("bearer") for _, value in headers):
            assert challenge.endswith(b', error="invalid_token"')
        else:
            assert challenge == b'Bearer realm="ringcast"'

    def test_no_token_configured_means_no_check(self) -> None:
        session = Session(SETTINGS, 0.0)
        data = publish(b"x", headers=[("Authorization", "Bearer anything")])
        assert session.receive_data(data, 0.0) == [HttpPublish("news", b"x", False)]

    def test_authorization_is_checked_before_the_channel(self) -> None:
        response = refused(publish(b"x", channel="bad/name"), self.TOKEN_SETTINGS)
        assert response.status == 401


class TestRFC9110Section15_5_14_ContentTooLarge:
    def test_content_length_over_the_limit_is_refused_before_the_body(self) -> None:
        data = http_request(
            "POST", "/publish/news", [("Content-Length", "4097")]
        )  # headers only: the body is never needed
        response = refused(data, settings(max_http_body=4096))
        assert response.status == 413
        assert response.text == "request body is 4097 bytes, at most 4096 allowed"

    def test_largest_content_length_h11_accepts(self) -> None:
        data = http_request("POST", "/publish/news", [("Content-Length", "9" * 20)])
        response = refused(data)
        assert (response.status, response.text) == (
            413,
            f"request body is {'9' * 20} bytes, at most 4096 allowed",
        )

    def test_absurd_content_length_is_malformed(self) -> None:
        data = http_request("POST", "/publish/news", [("Content-Length", "9" * 5000)])
        assert refused(data).status == 400

    def test_body_at_the_limit_is_accepted(self) -> None:
        session = Session(settings(max_http_body=100), 0.0)
        assert session.receive_data(publish(b"x" * 100), 0.0) == [
            HttpPublish("news", b"x" * 100, False)
        ]

    def test_chunked_body_is_counted_as_it_arrives(self) -> None:
        session = Session(settings(max_http_body=100), 0.0)
        head = http_request("POST", "/publish/news", [("Transfer-Encoding", "chunked")])
        assert session.receive_data(head, 0.0) == []
        assert session.receive_data(b"3c\r\n" + b"x" * 60 + b"\r\n", 0.0) == []
        actions = session.receive_data(b"3c\r\n" + b"x" * 60 + b"\r\n", 0.0)
        assert closes(actions)
        response = parse_response(sent(actions))
        assert (response.status, response.text) == (413, "request body exceeds 100 bytes")

    def test_applies_to_every_route(self) -> None:
        data = http_request("GET", "/healthz", [("Content-Length", "5000")])
        assert refused(data, settings(max_http_body=4096)).status == 413


class TestRFC9110Section15_5_6_MethodNotAllowed:
    @pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD"])
    def test_publish_allows_post(self, method: str) -> None:
        response = refused(http_request(method, "/publish/news"), method=method.encode())
        assert response.status == 405
        assert response.headers[b"allow"] == b"POST"

    @pytest.mark.parametrize("path", ["/healthz", "/metrics"])
    def test_queries_allow_get_and_head(self, path: str) -> None:
        response = refused(http_request("POST", path, body=b"x"))
        assert response.status == 405
        assert response.headers[b"allow"] == b"GET, HEAD"


class TestRFC9110Section15_5_5_NotFound:
    @pytest.mark.parametrize("path", ["/", "/no/such/path", "/publish/", "/healthz/x", "/%20"])
    def test_unknown_paths(self, path: str) -> None:
        method = "POST" if path.startswith("/publish/") else "GET"
        response = refused(http_request(method, path))
        expected = 400 if path == "/publish/" else 404  # /publish/ names an empty channel
        assert response.status == expected

    def test_metrics_disabled(self) -> None:
        assert (
            refused(http_request("GET", "/metrics"), settings(metrics_enabled=False)).status == 404
        )



class TestRFC9110Section15_5_22_UpgradeRequired:
    @pytest.mark.parametrize("path", ["/news", "/publishing", "/a.b:c@d"])
    def test_a_channel_path_without_upgrade_says_it_takes_a_websocket(self, path: str) -> None:
        response = refused(http_request("GET", path))
        assert response.status == 426
        assert response.headers[b"upgrade"] == b"websocket"   # section 15.5.22: MUST
        assert response.text == (f"{path} is a WebSocket channel: connect with a WebSocket "
                                 "client (GET with Upgrade: websocket)")

    def test_only_get_and_head(self) -> None:
        assert refused(http_request("POST", "/news", body=b"x")).status == 404


class TestRFC9110Section15_5_1_BadRequest:
    @pytest.mark.parametrize(
        "data",
        [
            b"GARBAGE\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",  # no Host
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nbad header\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 40 + b"\r\n\r\n",  # TLS
        ],
    )
    def test_malformed_requests(self, data: bytes) -> None:
        response = refused(data)
        assert response.status == 400
        assert response.text.startswith("malformed HTTP request: ")
        assert len(response.body) < 200

    def test_chunked_encoding_errors(self) -> None:
        session = Session(SETTINGS, 0.0)
        data = http_request("POST", "/publish/news", [("Transfer-Encoding", "chunked")])
        actions = session.receive_data(data + b"zz\r\n", 0.0)
        assert parse_response(sent(actions)).status == 400
        assert closes(actions)

    @pytest.mark.parametrize(
        ("method", "route", "upgrade"),
        [("POST", "/publish/news", False), ("GET", "/healthz", False), ("GET", "/news", True)],
    )
    def test_transfer_encoding_with_content_length_is_refused_and_closed(
        self, method: str, route: str, upgrade: bool
    ) -> None:
        # RFC 9112 section 6.1: such a request is a smuggling attempt or a broken proxy;
        # the server may reject it and must close the connection after answering.
        session = Session(SETTINGS, 0.0)
        headers = [("Transfer-Encoding", "chunked"), ("Content-Length", "5")]
        if upgrade:
            headers += [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                        ("Sec-WebSocket-Version", "13")]
        data = http_request(method, route, headers)
        actions = session.receive_data(data + b"5\r\nhello\r\n0\r\n\r\n", 0.0)
        response = parse_response(sent(actions))
        assert response.status == 400
        assert response.text == "a request may not have both Transfer-Encoding and Content-Length"
        assert response.headers[b"connection"] == b"close"
        assert closes(actions)
        assert [r.reason for r in refusals(actions)] == [Refusal.MALFORMED_REQUEST]

    def test_unsupported_transfer_encoding_is_501(self) -> None:
        data = http_request("POST", "/publish/news", [("Transfer-Encoding", "gzip")])
        assert refused(data).status == 501


class TestRFC6585Section5_RequestHeaderFieldsTooLarge:
    def test_header_section_over_16_kib(self) -> None:
        data = http_request("GET", "/healthz", [("X-Big", "x" * SETTINGS.max_header_size)])
        response = refused(data)
        assert response.status == 431
        assert response.text == "request header section exceeds 16384 bytes"

    def test_header_section_just_within_16_kib(self) -> None:
        session = Session(SETTINGS, 0.0)
        data = http_request("GET", "/healthz", [("X-Big", "x" * (SETTINGS.max_header_size - 100))])
        assert session.receive_data(data, 0.0) == [HttpQuery("/healthz")]

    def test_without_end_of_headers(self) -> None:
        session = Session(SETTINGS, 0.0)
        actions = session.receive_data(b"GET /healthz HTTP/1.1\r\nX: " + b"x" * 20000, 0.0)
        assert parse_response(sent(actions)).status == 431
        assert closes(actions)


class TestRFC9110Section9_3_1_GetQueries:
    @pytest.mark.parametrize("path", ["/healthz", "/metrics"])
    def test_query_then_respond(self, path: str) -> None:
        session = Session(SETTINGS, 0.0)
        assert session.receive_data(http_request("GET", path + "?x=1"), 0.0) == [HttpQuery(path)]
        actions = session.respond(200, "text/plain; version=0.0.4", b"ringcast_up 1\n")
        assert [type(a) for a in actions] == [SendBytes]
        response = parse_response(sent(actions))
        assert response.status == 200
        assert response.headers[b"content-type"] == b"text/plain; version=0.0.4"
        assert response.body == b"ringcast_up 1\n"

    def test_head_gets_headers_without_body(self) -> None:
        session = Session(SETTINGS, 0.0)
        assert session.receive_data(http_request("HEAD", "/healthz"), 0.0) == [
            HttpQuery("/healthz")
        ]
        actions = session.respond(200, "text/plain", b"ok\n")
        assert sent(actions).endswith(b"content-length: 3\r\n\r\n")
        assert parse_response(sent(actions), b"HEAD").body == b""

    def test_error_status_closes(self) -> None:
        session = Session(SETTINGS, 0.0)
        session.receive_data(http_request("GET", "/healthz"), 0.0)
        actions = session.respond(503, "text/plain", b"draining\n")
        assert closes(actions)
        response = parse_response(sent(actions))
        assert (response.status, response.body) == (503, b"draining\n")
        assert response.headers[b"connection"] == b"close"

    def test_a_body_on_get_is_read_and_dropped(self) -> None:
        session = Session(SETTINGS, 0.0)
        data = http_request("GET", "/healthz", body=b"ignored")
        assert session.receive_data(data, 0.0) == [HttpQuery("/healthz")]


class TestRFC9110Section10_1_1_Expect:
    def test_100_continue_is_sent_before_the_body(self) -> None:
        session = Session(SETTINGS, 0.0)
        head = http_request(
            "POST",
            "/publish/news",
            [("Content-Length", "5"), ("Expect", "100-continue")],
        )
        actions = session.receive_data(head, 0.0)
        assert sent(actions) == b"HTTP/1.1 100 \r\n\r\n"
        assert session.receive_data(b"hello", 0.0) == [HttpPublish("news", b"hello", False)]
        response = parse_response(sent(actions) + sent(session.publish_done(0)))
        assert (response.informational, response.status) == ([100], 200)

    def test_no_100_continue_for_a_refused_request(self) -> None:
        data = http_request(
            "POST", "/publish/news", [("Content-Length", "5000"), ("Expect", "100-continue")]
        )
        response = refused(data, settings(max_http_body=10))
        assert (response.informational, response.status) == ([], 413)


class TestRFC9112Section9_3_Persistence:
    def test_sequential_requests_on_one_connection(self) -> None:
        session = Session(SETTINGS, 0.0)
        out = b""
        for i in range(3):
            actions = session.receive_data(publish(str(i).encode()), float(i))
            assert actions == [HttpPublish("news", str(i).encode(), False)]
            out += sent(session.publish_done(i))
            assert session.receive_data(http_request("GET", "/healthz"), float(i)) == [
                HttpQuery("/healthz")
            ]
            out += sent(session.respond(200, "text/plain", b"ok"))
        responses = parse_responses(out)
        assert [r.status for r in responses] == [200] * 6
        assert json.loads(responses[4].body) == {"channel": "news", "subscribers": 2}

    def test_pipelined_requests_are_served_one_at_a_time(self) -> None:
        session = Session(SETTINGS, 0.0)
        data = publish(b"a") + http_request("GET", "/healthz") + publish(b"b")
        assert session.receive_data(data, 0.0) == [HttpPublish("news", b"a", False)]
        first = session.publish_done(1)
        assert without_bytes(first) == [HttpQuery("/healthz")]
        second = session.respond(200, "text/plain", b"ok")
        assert without_bytes(second) == [HttpPublish("news", b"b", False)]
        third = session.publish_done(2)
        assert without_bytes(third) == []
        statuses = [r.status for r in parse_responses(sent(first + second + third))]
        assert statuses == [200, 200, 200]

    def test_bytes_arriving_while_an_answer_is_owed_wait(self) -> None:
        session = Session(SETTINGS, 0.0)
        assert session.receive_data(publish(b"a"), 0.0) == [HttpPublish("news", b"a", False)]
        assert session.receive_data(http_request("GET", "/metrics"), 0.0) == []
        assert without_bytes(session.publish_done(1)) == [HttpQuery("/metrics")]

    def test_too_many_bytes_while_an_answer_is_owed(self) -> None:
        # Room for one more complete request, no more.
        session = Session(SETTINGS, 0.0)
        session.receive_data(publish(b"a"), 0.0)
        held = held_limit(SETTINGS)
        assert session.receive_data(b"x" * held, 0.0) == []
        assert session.receive_data(b"x", 0.0) == [
            Refused(
                Refusal.PIPELINE_OVERFLOW,
                0,
                f"more than {held} bytes sent while an answer was owed",
            ),
            CloseConnection(Ended.REFUSED),
        ]
        assert session.publish_done(1) == []  # the runtime may still answer: ignored

    def test_connection_close_from_the_client(self) -> None:
        session = Session(SETTINGS, 0.0)
        session.receive_data(http_request("GET", "/healthz", [("Connection", "close")]), 0.0)
        actions = session.respond(200, "text/plain", b"ok")
        assert closes(actions)
        assert parse_response(sent(actions)).headers[b"connection"] == b"close"

    def test_http_1_0_closes_after_the_response(self) -> None:
        session = Session(SETTINGS, 0.0)
        session.receive_data(http_request("GET", "/healthz", version="1.0"), 0.0)
        assert closes(session.respond(200, "text/plain", b"ok"))

    def test_eof_while_an_answer_is_owed(self) -> None:
        # A client that half-closes after its request still gets the answer.
        session = Session(SETTINGS, 0.0)
        session.receive_data(publish(b"a"), 0.0)
        assert session.receive_data(b"", 0.0) == []
        actions = session.publish_done(1)
        assert [type(a) for a in actions] == [SendBytes, CloseConnection]
        assert parse_response(sent(actions)).status == 200

    def test_pipelined_request_then_eof(self) -> None:
        session = Session(SETTINGS, 0.0)
        session.receive_data(http_request("GET", "/healthz") + http_request("GET", "/metrics"), 0.0)
        session.receive_data(b"", 0.0)
        assert without_bytes(session.respond(200, "text/plain", b"")) == [HttpQuery("/metrics")]
        assert without_bytes(session.respond(200, "text/plain", b"")) == [
            CloseConnection(Ended.PEER_CLOSED)]

    def test_upgrade_after_a_keep_alive_request(self) -> None:
        session = Session(SETTINGS, 0.0)
        data = http_request("GET", "/healthz") + upgrade_request("/news")
        assert session.receive_data(data, 0.0) == [HttpQuery("/healthz")]
        actions = session.respond(200, "text/plain", b"ok")
        assert [type(a) for a in actions] == [SendBytes, SendBytes, Subscribe]
        assert session.state is SessionState.OPEN
        assert session.channel == "news"

    def test_upgrade_pipelined_before_eof(self) -> None:
        session = Session(SETTINGS, 0.0)
        session.receive_data(http_request("GET", "/healthz") + upgrade_request("/news"), 0.0)
        assert session.receive_data(b"", 0.0) == []
        actions = session.respond(200, "text/plain", b"ok")
        assert [type(a) for a in actions] == [SendBytes, SendBytes, Subscribe, CloseConnection]
        assert session.channel == "news"

    def test_data_after_eof_is_ignored(self) -> None:
        session = Session(SETTINGS, 0.0)
        session.receive_data(publish(b"a"), 0.0)
        session.receive_data(b"", 0.0)
        assert session.receive_data(b"more", 0.0) == []


class TestAnswerContract:
    """Misuse by the runtime raises; answers after the close are ignored."""

    def test_publish_done_without_a_publish(self) -> None:
        with pytest.raises(RuntimeError, match="no publish request is waiting"):
            Session(SETTINGS, 0.0).publish_done(1)

    def test_respond_to_a_publish(self) -> None:
        session = Session(SETTINGS, 0.0)
        session.receive_data(publish(b"a"), 0.0)
        with pytest.raises(RuntimeError, match="no query request is waiting"):
            session.respond(200, "text/plain", b"")
        assert session.publish_done(1)  # still owed

    def test_answer_on_a_websocket(self) -> None:
        session = Session(SETTINGS, 0.0)
        session.receive_data(upgrade_request(), 0.0)
        with pytest.raises(RuntimeError):
            session.publish_refused(503, "")

    @pytest.mark.parametrize("status", [100, 101, 199, 600])
    def test_invalid_status(self, status: int) -> None:
        session = Session(SETTINGS, 0.0)
        session.receive_data(http_request("GET", "/healthz"), 0.0)
        with pytest.raises(ValueError, match=f"status is {status}"):
            session.respond(status, "text/plain", b"")
        assert session.respond(200, "text/plain", b"")  # still owed

    def test_answers_after_the_close_are_ignored(self) -> None:
        session = Session(SETTINGS, 0.0)
        session.receive_data(publish(b"a"), 0.0)
        assert session.close(1001, "going away", 0.0) == [CloseConnection(Ended.SHUTDOWN)]
        assert session.publish_done(1) == []
        assert session.publish_refused(503, "x") == []
        assert session.respond(200, "text/plain", b"") == []

    def test_unknown_status_code_has_no_reason_phrase(self) -> None:
        session = Session(SETTINGS, 0.0)
        session.receive_data(http_request("GET", "/healthz"), 0.0)
        assert sent(session.respond(299, "text/plain", b"")).startswith(b"HTTP/1.1 299 \r\n")


class TestInternalErrors:
    @staticmethod
    def explode(*args: object) -> None:
        raise KeyError("secret detail")

    @pytest.mark.parametrize("where", ["_start_request", "_serve_plain"])
    def test_while_parsing_a_500_without_details(
        self, monkeypatch: pytest.MonkeyPatch, where: str
    ) -> None:
        # On h11's path and on the fast path alike.
        monkeypatch.setattr(HttpPhase, where, self.explode)
        session = Session(SETTINGS if where == "_serve_plain" else slow(), 0.0)
        actions = session.receive_data(http_request("GET", "/healthz"), 0.0)
        assert closes(actions)
        response = parse_response(sent(actions))
        assert (response.status, response.text) == (500, "internal server error")

    @pytest.mark.parametrize("method", ["publish_done", "publish_refused"])
    def test_while_answering_a_publish(self, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
        session = Session(SETTINGS, 0.0)
        session.receive_data(publish(b"a"), 0.0)
        monkeypatch.setattr(HttpPhase, "_answer", self.explode)
        actions = (
            session.publish_done(1)
            if method == "publish_done"
            else session.publish_refused(503, "")
        )
        assert parse_response(sent(actions)).status == 500
        assert closes(actions)

    def test_while_answering_a_query(self, monkeypatch: pytest.MonkeyPatch) -> None:
        session = Session(SETTINGS, 0.0)
        session.receive_data(http_request("GET", "/healthz"), 0.0)
        monkeypatch.setattr(HttpPhase, "_answer", self.explode)
        assert parse_response(sent(session.respond(200, "text/plain", b""))).status == 500

    def test_in_the_handshake_timer(self, monkeypatch: pytest.MonkeyPatch) -> None:
        session = Session(SETTINGS, 0.0)
        monkeypatch.setattr(HttpPhase, "tick", self.explode)
        assert parse_response(sent(session.tick(1.0))).status == 500

    def test_h11_refusing_to_send_the_error_just_closes(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def refuse(self: object, event: object) -> bytes:
            raise h11.LocalProtocolError("no")

        monkeypatch.setattr(h11.Connection, "send", refuse)
        session = Session(SETTINGS, 0.0)
        actions = session.receive_data(b"nonsense\r\n\r\n", 0.0)
        assert [type(a) for a in actions] == [Refused, CloseConnection]
