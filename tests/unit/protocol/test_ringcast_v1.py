"""The ringcast.v1 client protocol in the sans-I/O session (docs/history.md, "The wire
protocol"): the handshake selects it, commands become Join/Leave/PublishCommand actions
or an ``error`` answered at once, and refusals reach the client as text it can read."""

from __future__ import annotations

import json
from typing import Any

import pytest
from wsproto.events import AcceptConnection, CloseConnection, TextMessage

from ringcast.server.protocol.actions import (
    Join,
    Leave,
    OpenedV1,
    Publish,
    PublishCommand,
    Subscribe,
)
from ringcast.server.protocol.frames import payload_of
from ringcast.server.protocol.ringcast_v1 import (
    message_frame,
    published_frame,
    subscribed_frame,
)
from ringcast.server.protocol.session import SessionState

from .harness import SETTINGS, WsClient, settings, without_bytes

V1 = "ringcast.v1"


def v1_client(protocol_settings: Any = SETTINGS, target: str = "/",
              **connect: Any) -> WsClient:
    client = WsClient(protocol_settings)
    client.connect(target, subprotocols=[V1, *connect.pop("also", [])], **connect)
    return client


def command(client: WsClient, **fields: Any) -> list[Any]:
    return without_bytes(client.send(TextMessage(json.dumps(fields))))


def replies(client: WsClient) -> list[dict[str, Any]]:
    return [json.loads(e.data) for e in client.take_events() if isinstance(e, TextMessage)]


def test_the_handshake_selects_ringcast_v1_when_offered() -> None:
    client = v1_client(also=["ringcast"])
    accepted = [e for e in client.take_events() if isinstance(e, AcceptConnection)]
    assert accepted and accepted[0].subprotocol == V1
    assert client.session.state is SessionState.OPEN
    assert without_bytes(client.actions) == [OpenedV1(0)]
    assert client.session.channel is None
    assert client.session.commands is not None


def test_a_raw_client_offering_ringcast_is_served_as_before() -> None:
    client = WsClient()
    client.connect("/news", subprotocols=["ringcast"])
    assert without_bytes(client.actions) == [Subscribe("news", 0)]
    assert client.session.commands is None


def test_the_path_channel_is_joined_at_once() -> None:
    client = v1_client(target="/news")
    assert without_bytes(client.actions) == [OpenedV1(0), Join("news", None, None)]
    assert client.session.commands is not None
    assert client.session.commands.channels == {"news"}


def test_commands_become_actions_and_ids_are_kept_as_json() -> None:
    client = v1_client()
    since = {"epoch": "e", "offset": 3}
    assert command(client, type="subscribe", id=1, channel="a", since=since) == [
        Join("a", ("e", 3), b"1")]
    assert command(client, type="publish", id="x", channel="a", data="hi") == [
        PublishCommand("a", b"hi", True, b'"x"')]
    assert command(client, type="publish", channel="a", base64="AAE=") == [
        PublishCommand("a", b"\x00\x01", False, None)]
    assert command(client, type="unsubscribe", id=2.5, channel="a") == [Leave("a")]
    assert replies(client) == [{"type": "unsubscribed", "id": 2.5, "channel": "a"}]


def test_a_message_is_a_command_never_a_raw_publish() -> None:
    client = v1_client(target="/news")
    actions = command(client, type="publish", channel="news", data="x")
    assert not any(isinstance(a, Publish) for a in actions)


@pytest.mark.parametrize(("fields", "code"), [
    ({"type": "subscribe", "channel": "a", "since": {"epoch": "e", "offset": -1}},
     "bad_request"),
    ({"type": "subscribe", "channel": "a", "since": {"epoch": "e", "offset": True}},
     "bad_request"),
    ({"type": "subscribe", "channel": "a", "id": "x" * 200}, "bad_request"),
    ({"type": "subscribe", "channel": "a", "id": True}, "bad_request"),
    ({"type": "subscribe", "channel": "*"}, "bad_channel"),
    ({"type": "publish", "channel": "a", "data": "x", "base64": "eA=="}, "bad_request"),
    ({"type": "unsubscribe", "channel": "never"}, "not_subscribed"),
    ({"channel": "a"}, "bad_request"),
])
def test_a_bad_command_is_answered_with_an_error_and_nothing_else(
        fields: dict[str, Any], code: str) -> None:
    client = v1_client()
    assert command(client, **fields) == []
    (error,) = replies(client)
    assert error["type"] == "error" and error["code"] == code and error["reason"]
    assert client.session.state is SessionState.OPEN


