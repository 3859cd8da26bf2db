"""Every frame a client sends is paid for, and nothing stays unfinished for ever.

A frame costs the server a parse whatever it carries, so frames that bring no message
(empty fragments, pings, unsolicited pongs) must end with a close when they come as a
flood: a message may come in at most ``max_message_frames`` frames, pings and unsolicited
pongs draw on a token bucket (``max_control_frames_per_second``, ``control_frame_burst``),
and a frame or message still unfinished ``message_timeout`` after its first byte closes
the connection. All on the session's simulated clock.
"""

from __future__ import annotations

from wsproto.events import BytesMessage, Ping, Pong, TextMessage
from wsproto.events import CloseConnection as WsClose
from wsproto.frame_protocol import Opcode

from ringcast.server.protocol import (
    CloseConnection,
    Publish,
    Refusal,
    Refused,
    SendBytes,
    SessionState,
)
from tests.support.rawws import frame

from .harness import WsClient, open_client, refusals, settings

BUDGET = settings(max_control_frames_per_second=1.0, control_frame_burst=3, ping_interval=0.0)
TEXT, BINARY, CONTINUATION = Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION
PING, PONG = Opcode.PING, Opcode.PONG


def assert_refused(client: WsClient, actions: list[object], refusal: Refusal, reason: str) -> None:
    """Closed with 1008 and ``reason`` at once, after one Refused."""
    assert refusals(actions) == [Refused(refusal, 1008, reason)]  # type: ignore[arg-type]
    assert isinstance(actions[-1], CloseConnection)
    assert client.session.state is SessionState.CLOSED
    (close,) = [e for e in client.events if isinstance(e, WsClose)]
    assert (close.code, close.reason) == (1008, reason)


class TestControlFrameBudget:
    REASON = "control frame rate limit exceeded"

    def test_a_burst_of_pings_is_answered_then_the_next_closes(self) -> None:
        client = open_client(BUDGET)
        for _ in range(3):
            assert [type(a) for a in client.send(Ping(b"p"))] == [SendBytes]
        assert_refused(client, client.send(Ping(b"p")), Refusal.CONTROL_FLOOD, self.REASON)

    def test_unsolicited_pongs_draw_on_the_same_budget(self) -> None:
        client = open_client(BUDGET)
        client.send(Ping(b"1"))
        assert client.send(Pong(b"2")) == []
        assert client.send(Pong(b"3")) == []
        assert_refused(client, client.send(Pong(b"4")), Refusal.CONTROL_FLOOD, self.REASON)

    def test_a_flood_in_one_read_is_cut_at_the_budget(self) -> None:
        client = open_client(BUDGET)
        actions = client.feed(frame(PONG, b"") * 1000)
        assert_refused(client, actions, Refusal.CONTROL_FLOOD, self.REASON)

    def test_the_budget_refills_on_the_session_clock(self) -> None:
        client = open_client(BUDGET)
        for second in range(200):  # one ping a second, for ever
            assert [type(a) for a in client.send(Ping(b"p"), now=float(second))] == [SendBytes]

    def test_the_pong_answering_our_ping_is_free(self) -> None:
        client = open_client(settings(max_control_frames_per_second=0.001,
                                      control_frame_burst=1, ping_interval=20.0))
        for round_ in range(1, 50):
            now = 20.0 * round_
            client.tick(now)
            (ping,) = client.take_events()
            assert isinstance(ping, Ping)
            assert client.send(ping.response(), now=now + 1) == []
        assert client.session.state is SessionState.OPEN

    def test_a_second_pong_to_one_ping_is_not_free(self) -> None:
        client = open_client(settings(max_control_frames_per_second=0.001,
                                      control_frame_burst=1, ping_interval=20.0))
        client.tick(20.0)
        (ping,) = client.take_events()
        assert client.send(ping.response(), now=21.0) == []  # the answer: free
        assert client.send(Pong(b"again"), now=21.5) == []  # the one token
        actions = client.send(Pong(b"and again"), now=22.0)
        assert_refused(client, actions, Refusal.CONTROL_FLOOD, self.REASON)

    def test_data_messages_do_not_draw_on_it(self) -> None:
        client = open_client(BUDGET)
        for i in range(50):
            assert client.send(TextMessage(str(i))) == [Publish("news", str(i).encode(), True)]

    def test_zero_turns_it_off(self) -> None:
        client = open_client(settings(max_control_frames_per_second=0.0, ping_interval=0.0))
        assert len(client.feed(frame(PING, b"p") * 500)) == 500


