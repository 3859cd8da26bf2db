"""The open WebSocket, RFC 6455 sections 5 to 8 and 10.4, driven by a wsproto client."""

from __future__ import annotations

import pytest
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, Ping, Pong, TextMessage
from wsproto.events import CloseConnection as WsClose
from wsproto.frame_protocol import Opcode

from ringcast.server.protocol import (
    CloseConnection,
    Ended,
    Publish,
    Refusal,
    Refused,
    SendBytes,
    SessionState,
    websocket_phase,
)
from ringcast.server.protocol.websocket_phase import WebSocketPhase
from tests.support.rawws import LENGTH_16, RSV1, close_payload, frame

from .harness import WsClient, closes, open_client, settings, without_bytes

TEXT, BINARY, CONTINUATION = Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION
CLOSE, PING = Opcode.CLOSE, Opcode.PING


def assert_failed(client: WsClient, code: int, reason: str | None = None) -> None:
    """The server refused the client: it emitted one Refused with ``code``, sent a close
    frame with that code and dropped the connection at once."""
    assert closes(client.actions)
    refusals = [a for a in client.actions if isinstance(a, Refused)]
    assert [r.code for r in refusals] == [code]
    if reason is not None:
        assert refusals[0].detail == reason
    assert client.session.state is SessionState.CLOSED
    closes_seen = [e for e in client.events if isinstance(e, WsClose)]
    assert len(closes_seen) == 1
    assert closes_seen[0].code == code
    if reason is not None:
        assert closes_seen[0].reason == reason


class TestRFC6455Section5_6_DataFrames:
    def test_text_message_is_published_as_utf8_text(self) -> None:
        client = open_client()
        assert client.send(TextMessage("héllo")) == [Publish("news", "héllo".encode(), True)]

    def test_binary_message_is_published_as_binary(self) -> None:
        client = open_client()
        assert client.send(BytesMessage(b"\x00\xff")) == [Publish("news", b"\x00\xff", False)]

    @pytest.mark.parametrize(
        ("event", "text"), [(TextMessage(""), True), (BytesMessage(b""), False)]
    )
    def test_empty_messages_are_valid(self, event: TextMessage | BytesMessage, text: bool) -> None:
        client = open_client()
        assert client.send(event) == [Publish("news", b"", text)]

    def test_several_messages_in_one_read_keep_their_order(self) -> None:
        client = open_client()
        data = b"".join(client.ws.send(TextMessage(str(i))) for i in range(5))
        assert client.feed(data) == [Publish("news", str(i).encode(), True) for i in range(5)]

    def test_byte_by_byte(self) -> None:
        client = open_client()
        data = client.ws.send(TextMessage("é" * 100)) + client.ws.send(BytesMessage(b"x" * 200))
        actions = []
        for i in range(len(data)):
            actions += client.feed(data[i : i + 1])
        assert actions == [
            Publish("news", "é".encode() * 100, True),
            Publish("news", b"x" * 200, False),
        ]

    def test_the_channel_is_the_subscribed_one(self) -> None:
        client = open_client(target="/user:42")
        assert client.send(TextMessage("x")) == [Publish("user:42", b"x", True)]

    def test_publishing_disabled_closes_with_1008(self) -> None:
        client = open_client(settings(client_publish=False))
        actions = client.send(BytesMessage(b"x"))
        assert without_bytes(actions) == [
            Refused(Refusal.PUBLISH_DISABLED, 1008, "publishing is disabled on this server"),
            CloseConnection(Ended.REFUSED),
        ]
        assert_failed(client, 1008, "publishing is disabled on this server")


