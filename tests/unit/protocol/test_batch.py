"""POST /publish: a batch of messages in one request, checked whole before anything is
published, answered with each message's reach. Both paths (fast and h11) answer alike."""

from __future__ import annotations

import base64
import json

import pytest

from ringcast.server.protocol import (
    HttpPublishBatch,
    ProtocolSettings,
    Refusal,
    Session,
    SessionState,
)
from ringcast.server.protocol.batch import Message

from .harness import SETTINGS, closes, http_request, parse_response, refusals, sent, settings
from .tokens import NOW, auth_settings, hs256

BOTH = pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "h11"])


def post(document: object, headers: list[tuple[str, str]] | None = None) -> bytes:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return http_request("POST", "/publish", [("Content-Type", "application/json"),
                                             *(headers or [])], body)


def session(fast: bool, base: ProtocolSettings = SETTINGS) -> Session:
    """A session whose clock reads 0 at the tokens' NOW (Unix time)."""
    return Session(settings(**{**_fields(base), "fast_path": fast}), 0.0, unix_offset=NOW)


def _fields(base: ProtocolSettings) -> dict[str, object]:
    names = [f for f in base.__dataclass_fields__ if base.__dataclass_fields__[f].init]
    return {name: getattr(base, name) for name in names}


@BOTH
def test_messages_on_several_channels_in_one_request(fast: bool) -> None:
    s = session(fast)
    actions = s.receive_data(post({"messages": [
        {"channel": "news", "text": "héllo"},
        {"channel": "prices", "binary": base64.b64encode(b"\x00\x01").decode()},
        {"channel": "news", "text": ""},
    ]}), 0.0)
    assert actions == [HttpPublishBatch((
        Message("news", "héllo".encode(), True),
        Message("prices", b"\x00\x01", False),
        Message("news", b"", True),
    ))]
    answer = s.publish_batch_done([(3, None), (0, ("Ep0ch", 7)), None])
    response = parse_response(sent(answer))
    assert response.status == 200
    assert json.loads(response.body) == {"results": [
        {"channel": "news", "subscribers": 3},
        {"channel": "prices", "subscribers": 0, "epoch": "Ep0ch", "offset": 7},
        {"channel": "news", "error": "unavailable"},
    ]}
    assert not closes(answer)  # keep-alive: the next request may follow
    assert s.state is SessionState.HTTP


@BOTH
@pytest.mark.parametrize(("document", "reason"), [
    (b"{not json", "the body is not JSON: "),
    ({"msgs": []}, 'the body must be {"messages": [...]}'),
    ([], 'the body must be {"messages": [...]}'),
    ({"messages": [{"text": "x"}]}, 'messages[0] must be {"channel": ...'),
    ({"messages": [{"channel": "a", "text": "x"}, {"channel": "a b", "text": "x"}]},
     "messages[1].channel: channel name 'a b': character ' ' at position 1"),
    ({"messages": [{"channel": "a", "binary": "not base64!"}]}, "messages[0].binary: not base64"),
    ({"messages": [{"channel": "a", "text": "x", "binary": "AA=="}]},
     'messages[0] needs "text" (a string) or "binary" (base64), one of them'),
    ({"messages": [{"channel": "a", "text": 5}]}, 'messages[0] needs "text"'),
    (b'{"messages": [{"channel": "a", "text": "\\ud800"}]}', "messages[0].text: not valid Unicode"),
])
def test_a_bad_batch_publishes_nothing_and_says_where(
    fast: bool, document: object, reason: str
) -> None:
    s = session(fast)
    actions = s.receive_data(post(document), 0.0)
    assert not [a for a in actions if isinstance(a, HttpPublishBatch)]
    response = parse_response(sent(actions))
    assert response.status == 400
    assert response.text.startswith(reason)
    assert [r.reason for r in refusals(actions)] == [Refusal.MALFORMED_REQUEST]
    assert closes(actions)


@BOTH
def test_a_token_must_allow_every_channel_of_the_batch(fast: bool) -> None:
    protocol = auth_settings(require_publish_auth=True)
    token = hs256(publish=["chat.*"])
    s = session(fast, protocol)
    data = post({"messages": [{"channel": "chat.a", "text": "x"},
                              {"channel": "news", "text": "y"}]},
                [("Authorization", f"Bearer {token}")])
    actions = s.receive_data(data, 0.0)
    response = parse_response(sent(actions))
    assert response.status == 403
    assert response.text == "messages[1]: not allowed to publish on news"
    assert [r.reason for r in refusals(actions)] == [Refusal.PUBLISH_FORBIDDEN]

    allowed = post({"messages": [{"channel": "chat.a", "text": "x"}]},
                   [("Authorization", f"Bearer {token}")])
    assert session(fast, protocol).receive_data(allowed, 0.0) == [
        HttpPublishBatch((Message("chat.a", b"x", True),))]


@BOTH
def test_without_a_token_where_one_is_needed(fast: bool) -> None:
    s = session(fast, auth_settings(require_publish_auth=True))
    response = parse_response(sent(s.receive_data(post({"messages": []}), 0.0)))
    assert response.status == 401


@BOTH
def test_get_is_405(fast: bool) -> None:
    s = session(fast)
    response = parse_response(sent(s.receive_data(http_request("GET", "/publish"), 0.0)))
    assert (response.status, response.headers[b"allow"]) == (405, b"POST")


def test_the_body_limit_holds() -> None:
    s = session(True, settings(max_http_body=64))
    big = {"messages": [{"channel": "a", "text": "x" * 100}]}
    response = parse_response(sent(s.receive_data(post(big), 0.0)))
    assert response.status == 413