class TestMessageFrameBudget:
    def test_a_flood_of_empty_fragments_closes_at_the_limit(self) -> None:
        client = open_client(settings(max_message_frames=16))
        data = frame(BINARY, b"", fin=False)
        data += frame(CONTINUATION, b"", fin=False) * 100
        reason = "message in more than 16 frames"
        assert_refused(client, client.feed(data), Refusal.TOO_MANY_FRAMES, reason)

    def test_a_message_in_as_many_frames_as_allowed_is_published(self) -> None:
        client = open_client(settings(max_message_frames=16))
        data = frame(TEXT, b"a", fin=False)
        data += frame(CONTINUATION, b"b", fin=False) * 14 + frame(CONTINUATION, b"c")
        assert client.feed(data) == [Publish("news", b"a" + b"b" * 14 + b"c", True)]

    def test_the_default_allows_a_thousand_fragments(self) -> None:
        client = open_client()
        data = frame(BINARY, b"x", fin=False)
        data += frame(CONTINUATION, b"x", fin=False) * 999
        assert client.feed(data + frame(CONTINUATION, b"")) == [
            Publish("news", b"x" * 1000, False)
        ]


class TestMessageTimeout:
    REASON = "message not completed within 10 seconds"
    TIMEOUT = settings(message_timeout=10.0, ping_interval=0.0)

    def test_an_unfinished_message_is_closed_at_the_timeout(self) -> None:
        client = open_client(self.TIMEOUT)
        client.send(BytesMessage(b"a", message_finished=False), now=100.0)
        assert client.session.next_deadline() == 110.0
        assert client.tick(109.9) == []
        client.send(BytesMessage(b"b", message_finished=False), now=109.9)  # no extension
        assert client.session.next_deadline() == 110.0
        assert_refused(client, client.tick(110.0), Refusal.MESSAGE_TIMEOUT, self.REASON)

    def test_a_message_completed_in_time_is_published(self) -> None:
        client = open_client(self.TIMEOUT)
        client.send(BytesMessage(b"a", message_finished=False), now=0.0)
        assert client.send(BytesMessage(b"b"), now=9.0) == [Publish("news", b"ab", False)]
        assert client.session.next_deadline() is None
        assert client.tick(100.0) == []

    def test_each_message_has_its_own_time(self) -> None:
        # A publisher streaming messages split anywhere is never closed.
        client = open_client(self.TIMEOUT)
        stream = frame(BINARY, b"x" * 100) * 1000
        published = 0
        for second in range(0, len(stream) // 37):
            piece = stream[second * 37 : second * 37 + 37]
            actions = client.feed(piece, now=float(second))
            published += len([a for a in actions if isinstance(a, Publish)])
            assert client.tick(float(second)) == []
        assert published > 300
        assert client.session.state is SessionState.OPEN

    def test_control_frames_do_not_extend_a_message(self) -> None:
        client = open_client(settings(message_timeout=10.0, ping_interval=0.0,
                                      max_control_frames_per_second=0.0))
        client.send(BytesMessage(b"a", message_finished=False), now=0.0)
        for second in range(1, 10):
            client.send(Ping(b"still here"), now=float(second))
        assert_refused(client, client.tick(10.0), Refusal.MESSAGE_TIMEOUT, self.REASON)

    def test_a_frame_header_alone_counts_too(self) -> None:
        client = open_client(self.TIMEOUT)
        client.feed(frame(PING, b"0123456789")[:4], now=5.0)  # half a ping
        assert client.session.next_deadline() == 15.0
        assert_refused(client, client.tick(15.0), Refusal.MESSAGE_TIMEOUT, self.REASON)

    def test_keepalive_and_the_timeout_run_side_by_side(self) -> None:
        client = open_client(settings(message_timeout=10.0, ping_interval=4.0, ping_timeout=100.0))
        client.send(BytesMessage(b"a", message_finished=False), now=1.0)
        assert client.session.next_deadline() == 4.0  # the ping comes first
        client.tick(4.0)
        assert client.session.next_deadline() == 11.0  # then the message's end
        assert_refused(client, client.tick(11.0), Refusal.MESSAGE_TIMEOUT, self.REASON)

    def test_no_timer_while_closing(self) -> None:
        client = open_client(self.TIMEOUT)
        client.send(BytesMessage(b"a", message_finished=False), now=0.0)
        client.close(1001, "going away", now=1.0)
        assert client.session.next_deadline() == 1.0 + 5.0  # close_timeout only
        assert refusals(client.tick(6.0)) == []