class TestRFC6455Section5_4_Fragmentation:
    def test_fragments_are_joined_into_one_message(self) -> None:
        client = open_client()
        assert client.send(BytesMessage(b"ab", message_finished=False)) == []
        assert client.send(BytesMessage(b"cd", message_finished=False)) == []
        assert client.send(BytesMessage(b"ef")) == [Publish("news", b"abcdef", False)]

    def test_text_fragments_may_split_a_character(self) -> None:
        client = open_client()
        encoded = "aé".encode()
        frames = frame(TEXT, encoded[:2], fin=False) + frame(
            CONTINUATION, encoded[2:]
        )
        assert client.feed(frames) == [Publish("news", encoded, True)]

    def test_control_frames_may_come_between_fragments(self) -> None:
        client = open_client()
        data = (
            frame(BINARY, b"ab", fin=False)
            + frame(PING, b"p")
            + frame(CONTINUATION, b"cd")
        )
        actions = client.feed(data)
        assert [type(a) for a in actions] == [SendBytes, Publish]
        assert actions[1] == Publish("news", b"abcd", False)
        assert client.take_events() == [Pong(b"p")]

    def test_empty_fragments(self) -> None:
        client = open_client()
        data = frame(TEXT, b"", fin=False) + frame(CONTINUATION, b"")
        assert client.feed(data) == [Publish("news", b"", True)]

    def test_continuation_without_a_start_is_a_protocol_error(self) -> None:
        client = open_client()
        client.feed(frame(CONTINUATION, b"x"))
        assert_failed(client, 1002)

    def test_new_message_inside_a_fragmented_one_is_a_protocol_error(self) -> None:
        client = open_client()
        client.feed(frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"))
        assert_failed(client, 1002)


class TestRFC6455Section5_1_Masking:
    def test_an_unmasked_client_frame_is_a_protocol_error(self) -> None:
        client = open_client()
        assert without_bytes(client.feed(frame(TEXT, b"x", masked=False))) == [
            Refused(Refusal.PROTOCOL_ERROR, 1002, "server received unexpected unmasked frame"),
            CloseConnection(Ended.REFUSED),
        ]
        assert_failed(client, 1002)


class TestRFC6455Section5_2_ReservedBitsAndOpcodes:
    def test_rsv1_without_a_negotiated_extension(self) -> None:
        # What a permessage-deflate client that ignored the declined offer would send.
        client = open_client()
        client.feed(frame(TEXT, b"x", rsv=RSV1))
        assert_failed(client, 1002)

    @pytest.mark.parametrize("opcode", [3, 7, 0xB, 0xF])
    def test_reserved_opcodes(self, opcode: int) -> None:
        client = open_client()
        client.feed(frame(opcode, b"x"))
        assert_failed(client, 1002)

    def test_length_must_use_the_shortest_encoding(self) -> None:
        client = open_client()
        client.feed(frame(BINARY, b"hello", encoding=LENGTH_16))
        assert_failed(client, 1002)


class TestRFC6455Section5_5_ControlFrames:
    def test_fragmented_control_frame(self) -> None:
        client = open_client()
        client.feed(frame(PING, b"x", fin=False))
        assert_failed(client, 1002)

    def test_control_frame_over_125_bytes(self) -> None:
        client = open_client()
        client.feed(frame(PING, b"x" * 126))
        assert_failed(client, 1002)


class TestRFC6455Section5_5_2_Ping:
    def test_ping_is_answered_with_a_pong_of_the_same_payload(self) -> None:
        client = open_client()
        actions = client.send(Ping(b"hello"))
        assert [type(a) for a in actions] == [SendBytes]
        assert client.take_events() == [Pong(b"hello")]
        assert client.session.state is SessionState.OPEN

    def test_server_pings_every_ping_interval(self) -> None:
        client = open_client(settings(ping_interval=20.0, ping_timeout=10.0))
        assert client.session.next_deadline() == 20.0
        assert client.tick(19.9) == []
        actions = client.tick(20.0)
        assert [type(a) for a in actions] == [SendBytes]
        (ping,) = client.take_events()
        assert isinstance(ping, Ping)
        assert client.session.next_deadline() == 30.0  # the pong deadline
        client.send(ping.response(), now=21.0)
        assert client.session.next_deadline() == 40.0  # the next ping
        client.tick(40.0)
        (second,) = client.take_events()
        assert isinstance(second, Ping)
        assert second.payload != ping.payload

    def test_no_pong_in_time_closes_with_1011(self) -> None:
        client = open_client(settings(ping_interval=20.0, ping_timeout=10.0, close_timeout=5.0))
        client.tick(20.0)
        client.take_events()
        assert client.tick(29.9) == []
        actions = client.tick(30.0)
        assert [type(a) for a in actions] == [SendBytes]
        (close,) = client.take_events()
        assert isinstance(close, WsClose)
        assert (close.code, close.reason) == (1011, "keepalive ping timeout")
        assert client.session.state is SessionState.CLOSING
        assert client.session.next_deadline() == 35.0
        assert client.tick(35.0) == [CloseConnection(Ended.PING_TIMEOUT)]
        assert client.session.next_deadline() is None  # closed

    def test_any_data_counts_as_an_answer(self) -> None:
        client = open_client(settings(ping_interval=20.0, ping_timeout=10.0))
        client.tick(20.0)
        assert client.send(TextMessage("still here"), now=25.0) == [
            Publish("news", b"still here", True)
        ]
        assert client.tick(30.0) == []
        assert client.session.state is SessionState.OPEN

    def test_ping_interval_zero_turns_keepalive_off(self) -> None:
        client = open_client(settings(ping_interval=0.0))
        assert client.session.next_deadline() is None
        assert client.tick(1e9) == []


class TestRFC6455Section5_5_3_Pong:
    def test_unsolicited_pong_is_ignored(self) -> None:
        client = open_client()
        assert client.send(Pong(b"x")) == []
        assert client.session.state is SessionState.OPEN


class TestRFC6455Section8_1_HandlingErrorsInUTF8:
    def test_invalid_utf8_text_closes_with_1007(self) -> None:
        client = open_client()
        client.feed(frame(TEXT, b"\xff"))
        assert_failed(client, 1007)

    def test_invalid_utf8_across_fragments(self) -> None:
        client = open_client()
        client.feed(frame(TEXT, b"\xc3", fin=False))
        assert client.session.state is SessionState.OPEN
        client.feed(frame(CONTINUATION, b"("))
        assert_failed(client, 1007)

    def test_truncated_character_at_the_end_of_the_message(self) -> None:
        client = open_client()
        client.feed(frame(TEXT, b"a\xc3"))
        assert_failed(client, 1007)

    def test_binary_messages_are_not_checked(self) -> None:
        client = open_client()
        assert client.feed(frame(BINARY, b"\xff")) == [Publish("news", b"\xff", False)]


class TestRFC6455Section10_4_MessageSizeLimit:
    def test_a_message_at_the_limit_is_accepted(self) -> None:
        client = open_client(settings(max_message_size=100))
        assert client.send(BytesMessage(b"x" * 100)) == [Publish("news", b"x" * 100, False)]

    def test_one_byte_over_closes_with_1009(self) -> None:
        client = open_client(settings(max_message_size=100))
        assert without_bytes(client.send(BytesMessage(b"x" * 101))) == [
            Refused(
                Refusal.MESSAGE_TOO_BIG, 1009, "message is at least 101 bytes, at most 100 allowed"
            ),
            CloseConnection(Ended.REFUSED),
        ]
        assert_failed(client, 1009, "message is at least 101 bytes, at most 100 allowed")

    def test_the_limit_counts_bytes_not_characters(self) -> None:
        client = open_client(settings(max_message_size=100))
        client.send(TextMessage("é" * 51))  # 102 bytes
        assert_failed(client, 1009)

    def test_fragments_count_together(self) -> None:
        client = open_client(settings(max_message_size=100))
        assert client.send(BytesMessage(b"x" * 60, message_finished=False)) == []
        client.send(BytesMessage(b"x" * 60))
        assert_failed(client, 1009, "message is at least 120 bytes, at most 100 allowed")

    def test_a_huge_announced_length_closes_before_any_payload(self) -> None:
        client = open_client(settings(max_message_size=1 << 20))
        actions = client.feed(frame(BINARY, length=2**62))  # header only
        assert [type(a) for a in without_bytes(actions)] == [Refused, CloseConnection]
        assert_failed(client, 1009)

    def test_a_huge_announced_length_split_in_its_header(self) -> None:
        client = open_client(settings(max_message_size=1 << 20))
        header = frame(BINARY, length=2**40)
        assert client.feed(header[:3]) == []
        client.feed(header[3:])
        assert_failed(client, 1009)

    def test_messages_before_the_big_one_are_published_first(self) -> None:
        client = open_client(settings(max_message_size=100))
        data = frame(TEXT, b"first") + frame(BINARY, length=1000) + b"x" * 50
        actions = client.feed(data)
        assert actions[0] == Publish("news", b"first", True)
        assert [type(a) for a in without_bytes(actions[1:])] == [Refused, CloseConnection]
        assert_failed(client, 1009)

    def test_control_frames_do_not_count(self) -> None:
        client = open_client(settings(max_message_size=10))
        data = frame(TEXT, b"x" * 10, fin=False) + frame(PING, b"p" * 100)
        client.feed(data + frame(CONTINUATION, b""))
        assert client.session.state is SessionState.OPEN
        assert client.actions[-1] == Publish("news", b"x" * 10, True)

    def test_messages_are_counted_separately(self) -> None:
        client = open_client(settings(max_message_size=10))
        for _ in range(3):
            assert client.send(BytesMessage(b"y" * 10)) == [Publish("news", b"y" * 10, False)]


class TestRFC6455Section7_1_2_PeerInitiatedClose:
    @pytest.mark.parametrize(
        ("code", "reason"), [(1000, "bye"), (1001, ""), (3000, "app"), (4999, "private")]
    )
    def test_close_is_echoed_then_the_server_closes_tcp(self, code: int, reason: str) -> None:
        client = open_client()
        actions = client.send(WsClose(code, reason))
        assert [type(a) for a in actions] == [SendBytes, CloseConnection]
        (echo,) = client.take_events()
        assert isinstance(echo, WsClose)
        assert (echo.code, echo.reason) == (code, reason)
        assert client.ws.state is ConnectionState.CLOSED
        assert client.session.state is SessionState.CLOSED

    def test_close_without_a_code_is_echoed_without_a_code(self) -> None:
        client = open_client()
        actions = client.feed(frame(CLOSE, b""))
        assert actions[0] == SendBytes(b"\x88\x00")
        assert actions[1:] == [CloseConnection(Ended.CLIENT_CLOSE)]

    def test_a_message_in_progress_is_dropped(self) -> None:
        client = open_client()
        client.send(BytesMessage(b"half", message_finished=False))
        assert without_bytes(client.send(WsClose(1000))) == [CloseConnection(Ended.CLIENT_CLOSE)]

    def test_nothing_after_closed(self) -> None:
        client = open_client()
        client.send(WsClose(1000))
        assert client.session.receive_data(frame(TEXT, b"late"), 1.0) == []
        assert client.session.tick(1e9) == []
        assert client.session.close(1001, "", 1.0) == []
        assert client.session.next_deadline() is None


class TestRFC6455Section7_1_3_ServerInitiatedClose:
    def test_going_away(self) -> None:
        client = open_client()
        actions = client.close(1001, "going away", now=3.0)
        assert [type(a) for a in actions] == [SendBytes]
        (close,) = client.take_events()
        assert isinstance(close, WsClose)
        assert (close.code, close.reason) == (1001, "going away")
        assert client.session.state is SessionState.CLOSING
        assert client.session.next_deadline() == 3.0 + 5.0

    def test_the_peers_close_ends_it(self) -> None:
        client = open_client()
        client.close(3008, "slow")
        assert client.send(WsClose(3008, "slow")) == [CloseConnection(Ended.SLOW_CONSUMER)]
        assert client.session.state is SessionState.CLOSED

    def test_data_after_our_close_is_discarded(self) -> None:
        client = open_client()
        client.close(1001, "")
        client.take_events()
        data = (
            frame(TEXT, b"ignored")
            + frame(PING, b"unanswered")
            + frame(BINARY, length=10**9)[:4]
        )
        assert client.feed(data) == []
        assert client.session.state is SessionState.CLOSING

    def test_close_timeout(self) -> None:
        client = open_client(settings(close_timeout=5.0))
        client.close(1001, "", now=10.0)
        assert client.tick(14.9) == []
        assert client.tick(15.0) == [CloseConnection(Ended.SHUTDOWN)]

    def test_a_protocol_error_while_closing_just_closes(self) -> None:
        client = open_client()
        client.close(1001, "")
        assert client.feed(frame(TEXT, b"x", masked=False)) == [CloseConnection(Ended.SHUTDOWN)]

    def test_closing_twice_sends_one_close_frame(self) -> None:
        client = open_client()
        client.close(1001, "")
        assert client.close(1000, "") == []

    def test_long_reasons_are_truncated_to_fit(self) -> None:
        client = open_client()
        client.close(1001, "é" * 100)
        (close,) = client.take_events()
        assert isinstance(close, WsClose)
        assert close.reason == "é" * 61  # 123 bytes at most, whole characters

    @pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2000, 5000])
    def test_codes_an_endpoint_may_not_send_are_refused(self, code: int) -> None:
        client = open_client()
        with pytest.raises(ValueError, match=f"close code is {code}"):
            client.close(code, "")

    def test_in_the_http_phase_close_just_closes(self) -> None:
        client = WsClient()
        assert client.close(1001, "going away") == [CloseConnection(Ended.SHUTDOWN)]
        assert client.session.state is SessionState.CLOSED


