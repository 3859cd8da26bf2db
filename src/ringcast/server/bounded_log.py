"""Logs that a storm cannot flood: the refusal log and the access log.

A server under attack refuses thousands a second, and a reconnect storm opens as many
connections; a line for each would turn a flood into a disk-filling one and cost more
than the connection. So a :class:`BoundedLog` writes at most ``per_second()`` lines a
second (per worker); beyond, lines are counted, and the first line of the next second
says how many were left out. The counts are always complete in ``/metrics``.

- **refusals** (``ringcast.refusals``, at INFO, ``logging.refusals_per_second``): each
  refused request, handshake or frame: its status (or close code), reason and detail;
- **access** (``ringcast.access``, at ``logging.access_level``, off unless
  ``logging.access_per_second`` is set): each connection accepted (with its address),
  each WebSocket opened (channel, handshake time) and closed (why, by whom), each HTTP
  answer (method, path, status).

Lines name the connection by its id (``connection 17``), so one connection's lines can be
followed from accept to close.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["BoundedLog", "RefusalLog"]


class BoundedLog:
    """``line(...)`` logs unless this second's budget is spent."""

    def __init__(self, logger: str, *, title: str, what: str, counted_in: str,
                 per_second: Callable[[], int], level: Callable[[], int] = lambda: logging.INFO,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logging.getLogger(logger)
        self._title = title            # "refusal", "access": the log's name in its lines
        self._what = what              # "refusals", "connections and requests"
        self._counted_in = counted_in  # the metric that counts them all
        self._per_second = per_second  # read once a second: a reload applies within one
        self._level = level
        self._clock = clock
        self._second = -1
        self._left = 0                 # lines this second may still write
        self._dropped = 0              # lines this second left out
        self._budget = 0               # the settings, as read at the start of the second
        self._at = logging.INFO
        self._on = False

    @property
    def enabled(self) -> bool:
        """Whether a line may be written now (callers skip costly arguments if not)."""
        second = int(self._clock())
        if second != self._second:
            self._turn(second)
        return self._left > 0

    def line(self, message: str, *args: object) -> None:
        """Log ``message % args``, or count it when this second's budget is spent. Cheap
        when the log is off: the settings are read once a second (a reload applies
        within one), not per line."""
        second = int(self._clock())
        if second != self._second:
            self._turn(second)
        if self._left <= 0:
            if self._on:
                self._dropped += 1
            return
        self._left -= 1
        self._log.log(self._at, message, *args)

    def _turn(self, second: int) -> None:
        """A new second: say how many lines the last one left out, read the settings."""
        if self._dropped:
            self._log.log(self._at, "%s log: %d more %s in the last %s left out (more than "
                          "%d a second; %s counts them all)", self._title, self._dropped,
                          self._what, "second" if second == self._second + 1 else "seconds",
                          self._budget, self._counted_in)
        self._second, self._dropped = second, 0
        self._budget, self._at = self._per_second(), self._level()
        self._on = self._budget > 0 and self._log.isEnabledFor(self._at)
        self._left = self._budget if self._on else 0


class RefusalLog(BoundedLog):
    """The refusal log: ``refused(...)`` for each refusal."""

    def __init__(self, per_second: Callable[[], int],
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__("ringcast.refusals", title="refusal", what="refusals",
                         counted_in="ringcast_refusals_total", per_second=per_second, clock=clock)

    def refused(self, status: int, reason: str, detail: str, conn: int) -> None:
        """Log ``status`` (an HTTP status or a close code; 0: closed without an answer),
        the reason label and the detail (quoted: it may carry client input)."""
        self.line("refused connection %d: %s %s %r", conn, status or "closed", reason, detail)
