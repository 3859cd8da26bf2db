"""Latency histograms: fixed buckets, plain integers, paid once per observation.

Two durations are measured (see docs/metrics.md):

- **handshake**: from the loop iteration that accepted a connection to its 101 being
  queued: the wait for the client's request plus the server's work on it;
- **publish to flush**: from the loop iteration that received a message (from a client,
  another worker or the broker) to the moment it was queued, in C, to every local
  subscriber and the sends submitted. One observation per run of frames handed to the C
  core, weighted by the messages in it: never per delivery.

Prometheus reads the cumulative counts (:meth:`Latency.buckets`); the status page wants
recent percentiles: :meth:`Latency.take_recent` gives what was observed since its
previous call (once a second), and :func:`quantile` estimates them from it as
Prometheus's ``histogram_quantile`` would.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Final

__all__ = ["BOUNDS", "Latency", "quantile"]

BOUNDS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds of the buckets, in seconds (100 µs to 10 s; one more bucket, +Inf)."""


class Latency:
    """One histogram: counts per bucket of :data:`BOUNDS` (and +Inf), and their sum."""

    __slots__ = ("_counts", "_seen", "sum")

    def __init__(self) -> None:
        self._counts = [0] * (len(BOUNDS) + 1)
        self._seen = [0] * (len(BOUNDS) + 1)  # the counts at the last recent()
        self.sum = 0.0

    def observe(self, seconds: float, n: int = 1) -> None:
        """``n`` events that each took ``seconds``."""
        self._counts[bisect_left(BOUNDS, seconds)] += n
        self.sum += seconds * n

    @property
    def count(self) -> int:
        return sum(self._counts)

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative counts per upper bound, ``+Inf`` last (Prometheus's form)."""
        out: list[tuple[str, int]] = []
        total = 0
        for bound, n in zip((*map(repr, BOUNDS), "+Inf"), self._counts, strict=True):
            total += n
            out.append((bound, total))
        return out

    def take_recent(self) -> list[int]:
        """The counts per bucket observed since the last call (the status page's second;
        :func:`quantile` reads percentiles from them)."""
        delta = [now - then for now, then in zip(self._counts, self._seen, strict=True)]
        self._seen = list(self._counts)
        return delta


def quantile(counts: list[int], q: float) -> float | None:
    """The ``q`` quantile of events counted per bucket of :data:`BOUNDS` (and +Inf), in
    seconds; None when there are none. Linear within a bucket; the +Inf bucket answers
    its lower bound."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    below = 0
    for i, n in enumerate(counts):
        if n and below + n >= rank:
            if i == len(BOUNDS):
                return BOUNDS[-1]
            low = BOUNDS[i - 1] if i else 0.0
            return low + (BOUNDS[i] - low) * (rank - below) / n
        below += n
    return BOUNDS[-1]