class TestRFC6455Section7_4_1_CloseCodes:
    @pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2999, 5000])
    def test_invalid_close_codes_from_the_peer(self, code: int) -> None:
        client = open_client()
        client.feed(frame(CLOSE, close_payload(code)))
        assert_failed(client, 1002)

    def test_one_byte_close_payload(self) -> None:
        client = open_client()
        client.feed(frame(CLOSE, b"\x03"))
        assert_failed(client, 1002)

    def test_invalid_utf8_close_reason(self) -> None:
        client = open_client()
        client.feed(frame(CLOSE, close_payload(1000, b"\xff")))
        assert_failed(client, 1007)


class TestRFC6455Section7_1_5_AbnormalClosure:
    """End of file without a close frame, in every state."""

    def test_eof_before_anything(self) -> None:
        client = WsClient()
        assert client.feed(b"") == [CloseConnection(Ended.PEER_CLOSED)]

    def test_eof_in_the_middle_of_a_request(self) -> None:
        client = WsClient()
        client.feed(b"GET /news HTTP/1.1\r\nHo")
        assert client.feed(b"") == [CloseConnection(Ended.PEER_CLOSED)]

    def test_eof_when_open(self) -> None:
        client = open_client()
        assert client.feed(b"") == [CloseConnection(Ended.PEER_CLOSED)]
        assert client.session.state is SessionState.CLOSED

    def test_eof_in_the_middle_of_a_message(self) -> None:
        client = open_client()
        client.send(BytesMessage(b"half", message_finished=False))
        assert client.feed(b"") == [CloseConnection(Ended.PEER_CLOSED)]

    def test_eof_when_closing(self) -> None:
        client = open_client()
        client.close(1001, "")
        assert client.feed(b"") == [CloseConnection(Ended.SHUTDOWN)]

    def test_eof_when_closed(self) -> None:
        client = open_client()
        client.feed(b"")
        assert client.feed(b"") == []


