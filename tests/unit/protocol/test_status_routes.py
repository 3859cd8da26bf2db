"""The status page's routes in the protocol core: off unless ``status_enabled``; when on,
``GET /status`` and ``/status.json`` are queries for the runtime and ``/status/live`` a
WebSocket on a channel no client can name; guarded like ``POST /publish`` when that needs
a token (see docs/status.md)."""

from __future__ import annotations

import pytest

from ringcast.server.protocol import HttpQuery, Refusal, Session, Subscribe
from ringcast.server.protocol.http_phase import STATUS_CHANNEL

from .harness import (
    http_request,
    parse_response,
    refusals,
    sent,
    settings,
    upgrade_request,
)
from .tokens import PUBLISHER, SUBSCRIBER

OPEN = settings(status_enabled=True)
GUARDED = settings(status_enabled=True, publish_tokens=(PUBLISHER,),
                   subscribe_tokens=(SUBSCRIBER,))


def receive(protocol: object, data: bytes) -> list[object]:
    session = Session(protocol, 0.0)  # type: ignore[arg-type]
    return list(session.receive_data(data, 0.0))


@pytest.mark.parametrize("path", ["/status", "/status.json"])
def test_the_pages_are_queries_when_enabled(path: str) -> None:
    assert receive(OPEN, http_request("GET", path)) == [HttpQuery(path)]


@pytest.mark.parametrize("path", ["/status", "/status.json"])
def test_off_by_default_the_paths_are_channels_like_any_other(path: str) -> None:
    """Off, ``/status`` is the URL of the channel ``status``: 426, connect a WebSocket."""
    actions = receive(settings(), http_request("GET", path))
    assert parse_response(sent(actions)).status == 426


def test_on_a_websocket_still_subscribes_to_the_channel_named_status() -> None:
    assert receive(OPEN, upgrade_request("/status"))[-1] == Subscribe("status")


def test_only_get_and_head_read_the_pages() -> None:
    actions = receive(OPEN, http_request("POST", "/status.json", body=b"x"))
    response = parse_response(sent(actions))
    assert response.status == 405
    assert response.headers[b"allow"] == b"GET, HEAD"


def test_the_live_websocket_joins_a_channel_no_client_can_name() -> None:
    actions = receive(OPEN, upgrade_request("/status/live"))
    assert actions[-1] == Subscribe(STATUS_CHANNEL)
    assert sent(actions).startswith(b"HTTP/1.1 101 ")
    # A client cannot reach it by name, to listen or to publish.
    refused = receive(OPEN, upgrade_request("/" + STATUS_CHANNEL))
    assert parse_response(sent(refused)).status == 400


class TestGuardedLikePublishing:
    """RFC 6750: a token in the Authorization header or the ``token`` query parameter."""

    @pytest.mark.parametrize("request_bytes", [
        http_request("GET", "/status.json"),
        upgrade_request("/status/live"),
    ], ids=["json", "live"])
    def test_without_a_token_401(self, request_bytes: bytes) -> None:
        actions = receive(GUARDED, request_bytes)
        assert parse_response(sent(actions)).status == 401
        assert [r.reason for r in refusals(actions)] == [Refusal.MISSING_TOKEN]

    def test_a_token_that_may_only_subscribe_403(self) -> None:
        actions = receive(GUARDED, http_request("GET", f"/status.json?token={SUBSCRIBER}"))
        assert parse_response(sent(actions)).status == 403

    def test_a_publish_token_in_the_query_opens_page_and_websocket(self) -> None:
        page = receive(GUARDED, http_request("GET", f"/status?token={PUBLISHER}"))
        assert page == [HttpQuery("/status")]
        live = receive(GUARDED, upgrade_request(f"/status/live?token={PUBLISHER}"))
        assert live[-1] == Subscribe(STATUS_CHANNEL)

    def test_a_publish_token_in_the_header_opens_the_figures(self) -> None:
        request = http_request("GET", "/status.json",
                               [("Authorization", f"Bearer {PUBLISHER}")])
        assert receive(GUARDED, request) == [HttpQuery("/status.json")]
