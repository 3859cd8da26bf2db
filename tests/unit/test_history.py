"""ringcast.server.history: what a channel's history keeps, for how long, within which
budget, and what a resume from a position gets (docs/history.md, "Positions")."""

from __future__ import annotations

import pytest

from ringcast.server.history import ENTRY_OVERHEAD, NO_HISTORY, History, Position


def kept(channels: tuple[str, ...] = ("news", "chat.*"), *, size: int = 100, ttl: float = 0,
         max_bytes: int = 1 << 20) -> History:
    return History(channels, size=size, ttl=ttl, max_bytes=max_bytes)


def publish(history: History, channel: str, frame: bytes, now: float = 0.0) -> Position:
    position = history.next_position(channel)
    history.append(channel, position.offset, frame, now)
    return position


def test_only_the_chosen_channels_keep_history() -> None:
    history = kept()
    assert history.enabled
    assert history.wants("news") and history.wants("chat.1") and not history.wants("chat")
    assert history.position("sport") is None
    assert not kept(()).enabled


def test_offsets_count_from_one_within_an_epoch_and_a_channel() -> None:
    history = kept()
    assert history.position("news") == NO_HISTORY
    assert [publish(history, "news", b"m").offset for _ in range(3)] == [1, 2, 3]
    assert publish(history, "chat.1", b"c") == Position(history.stream("chat.1").epoch, 1)
    assert history.position("news") == Position(history.stream("news").epoch, 3)
    assert history.stream("news").epoch != history.stream("chat.1").epoch


def test_reading_positions_costs_no_memory() -> None:
    """Channel names come from clients: only a publish makes a stream."""
    history = kept()
    for n in range(10_000):
        assert history.position(f"chat.{n}") == NO_HISTORY
        assert history.since(f"chat.{n}", NO_HISTORY, 0.0) == []
        assert history.since(f"chat.{n}", Position("old", 3), 0.0) is None
    assert history.messages == 0 and not history._streams


def test_a_client_that_saw_no_history_yet_gets_every_message_of_the_epoch_begun_since(
        ) -> None:
    history = kept()
    for n in range(1, 4):
        publish(history, "news", b"m%d" % n)
    assert history.since("news", NO_HISTORY, 0.0) == [b"m1", b"m2", b"m3"]


def test_a_resume_gets_every_message_after_its_position_in_order() -> None:
    history = kept()
    epoch = history.stream("news").epoch
    for n in range(1, 6):
        publish(history, "news", b"m%d" % n)
    assert history.since("news", Position(epoch, 2), 0.0) == [b"m3", b"m4", b"m5"]
    assert history.since("news", Position(epoch, 0), 0.0) == [b"m1", b"m2", b"m3", b"m4", b"m5"]
    assert history.since("news", Position(epoch, 5), 0.0) == []


@pytest.mark.parametrize("after", [Position("another", 2), Position("EPOCH", 6),
                                   Position("EPOCH", -1)])
def test_a_position_of_another_epoch_or_beyond_the_top_cannot_be_resumed(
        after: Position) -> None:
    history = kept()
    epoch = history.stream("news").epoch
    for _ in range(5):
        publish(history, "news", b"m")
    if after.epoch == "EPOCH":
        after = Position(epoch, after.offset)
    assert history.since("news", after, 0.0) is None


def test_size_keeps_the_last_messages_of_each_channel() -> None:
    history = kept(size=3)
    epoch = history.stream("news").epoch
    for n in range(1, 6):
        publish(history, "news", b"m%d" % n)
    assert history.since("news", Position(epoch, 2), 0.0) == [b"m3", b"m4", b"m5"]
    assert history.since("news", Position(epoch, 1), 0.0) is None  # m2 was dropped
    assert history.messages == 3 and history.evicted.size == 2


def test_ttl_drops_old_messages_and_forgets_a_channel_left_empty() -> None:
    history = kept(ttl=10)
    epoch = history.stream("news").epoch
    publish(history, "news", b"old", now=0.0)
    publish(history, "news", b"new", now=8.0)
    assert history.since("news", Position(epoch, 0), 12.0) is None  # "old" expired
    assert history.since("news", Position(epoch, 1), 12.0) == [b"new"]
    assert history.since("news", Position(epoch, 1), 19.0) is None  # all gone ...
    assert history.stream("news").epoch != epoch  # ... and a new epoch begins
    assert history.evicted.ttl == 2 and history.messages == 0 and history.bytes == 0


def test_the_byte_budget_drops_the_oldest_message_of_any_channel_first() -> None:
    frame = b"x" * 100
    cost = len(frame) + ENTRY_OVERHEAD
    history = kept(max_bytes=3 * cost)
    news, chat = history.stream("news").epoch, history.stream("chat.1").epoch
    publish(history, "news", frame)
    publish(history, "chat.1", frame)
    publish(history, "news", frame)
    assert history.bytes == 3 * cost and history.evicted.budget == 0
    publish(history, "chat.1", frame)  # over budget: the first "news" message goes
    assert history.bytes == 3 * cost and history.evicted.budget == 1
    assert history.since("news", Position(news, 0), 0.0) is None
    assert history.since("news", Position(news, 1), 0.0) == [frame]
    assert history.since("chat.1", Position(chat, 0), 0.0) == [frame, frame]


def test_the_publication_order_stays_bounded_when_size_drops_messages() -> None:
    """A busy channel behind a quiet channel's old message: what size drops does not
    pile up in the order that the budget and ttl walk."""
    history = kept(size=2)
    publish(history, "chat.quiet", b"q")
    for _ in range(10_000):
        publish(history, "news", b"n")
    assert history.messages == 3
    assert len(history._order) <= 2 * history.messages + 1024
