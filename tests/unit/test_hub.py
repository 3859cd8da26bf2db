"""The hub: channels, their subscriber arrays, and the runs a publish becomes."""

from __future__ import annotations

from array import array

from hypothesis import given
from hypothesis import strategies as st

from ringcast.ringio import NO_CONN
from ringcast.server.hub import Channel, Hub, Run


class TestSubscribers:
    def test_ids_are_an_array_c_can_walk(self) -> None:
        hub = Hub()
        for conn in (3, 7, 9):
            hub.subscribe(conn, "news")
        ch = hub.channels["news"]
        assert isinstance(ch.plain.ids, array)
        assert ch.plain.ids.typecode == "I"
        assert sorted(ch.plain.ids) == [3, 7, 9]

    def test_subscribing_twice_counts_once(self) -> None:
        hub = Hub()
        hub.subscribe(1, "a")
        hub.subscribe(1, "a")
        assert list(hub.channels["a"].plain.ids) == [1]

    @given(st.lists(st.tuples(st.booleans(), st.integers(0, 30)), max_size=200))
    def test_add_and_remove_keep_ids_and_positions_in_step(
        self, ops: list[tuple[bool, int]]
    ) -> None:
        """Each connection is in the group of its window (0: plain; here window 9 + its
        id % 3 for odd ids), once, and every group's positions match its array."""
        ch = Channel("x")
        expected: dict[int, int] = {}  # conn -> window
        for add, conn in ops:
            window = 0 if conn % 2 == 0 else 9 + conn % 3
            if add:
                ch.add(conn, window)
                expected.setdefault(conn, window)
            else:
                ch.remove(conn)
                expected.pop(conn, None)
            groups = {0: ch.plain, **ch.deflate}
            seen = {conn: bits for bits, g in groups.items() for conn in g.ids}
            assert seen == expected
            assert len(ch) == len(expected)
            assert all(g.ids for g in ch.deflate.values())  # no empty group stays
            for g in groups.values():
                assert len(g.ids) == len(g.pos)
                assert all(g.ids[i] == conn for conn, i in g.pos.items())
            assert all(ch.has(conn) for conn in expected)

    def test_compressed_subscribers_are_kept_apart_by_window(self) -> None:
        hub = Hub()
        hub.subscribe(1, "a")
        hub.subscribe(2, "a", window_bits=15)
        hub.subscribe(3, "a", window_bits=15)
        hub.subscribe(4, "a", window_bits=9)
        ch = hub.channels["a"]
        assert list(ch.plain.ids) == [1]
        assert {bits: sorted(g.ids) for bits, g in ch.deflate.items()} == {15: [2, 3], 9: [4]}
        assert hub.subscriber_count() == 4
        assert hub.subscriber_count(compressed=True) == 3
        assert hub.publish("a", b"f", exclude=3) == 3
        hub.unsubscribe(4, "a")
        assert list(ch.deflate) == [15]

    def test_the_last_subscriber_leaving_forgets_the_channel(self) -> None:
        hub = Hub()
        hub.subscribe(1, "a")
        hub.subscribe(2, "a")
        assert hub.unsubscribe(1, "a") is False
        assert hub.unsubscribe(2, "a") is True
        assert "a" not in hub.channels
        assert hub.unsubscribe(2, "a") is True  # unknown channel: nobody listens

    def test_subscribed_channels_and_count(self) -> None:
        hub = Hub()
        hub.subscribe(1, "a")
        hub.subscribe(2, "a")
        hub.subscribe(2, "b")
        assert sorted(hub.subscribed_channels()) == ["a", "b"]
        assert hub.subscriber_count() == 3


class TestPublish:
    def test_reach_is_the_subscribers_less_the_publisher(self) -> None:
        hub = Hub()
        for conn in (1, 2, 3):
            hub.subscribe(conn, "a")
        assert hub.publish("a", b"f1") == 3
        assert hub.publish("a", b"f2", exclude=2) == 2
        assert hub.publish("a", b"f3", exclude=99) == 3  # not a subscriber

    def test_nobody_listening_holds_nothing(self) -> None:
        hub = Hub()
        assert hub.publish("empty", b"f") == 0
        assert hub.take_dirty() == []
        assert "empty" not in hub.channels

    def test_frames_of_one_iteration_leave_as_runs_per_excluded_publisher(self) -> None:
        hub = Hub()
        hub.subscribe(1, "a")
        hub.publish("a", b"x", exclude=1)
        hub.publish("a", b"y", exclude=1)
        hub.publish("a", b"z")
        hub.publish("a", b"w", exclude=1)
        (ch,) = hub.take_dirty()
        assert ch.take_runs() == [Run([b"x", b"y"], 1), Run([b"z"], NO_CONN), Run([b"w"], 1)]
        assert ch.pending == []
        assert hub.take_dirty() == []  # taken once

    def test_take_one_channel(self) -> None:
        hub = Hub()
        hub.subscribe(1, "a")
        hub.subscribe(1, "b")
        hub.publish("a", b"x")
        hub.publish("b", b"y")
        ch = hub.take("a")
        assert ch is not None
        assert ch.name == "a"
        assert hub.take("a") is None
        assert [c.name for c in hub.take_dirty()] == ["b"]

    def test_frames_for_a_channel_its_subscribers_all_left_are_dropped(self) -> None:
        hub = Hub()
        hub.subscribe(1, "a")
        hub.publish("a", b"x")
        hub.unsubscribe(1, "a")
        assert "a" in hub.channels  # its frames still wait...
        assert hub.take_dirty() == []  # ...and are dropped with it here
        assert "a" not in hub.channels
