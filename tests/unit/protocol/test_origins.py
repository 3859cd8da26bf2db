"""The Origin allow-list: RFC 6455 section 10.2 (Origin considerations), RFC 6454."""

from __future__ import annotations

import re

import pytest

from ringcast.config import config_keys
from ringcast.server.protocol import (
    CloseConnection,
    HttpPublish,
    Refusal,
    Refused,
    SendBytes,
    Session,
    Subscribe,
)
from ringcast.server.protocol.origins import OriginPolicy

from .harness import http_request, parse_response, settings, upgrade_request

ALLOWED = (
    "https://app.example.com",
    "https://*.example.org",
    "https://admin.example.net:8443",
    "http://localhost:*",
    "http://[::1]:3000",
)
ORIGINS = settings(allowed_origins=ALLOWED)


def upgrade(origin: str | None, protocol_settings: object = ORIGINS) -> list[object]:
    session = Session(protocol_settings, 0.0)  # type: ignore[arg-type]
    return list(session.receive_data(upgrade_request(Origin=origin), 0.0))


def assert_forbidden(actions: list[object], origin: str) -> None:
    assert [type(a) for a in actions] == [Refused, SendBytes, CloseConnection]
    refusal, answer = actions[0], actions[1]
    assert isinstance(answer, SendBytes)
    response = parse_response(answer.data)
    assert response.status == 403
    assert response.text == f"origin {origin!r} is not allowed"
    assert refusal == Refused(Refusal.ORIGIN_NOT_ALLOWED, 403, response.text)


class TestRFC6455Section10_2_OriginConsiderations:
    @pytest.mark.parametrize(
        "origin",
        [
            "https://app.example.com",
            "HTTPS://App.Example.COM",  # scheme and host are case-insensitive
            "https://a.example.org",
            "https://a.b.example.org",
            "https://admin.example.net:8443",
            "http://localhost",
            "http://localhost:5173",
            "http://[::1]:3000",
        ],
    )
    def test_allowed(self, origin: str) -> None:
        assert [type(a) for a in upgrade(origin)] == [SendBytes, Subscribe]

    @pytest.mark.parametrize(
        "origin",
        [
            "https://evil.com",
            "http://app.example.com",  # another scheme
            "https://app.example.com:8443",  # another port
            "https://app.example.com.evil.com",
            "https://example.org",  # the wildcard needs a subdomain
            "https://evilexample.org",
            "https://a.example.org.evil.com",
            "https://admin.example.net",  # the entry names a port
            "https://localhost:5173",
            "http://[::1]",
            "null",  # sandboxed frames, file:// pages
            "",
        ],
    )
    def test_refused_with_403(self, origin: str) -> None:
        assert_forbidden(upgrade(origin), origin)

    def test_a_request_without_origin_is_not_from_a_browser(self) -> None:
        assert [type(a) for a in upgrade(None)] == [SendBytes, Subscribe]

    def test_an_empty_list_allows_any_origin(self) -> None:
        assert [type(a) for a in upgrade("https://evil.com", settings())] == [
            SendBytes,
            Subscribe,
        ]

    def test_two_origin_headers_are_refused(self) -> None:
        data = upgrade_request(Origin="https://app.example.com").replace(
            b"\r\n\r\n", b"\r\nOrigin: https://evil.com\r\n\r\n"
        )
        actions = Session(ORIGINS, 0.0).receive_data(data, 0.0)
        assert isinstance(actions[0], Refused)
        assert actions[0].reason is Refusal.ORIGIN_NOT_ALLOWED

    def test_checked_before_the_channel_and_the_token(self) -> None:
        protocol_settings = settings(
            allowed_origins=ALLOWED, publish_tokens=("x" * 16,), require_subscribe_auth=True
        )
        session = Session(protocol_settings, 0.0)
        data = upgrade_request("/bad%channel", Origin="https://evil.com")
        actions = session.receive_data(data, 0.0)
        assert isinstance(actions[0], Refused)
        assert actions[0].reason is Refusal.ORIGIN_NOT_ALLOWED

    def test_http_publish_from_a_foreign_page(self) -> None:
        session = Session(ORIGINS, 0.0)
        data = http_request("POST", "/publish/news", [("Origin", "https://evil.com")], b"x")
        assert_forbidden(session.receive_data(data, 0.0), "https://evil.com")

    def test_http_publish_from_an_allowed_page(self) -> None:
        session = Session(ORIGINS, 0.0)
        data = http_request("POST", "/publish/news", [("Origin", "https://app.example.com")], b"x")
        assert session.receive_data(data, 0.0) == [HttpPublish("news", b"x", False)]

    def test_queries_are_not_checked(self) -> None:
        session = Session(ORIGINS, 0.0)
        data = http_request("GET", "/healthz", [("Origin", "https://evil.com")])
        assert [type(a).__name__ for a in session.receive_data(data, 0.0)] == ["HttpQuery"]


class TestOriginPolicy:
    @pytest.mark.parametrize(
        "entry",
        [
            "app.example.com",  # no scheme
            "https://",
            "https://app.example.com/",  # a path
            "https://*",
            "https://a.*.example.com",
            "*",
            "https://app.example.com:port",
            "https://app.example.com:123456",
        ],
    )
    def test_invalid_entries(self, entry: str) -> None:
        with pytest.raises(ValueError, match="is not scheme://host"):
            OriginPolicy([entry])
        with pytest.raises(ValueError, match="is not scheme://host"):
            settings(allowed_origins=(entry,))

    def test_allows_any(self) -> None:
        assert OriginPolicy([]).allows_any
        assert OriginPolicy([]).allows("anything")
        assert not OriginPolicy(["https://a.b"]).allows_any

    def test_other_schemes(self) -> None:
        policy = OriginPolicy(["chrome-extension://abcdef", "app://*.local"])
        assert policy.allows("chrome-extension://abcdef")
        assert policy.allows("app://x.local")
        assert not policy.allows("chrome-extension://abcdefg")

    def test_surrounding_whitespace_is_ignored(self) -> None:
        assert OriginPolicy(["https://a.example.com"]).allows(" https://a.example.com ")

    @pytest.mark.parametrize(
        "entry",
        [
            *ALLOWED,
            "https://*.example.org:*",
            "wss://x",
            "https://a_b.example.com",
            "https://app.example.com/",
            "*",
            "https://a.*.b",
            "http://[::1",
        ],
    )
    def test_the_config_accepts_exactly_what_the_policy_does(self, entry: str) -> None:
        (key,) = [k for k in config_keys() if k.path == "http.allowed_origins"]
        assert key.spec.pattern is not None
        in_config = re.fullmatch(key.spec.pattern, entry) is not None
        try:
            OriginPolicy([entry])
        except ValueError:
            in_policy = False
        else:
            in_policy = True
        assert in_config == in_policy