class TestInternalErrors:
    """An unexpected exception costs one connection, with no details sent (1011)."""

    INTERNAL_ERROR_CLOSE = SendBytes(b"\x88\x02\x03\xf3")

    @staticmethod
    def explode(*args: object) -> None:
        raise KeyError("secret detail")

    def test_while_reading_a_message(self, monkeypatch: pytest.MonkeyPatch) -> None:
        client = open_client()
        monkeypatch.setattr(WebSocketPhase, "_handle", self.explode)
        assert client.send(TextMessage("x")) == [self.INTERNAL_ERROR_CLOSE,
                                                 CloseConnection(Ended.INTERNAL_ERROR)]
        (close,) = client.take_events()
        assert isinstance(close, WsClose)
        assert (close.code, close.reason) == (1011, "")

    def test_while_closing_the_server_just_closes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        client = open_client()
        client.close(1001, "")
        monkeypatch.setattr(WebSocketPhase, "_receive_while_closing", self.explode)
        assert client.feed(frame(CLOSE, b"")) == [CloseConnection(Ended.INTERNAL_ERROR)]

    def test_in_a_timer(self, monkeypatch: pytest.MonkeyPatch) -> None:
        client = open_client()
        monkeypatch.setattr(websocket_phase, "_pack_ping", self.explode)
        assert client.tick(1e9) == [self.INTERNAL_ERROR_CLOSE,
                                    CloseConnection(Ended.INTERNAL_ERROR)]

    def test_in_close(self, monkeypatch: pytest.MonkeyPatch) -> None:
        client = open_client()
        monkeypatch.setattr(WebSocketPhase, "close", self.explode)
        assert client.close(1001, "") == [self.INTERNAL_ERROR_CLOSE,
                                          CloseConnection(Ended.INTERNAL_ERROR)]

    def test_after_the_close_nothing_is_added(self, monkeypatch: pytest.MonkeyPatch) -> None:
        client = open_client()
        original = WebSocketPhase.receive_data

        def close_then_explode(self: WebSocketPhase, data: bytes, now: float, out: list) -> None:  # type: ignore[type-arg]
            original(self, data, now, out)
            raise KeyError("after the end")

        monkeypatch.setattr(WebSocketPhase, "receive_data", close_then_explode)
        assert without_bytes(client.send(WsClose(1000))) == [CloseConnection(Ended.CLIENT_CLOSE)]


