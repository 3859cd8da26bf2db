"""The runtime's two timer heaps.

- :class:`Timers`: one-off callbacks (an accept to resume, a lingering connection to
  reset). Few, so each is a small object with its callback.
- :class:`Deadlines`: one deadline per connection whose session has something to do at a
  time (a handshake timeout, a keepalive ping, a close timeout). There are as many as
  connections, so each is a ``(deadline, conn)`` tuple and no closure; when a session's
  deadline moves, the old entry stays in the heap and is skipped when it comes out (its
  deadline no longer matches the one recorded for the connection).

Neither reads a clock: time comes in as ``now``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from ringcast.ringio import ConnId

__all__ = ["Deadlines", "Timers"]


@dataclass(order=True, slots=True)
class _Timer:
    when: float
    seq: int
    fn: Callable[[], None] = field(compare=False)


class Timers:
    """Callbacks to run at a time."""

    def __init__(self) -> None:
        self._heap: list[_Timer] = []
        self._seq = 0

    def call_at(self, when: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, _Timer(when, self._seq, fn))

    def next_time(self) -> float | None:
        return self._heap[0].when if self._heap else None

    def run_due(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0].when <= now:
            heapq.heappop(heap).fn()


class Deadlines:
    """At most one pending deadline per connection."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, ConnId]] = []
        self._current: dict[ConnId, float] = {}  # conn -> the deadline queued for it

    def set(self, conn: ConnId, deadline: float | None) -> None:
        """``conn``'s next deadline (None: none); an unchanged one costs nothing."""
        if deadline is None or self._current.get(conn) == deadline:
            return
        self._current[conn] = deadline
        heapq.heappush(self._heap, (deadline, conn))

    def discard(self, conn: ConnId) -> None:
        self._current.pop(conn, None)

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[ConnId]:
        """The connections whose deadline has come, each once; they have none afterwards."""
        due: list[ConnId] = []
        heap, current = self._heap, self._current
        while heap and heap[0][0] <= now:
            deadline, conn = heapq.heappop(heap)
            if current.get(conn) == deadline:
                del current[conn]
                due.append(conn)
        return due
