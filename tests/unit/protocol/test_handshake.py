"""The WebSocket opening handshake, RFC 6455 section 4, on the server side."""

from __future__ import annotations

import base64
import hashlib

import pytest
from wsproto.events import AcceptConnection, TextMessage
from wsproto.extensions import PerMessageDeflate

from ringcast.server.protocol import (
    CloseConnection,
    Ended,
    ProtocolSettings,
    Publish,
    Refused,
    SendBytes,
    Session,
    SessionState,
    Subscribe,
)

from .harness import (
    SETTINGS,
    HttpResponse,
    WsClient,
    closes,
    http_request,
    parse_response,
    settings,
    upgrade_request,
)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def rejected(data: bytes, protocol_settings: ProtocolSettings = SETTINGS) -> HttpResponse:
    """Feed a request; check it was refused and the connection closed; give the response."""
    session = Session(protocol_settings, 0.0)
    actions = session.receive_data(data, 0.0)
    assert closes(actions)
    assert session.state is SessionState.CLOSED
    assert session.channel is None
    assert [type(a) for a in actions] == [Refused, SendBytes, CloseConnection]
    refusal, answer = actions[0], actions[1]
    assert isinstance(refusal, Refused)
    assert isinstance(answer, SendBytes)
    response = parse_response(answer.data)
    assert response.headers[b"connection"] == b"close"
    assert (refusal.code, refusal.detail) == (response.status, response.text)
    return response


class TestRFC6455Section4_2_1_ReadingTheClientsOpeningHandshake:
    def test_a_valid_handshake_is_accepted(self) -> None:
        client = WsClient()
        actions = client.connect("/news")
        assert isinstance(actions[0], SendBytes)
        assert actions[1:] == [Subscribe("news")]
        assert [type(e) for e in client.take_events()] == [AcceptConnection]
        assert client.session.state is SessionState.OPEN
        assert client.session.channel == "news"

    def test_query_string_is_not_part_of_the_channel(self) -> None:
        actions = WsClient().connect("/news?since=42")
        assert actions[1:] == [Subscribe("news")]

    def test_missing_key(self) -> None:
        response = rejected(upgrade_request(Sec_WebSocket_Key=None))
        assert response.status == 400
        assert "Sec-WebSocket-Key" in response.text

    @pytest.mark.parametrize(
        "key",
        [
            "not base64 at all!!!!!!!",  # 24 characters, not base64
            "c2hvcnQ=",  # base64 of 5 bytes
            "dGhlIHNhbXBsZSBub25jZSE/Pw==",  # base64 of 20 bytes
        ],
    )
    def test_invalid_key(self, key: str) -> None:
        response = rejected(upgrade_request(Sec_WebSocket_Key=key))
        assert response.status == 400
        assert response.text == "Sec-WebSocket-Key must be 16 bytes encoded in base64"

    def test_missing_connection_upgrade(self) -> None:
        response = rejected(upgrade_request(Connection="keep-alive"))
        assert response.status == 400
        assert "Connection: Upgrade" in response.text

    def test_wrong_version_is_426_with_the_supported_version(self) -> None:
        response = rejected(upgrade_request(Sec_WebSocket_Version="8"))
        assert response.status == 426
        assert response.headers[b"sec-websocket-version"] == b"13"

    def test_missing_version_is_400(self) -> None:
        response = rejected(upgrade_request(Sec_WebSocket_Version=None))
        assert response.status == 400

    def test_upgrade_to_something_else_is_not_a_handshake(self) -> None:
        # Upgrade: h2c is ignored; /news is then a channel's path without a WebSocket upgrade.
        response = rejected(upgrade_request(Upgrade="h2c"))
        assert response.status == 426
        assert "is a WebSocket channel" in response.text

    def test_upgrade_must_be_websocket_only(self) -> None:
        response = rejected(upgrade_request(Upgrade="websocket, h2c"))
        assert response.status == 400
        assert "Upgrade: websocket" in response.text

    def test_missing_host(self) -> None:
        data = http_request(
            "GET",
            "/news",
            [
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "13"),
            ],
            host=False,
        )
        assert rejected(data).status == 400

    def test_http_1_0_is_refused(self) -> None:
        data = upgrade_request().replace(b"HTTP/1.1", b"HTTP/1.0")
        response = rejected(data)
        assert response.status == 400
        assert response.text == "the WebSocket handshake needs HTTP/1.1"

    @pytest.mark.parametrize("host", ["xn--a.example", "xn---"])
    def test_host_that_is_not_a_valid_idna_name(self, host: str) -> None:
        response = rejected(upgrade_request(Host=host))
        assert (response.status, response.text) == (400, "the Host header is not a valid host name")

    def test_punycode_host_is_fine(self) -> None:
        session = Session(SETTINGS, 0.0)
        session.receive_data(upgrade_request(Host="xn--ls8h.la"), 0.0)
        assert session.state is SessionState.OPEN


