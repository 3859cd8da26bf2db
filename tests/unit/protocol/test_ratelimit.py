"""The inbound message rate limit: a token bucket per connection, on simulated time."""

from __future__ import annotations

import pytest
from wsproto.events import BytesMessage, Ping, TextMessage
from wsproto.events import CloseConnection as WsClose

from ringcast.server.protocol import (
    CloseConnection,
    Publish,
    Refusal,
    Refused,
    SendBytes,
    SessionState,
)
from ringcast.server.protocol.ratelimit import TokenBucket
from tests.support.rawws import frame

from .harness import WsClient, open_client, refusals, settings

LIMITED = settings(max_messages_per_second=2.0, message_burst=3, ping_interval=0.0)
TEXT, CONTINUATION = 1, 0


def assert_rate_limited(client: WsClient, actions: list[object]) -> None:
    reason = "message rate limit exceeded"
    assert refusals(actions) == [Refused(Refusal.RATE_LIMITED, 1008, reason)]  # type: ignore[arg-type]
    assert isinstance(actions[-1], CloseConnection)
    assert client.session.state is SessionState.CLOSED
    (close,) = [e for e in client.events if isinstance(e, WsClose)]
    assert (close.code, close.reason) == (1008, reason)


class TestTokenBucket:
    def test_starts_full_then_refills_at_the_rate(self) -> None:
        bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
        assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
        assert not bucket.take(0.49)
        assert bucket.take(0.5)  # one token per 0.5 s
        assert not bucket.take(0.5)

    def test_never_holds_more_than_the_burst(self) -> None:
        bucket = TokenBucket(rate=100.0, burst=2, now=0.0)
        assert [bucket.take(1000.0) for _ in range(3)] == [True, True, False]

    def test_a_clock_going_backwards_refills_nothing(self) -> None:
        bucket = TokenBucket(rate=1.0, burst=1, now=10.0)
        assert bucket.take(10.0)
        assert not bucket.take(5.0)
        assert not bucket.take(10.5)
        assert bucket.take(11.0)

    def test_fractional_rates(self) -> None:
        bucket = TokenBucket(rate=0.1, burst=1, now=0.0)
        assert bucket.take(0.0)
        assert not bucket.take(9.9)
        assert bucket.take(10.0)


class TestMessageRateLimit:
    def test_a_burst_passes_then_the_next_message_closes_with_1008(self) -> None:
        client = open_client(LIMITED)
        for i in range(3):
            assert client.send(TextMessage(str(i))) == [Publish("news", str(i).encode(), True)]
        assert_rate_limited(client, client.send(TextMessage("too many")))

    def test_the_rate_refills_on_the_session_clock(self) -> None:
        client = open_client(LIMITED)
        for i in range(3):
            client.send(TextMessage("x"), now=0.0 + i * 0.001)
        assert client.send(TextMessage("x"), now=0.6) == [Publish("news", b"x", True)]
        assert client.send(TextMessage("x"), now=1.1) == [Publish("news", b"x", True)]
        assert_rate_limited(client, client.send(TextMessage("x"), now=1.2))

    def test_a_steady_sender_under_the_rate_is_never_closed(self) -> None:
        client = open_client(LIMITED)
        for i in range(200):
            assert client.send(BytesMessage(b"x"), now=i * 0.5) == [Publish("news", b"x", False)]

    def test_pings_are_not_messages(self) -> None:
        # They are paid from the control-frame budget (test_frame_budget.py).
        client = open_client(LIMITED)
        for _ in range(5):
            assert [type(a) for a in client.send(Ping(b"p"))] == [SendBytes]
        for i in range(3):
            assert client.send(TextMessage(str(i))) == [Publish("news", str(i).encode(), True)]

    def test_a_fragmented_message_counts_once(self) -> None:
        client = open_client(settings(max_messages_per_second=1.0, message_burst=1))
        data = (
            frame(TEXT, b"a", fin=False)
            + frame(CONTINUATION, b"b", fin=False)
            + frame(CONTINUATION, b"c")
        )
        assert client.feed(data) == [Publish("news", b"abc", True)]

    def test_many_messages_in_one_read_are_cut_at_the_limit(self) -> None:
        client = open_client(LIMITED)
        data = b"".join(frame(TEXT, bytes([48 + i])) for i in range(6))
        actions = client.feed(data)
        published = [a for a in actions if isinstance(a, Publish)]
        assert [p.payload for p in published] == [b"0", b"1", b"2"]
        assert_rate_limited(client, actions)

    def test_off_by_default(self) -> None:
        client = open_client()
        for _ in range(500):
            assert client.send(TextMessage("x")) == [Publish("news", b"x", True)]

    @pytest.mark.parametrize("burst", [1, 10])
    def test_the_burst_is_the_bucket_size(self, burst: int) -> None:
        client = open_client(settings(max_messages_per_second=1.0, message_burst=burst))
        for _ in range(burst):
            assert client.send(TextMessage("x")) == [Publish("news", b"x", True)]
        assert refusals(client.send(TextMessage("x")))[0].reason is Refusal.RATE_LIMITED