class TestWhichRuleComesFirst:
    """When one frame breaks several rules: the frame rules (1002), then the size limit
    (1009, on the header), then UTF-8 (1007), then the server's own policy (1008, at the
    first payload byte, where wsproto reported the start of a message)."""

    def test_invalid_utf8_before_publishing_disabled(self) -> None:
        client = open_client(settings(client_publish=False))
        client.feed(frame(TEXT, b"\xff"))
        assert_failed(client, 1007)

    def test_too_big_before_publishing_disabled(self) -> None:
        client = open_client(settings(client_publish=False, max_message_size=10))
        client.feed(frame(BINARY, length=11))
        assert_failed(client, 1009)

    def test_a_protocol_error_before_too_big(self) -> None:
        client = open_client(settings(max_message_size=10))
        client.feed(frame(BINARY, b"x" * 11, rsv=RSV1))
        assert_failed(client, 1002)

    def test_the_policy_is_checked_at_the_first_payload_byte(self) -> None:
        client = open_client(settings(client_publish=False))
        data = frame(BINARY, b"hello")
        assert client.feed(data[:6]) == []  # the header alone
        assert client.session.state is SessionState.OPEN
        client.feed(data[6:7])
        assert_failed(client, 1008)

    def test_an_empty_first_frame_is_checked_at_its_header(self) -> None:
        client = open_client(settings(client_publish=False))
        client.feed(frame(TEXT, b"", fin=False))
        assert_failed(client, 1008)