class TestRFC6455Section4_2_1_RequestURIIsTheChannel:
    @pytest.mark.parametrize(
        ("target", "reason"),
        [
            ("/", "channel name is empty; use 1 to 128 characters from A-Z a-z 0-9 _ - . : @"),
            (
                "/a/b",
                "channel name 'a/b': character '/' at position 1 is not allowed; "
                "use A-Z a-z 0-9 _ - . : @",
            ),
            (
                "/caf%C3%A9",
                "channel name 'caf%C3%A9': character '%' at position 3 is not "
                "allowed; use A-Z a-z 0-9 _ - . : @",
            ),
            ("/" + "x" * 129, "channel name is 129 characters, at most 128 allowed"),
        ],
    )
    def test_bad_channel_is_400_with_the_reason_as_body(self, target: str, reason: str) -> None:
        response = rejected(upgrade_request(target))
        assert response.status == 400
        assert response.text == reason

    def test_non_ascii_target_is_malformed_http(self) -> None:
        data = upgrade_request("/news").replace(b"/news", b"/n\xc3\xa9ws")
        response = rejected(data)
        assert response.status == 400
        assert response.text.startswith("malformed HTTP request: ")

    def test_max_channel_name_comes_from_the_settings(self) -> None:
        response = rejected(upgrade_request("/abcdef"), settings(max_channel_name=5))
        assert response.text == "channel name is 6 characters, at most 5 allowed"


class TestRFC6455Section4_2_2_SendingTheServersOpeningHandshake:
    def test_accept_is_sha1_of_key_and_guid(self) -> None:
        # The example of section 1.3.
        session = Session(SETTINGS, 0.0)
        actions = session.receive_data(upgrade_request(), 0.0)
        assert isinstance(actions[0], SendBytes)
        head = actions[0].data
        assert head.startswith(b"HTTP/1.1 101 ")
        assert head.endswith(b"\r\n\r\n")
        lines = head.lower().split(b"\r\n")
        assert b"sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=" in lines
        expected = base64.b64encode(hashlib.sha1(b"dGhlIHNhbXBsZSBub25jZQ==" + GUID).digest())
        assert expected == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert b"upgrade: websocket" in lines
        assert b"connection: upgrade" in lines

    def test_subscribe_comes_right_after_the_101(self) -> None:
        actions = WsClient().connect("/room.7")
        assert [type(a) for a in actions] == [SendBytes, Subscribe]

    def test_permessage_deflate_is_declined(self) -> None:
        client = WsClient()
        actions = client.connect(extensions=[PerMessageDeflate()])
        assert isinstance(actions[0], SendBytes)
        assert b"sec-websocket-extensions" not in actions[0].data.lower()
        (accept,) = client.take_events()
        assert isinstance(accept, AcceptConnection)
        assert accept.extensions == []
        # Frames with RSV1 (compressed) are then a protocol error, see test_websocket.

    def test_no_subprotocol_is_selected(self) -> None:
        client = WsClient()
        actions = client.connect(subprotocols=["chat"])
        assert b"sec-websocket-protocol" not in actions[0].data.lower()  # type: ignore[union-attr]

    def test_frames_sent_with_the_request_are_processed(self) -> None:
        other = WsClient()  # an open client, only to encode a frame
        other.connect()
        frame = other.ws.send(TextMessage("early"))
        actions = WsClient().connect(after=frame)
        assert actions[1:] == [Subscribe("news"), Publish("news", b"early", True)]

    def test_request_then_eof(self) -> None:
        session = Session(SETTINGS, 0.0)
        data = upgrade_request()
        assert len(session.receive_data(data, 0.0)) == 2
        assert session.receive_data(b"", 0.0) == [CloseConnection(Ended.PEER_CLOSED)]
        assert session.channel == "news"  # kept, so the runtime can unsubscribe

    def test_handshake_byte_by_byte(self) -> None:
        session = Session(SETTINGS, 0.0)
        data = upgrade_request()
        actions = []
        for i in range(len(data)):
            actions += session.receive_data(data[i : i + 1], 0.0)
        assert [type(a) for a in actions] == [SendBytes, Subscribe]
