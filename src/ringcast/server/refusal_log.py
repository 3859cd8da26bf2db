"""The refusal log: one line per refused request, handshake or frame, at INFO, bounded.

A server under attack refuses thousands a second; logging each would turn a flood into a
disk-filling one. So at most ``logging.refusals_per_second`` lines are written a second
(per worker); beyond, lines are counted, and the first line of the next second says how
many were left out. The counts by reason are always complete in ``/metrics``
(``ringcast_refusals_total{reason}``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RefusalLog"]

log = logging.getLogger("ringcast.refusals")


class RefusalLog:
    """``refused(...)`` logs a refusal unless this second's budget is spent."""

    def __init__(self, per_second: Callable[[], int],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._per_second = per_second   # read each second: a reload applies at once
        self._clock = clock
        self._second = -1
        self._left = 0
        self._dropped = 0

    def refused(self, status: int, reason: str, detail: str, conn: int) -> None:
        """Log ``status`` (an HTTP status or a close code; 0: closed without an answer),
        the reason label and the detail (quoted: it may carry client input)."""
        if self._per_second() <= 0:
            return
        now = int(self._clock())
        if now != self._second:
            if self._dropped:
                log.info("refusal log: %d more refusals in the last %s left out (more than "
                         "%d a second; ringcast_refusals_total counts them all)",
                         self._dropped, "second" if now == self._second + 1 else "seconds",
                         self._per_second())
            self._second, self._left, self._dropped = now, self._per_second(), 0
        if self._left <= 0:
            self._dropped += 1
            return
        self._left -= 1
        log.info("refused connection %d: %s %s %r", conn, status or "closed", reason, detail)
