"""The inbound message rate limit of one WebSocket connection: a token bucket.

The bucket holds up to ``burst`` tokens and starts full; it refills at ``rate`` tokens
per second of the runtime's clock (the ``now`` the session is given). Every data message
(counted once, at its first frame) and every ping takes one token; a message that finds
the bucket empty closes the connection with 1008 "message rate limit exceeded". So a
client may send ``burst`` messages at once, then ``rate`` per second on average.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """``take(now)`` is true while the client stays within ``rate`` per second on
    average, with bursts of up to ``burst``."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = now

    def take(self, now: float) -> bool:
        """Take one token at ``now``; False when there is none left."""
        elapsed = now - self._last
        if elapsed > 0:  # a clock that goes backwards refills nothing
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
            self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