def test_subscribing_twice_to_a_channel_is_refused() -> None:
    client = v1_client()
    command(client, type="subscribe", channel="a")
    assert command(client, type="subscribe", id=2, channel="a") == []
    assert replies(client)[0]["code"] == "bad_request"


def test_publishing_follows_the_servers_switch() -> None:
    client = v1_client(settings(client_publish=False))
    assert command(client, type="publish", id=1, channel="a", data="x") == []
    assert replies(client) == [{"type": "error", "id": 1, "channel": "a",
                                "code": "publish_disabled",
                                "reason": "publishing is disabled on this server"}]
    # Subscribing still works: only publishing is off.
    assert command(client, type="subscribe", channel="a") == [Join("a", None, None)]


def test_a_missing_token_is_told_with_1008_and_a_reason_after_the_101() -> None:
    protocol = settings(subscribe_tokens=("s" * 20,), require_subscribe_auth=True)
    client = v1_client(protocol)
    events = client.take_events()
    assert isinstance(events[0], AcceptConnection) and events[0].subprotocol == V1
    assert isinstance(events[1], CloseConnection)
    assert (events[1].code, events[1].reason) == (1008, "subscribing needs a token")
    assert client.session.state is SessionState.CLOSED


def test_a_raw_client_with_a_missing_token_still_gets_a_401() -> None:
    protocol = settings(subscribe_tokens=("s" * 20,), require_subscribe_auth=True)
    client = WsClient(protocol)
    client.connect("/news")
    assert client.session.state is SessionState.CLOSED
    assert not any(isinstance(e, AcceptConnection) for e in client.take_events())


# -- the frames the server sends (docs/history.md, "Server to client") ------------------


def text_of(frame: bytes) -> bytes:
    payload, text = payload_of(frame)
    assert text  # every ringcast.v1 frame is a text frame
    return payload


def test_a_message_names_its_epoch_only_at_offset_1_and_has_no_type() -> None:
    first = text_of(message_frame("news", b"hello", True, ("AbCdEfGh", 1)))
    assert first == b'{"channel":"news","epoch":"AbCdEfGh","offset":1,"data":"hello"}'
    for offset in (2, 3, 1000):
        later = text_of(message_frame("news", b"hello", True, ("AbCdEfGh", offset)))
        assert later == b'{"channel":"news","offset":%d,"data":"hello"}' % offset


def test_a_message_without_history_has_neither_epoch_nor_offset() -> None:
    assert text_of(message_frame("plain", b"x", True, None)) == b'{"channel":"plain","data":"x"}'
    assert text_of(message_frame("plain", b"\x00\xff", False, None)) == \
        b'{"channel":"plain","base64":"AP8="}'


def test_a_binary_message_comes_as_base64_with_the_same_position_rule() -> None:
    assert text_of(message_frame("b", b"\x00\xff", False, ("E", 1))) == \
        b'{"channel":"b","epoch":"E","offset":1,"base64":"AP8="}'
    assert text_of(message_frame("b", b"\x00\xff", False, ("E", 2))) == \
        b'{"channel":"b","offset":2,"base64":"AP8="}'


def test_message_text_is_json_escaped_and_not_ascii_escaped() -> None:
    got = json.loads(text_of(message_frame("c", '"é\n'.encode(), True, ("E", 7))))
    assert got == {"channel": "c", "offset": 7, "data": '"é\n'}


def test_replies_still_carry_the_epoch_at_every_offset() -> None:
    """The ``subscribed`` and ``published`` replies name the epoch: it is where a client
    learns the epoch of the messages that do not say it."""
    assert json.loads(text_of(subscribed_frame(b"1", "news", ("E", 5), True))) == {
        "type": "subscribed", "id": 1, "channel": "news", "epoch": "E", "offset": 5,
        "recovered": True}
    assert json.loads(text_of(published_frame(None, "news", ("E", 6)))) == {
        "type": "published", "channel": "news", "epoch": "E", "offset": 6}
