"""The runtime's two timer heaps.

- :class:`Timers`: one-off callbacks (an accept to resume, a lingering connection to
  reset: one per connection closing, thousands in a storm's closes), each a tuple with
  its callback.
- :class:`Deadlines`: one deadline per connection whose session has something to do at a
  time (a handshake timeout, a keepalive ping, a close timeout). There are as many as
  connections, so each is a ``(deadline, conn)`` tuple and no closure, and moving one
  later (every keep-alive request does) costs no heap push.

Neither reads a clock: time comes in as ``now``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from ringcast.ringio import ConnId

__all__ = ["Deadlines", "Timers"]


class Timers:
    """Callbacks to run at a time.

    Each is a ``(when, seq, fn)`` tuple: the heap compares tuples in C, and ``seq`` (unique)
    settles equal times in the order they were asked for, so ``fn`` is never compared. (A
    connection storm's closes put thousands here at once, one per lingering connection;
    with a dataclass's ``__lt__`` each push cost a dozen Python calls.)
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0

    def call_at(self, when: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, fn))

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def run_due(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            heapq.heappop(heap)[2]()


class Deadlines:
    """At most one pending deadline per connection, cheap to move.

    A deadline that moves later (a keep-alive connection served again, a ping sent) is
    not pushed again: its entry stays where it was, fires early, and only then goes to
    where it is wanted now. So moving a deadline later costs a dict update, and the heap
    holds about one entry per connection, not one per move.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, ConnId]] = []
        self._queued: dict[ConnId, float] = {}  # conn -> its earliest entry in the heap
        self._wanted: dict[ConnId, float] = {}  # conn -> its deadline now

    def set(self, conn: ConnId, deadline: float | None) -> None:
        """``conn``'s deadline now (None: none)."""
        if deadline is None:
            self._wanted.pop(conn, None)
            return
        self._wanted[conn] = deadline
        queued = self._queued.get(conn)
        if queued is None or deadline < queued:
            self._queued[conn] = deadline
            heapq.heappush(self._heap, (deadline, conn))

    def discard(self, conn: ConnId) -> None:
        self._wanted.pop(conn, None)
        self._queued.pop(conn, None)

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[ConnId]:
        """The connections whose deadline has come, each once; they have none afterwards."""
        due: list[ConnId] = []
        heap, queued, wanted = self._heap, self._queued, self._wanted
        while heap and heap[0][0] <= now:
            deadline, conn = heapq.heappop(heap)
            if queued.get(conn) != deadline:
                continue  # an entry left behind by a deadline that moved earlier
            del queued[conn]
            target = wanted.get(conn)
            if target is None:
                continue  # the deadline was dropped meanwhile
            if target > now:  # it moved later: on to where it is wanted
                queued[conn] = target
                heapq.heappush(heap, (target, conn))
                continue
            del wanted[conn]
            due.append(conn)
        return due
