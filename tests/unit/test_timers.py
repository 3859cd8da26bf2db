"""The runtime's timers: callbacks at a time, and one deadline per connection."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ringcast.ringio import ConnId
from ringcast.server.timers import Deadlines, Timers


def test_timers_run_in_time_order_once() -> None:
    timers, ran = Timers(), []
    for when in (3.0, 1.0, 2.0, 2.0):
        timers.call_at(when, lambda w=when: ran.append(w))
    assert timers.next_time() == 1.0
    timers.run_due(2.0)
    assert ran == [1.0, 2.0, 2.0]
    timers.run_due(10.0)
    assert ran == [1.0, 2.0, 2.0, 3.0]
    assert timers.next_time() is None


A, B = ConnId(1), ConnId(2)


def test_a_deadline_comes_due_once() -> None:
    d = Deadlines()
    d.set(A, 5.0)
    assert d.pop_due(4.9) == []
    assert d.pop_due(5.0) == [A]
    assert d.pop_due(100.0) == []


def test_moving_later_pushes_nothing_and_fires_where_wanted() -> None:
    d = Deadlines()
    d.set(A, 5.0)
    for step in range(1000):  # a keep-alive connection served a thousand times
        d.set(A, 5.0 + step)
    assert len(d._heap) == 1
    assert d.pop_due(5.0) == []  # the early entry moves on
    assert d.pop_due(1003.9) == []
    assert d.pop_due(1004.0) == [A]


def test_moving_earlier_and_dropping() -> None:
    d = Deadlines()
    d.set(A, 10.0)
    d.set(A, 2.0)
    d.set(B, 3.0)
    d.set(B, None)
    assert d.pop_due(3.0) == [A]
    assert d.pop_due(100.0) == []
    d.set(A, 7.0)
    d.discard(A)
    assert d.pop_due(100.0) == []


@given(st.lists(st.tuples(st.sampled_from([A, B]),
                          st.one_of(st.none(), st.floats(0, 100, allow_nan=False))),
                max_size=40),
       st.floats(0, 100, allow_nan=False))
def test_due_is_exactly_what_was_last_set_and_has_come(
    moves: list[tuple[ConnId, float | None]], now: float
) -> None:
    d = Deadlines()
    last: dict[ConnId, float | None] = {}
    for conn, deadline in moves:
        d.set(conn, deadline)
        last[conn] = deadline
    expected = sorted(c for c, t in last.items() if t is not None and t <= now)
    assert sorted(d.pop_due(now)) == expected
    assert d.pop_due(now) == []
