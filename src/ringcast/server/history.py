"""The last messages of chosen channels, with their positions (see docs/history.md).

Kept where a channel's one order is decided (this process, or with workers the channel's
owner worker; across nodes Redis keeps it instead, see .cluster), once per message
however many subscribers it has. Each
channel with history has a :class:`Stream`: an epoch (a random name for this run of its
history) and the messages of the last ``size`` offsets not older than ``ttl``. All streams
share one byte budget; past it the oldest message of any channel goes first. For that,
every message is also in one queue in publication order, across channels: its front is
the oldest message held, whichever stream it is in (an entry whose stream dropped it
already, by size, is skipped when it reaches the front).

What is stored is the message as a ``ringcast.v1`` frame (channel, position and payload:
:func:`~.protocol.ringcast_v1.message_frame`), so a resume sends stored bytes as they are.

No socket and no clock: ``now`` comes in.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from ringcast.server.protocol.auth import ChannelPatterns

__all__ = ["ENTRY_OVERHEAD", "NO_HISTORY", "Evictions", "History", "Position", "Stream",
           "resume_point"]

ENTRY_OVERHEAD = 100
"""What one held message costs besides its frame, as the budget counts it (its tuple,
its places in two deques, the bytes object's header)."""


class Position(NamedTuple):
    """A channel's position: its epoch, and the offset of a message (0: before the first).

    A channel without history yet (nothing published, or all forgotten) is at
    :data:`NO_HISTORY`: its next message starts an epoch at offset 1, and a client at
    that position gets every message from there."""

    epoch: str
    offset: int


NO_HISTORY = Position("", 0)


def resume_point(after: Position, top: Position) -> Position | None:
    """Where a resume from ``after`` starts in a channel whose last message is at ``top``:
    ``after`` itself, or the start of ``top``'s epoch for :data:`NO_HISTORY` (every
    message of the epoch begun since); None when ``after`` is of another epoch or beyond
    ``top`` (what came after it cannot be known)."""
    if after == NO_HISTORY:
        after = Position(top.epoch, 0)
    if after.epoch != top.epoch or not 0 <= after.offset <= top.offset:
        return None
    return after


@dataclass(slots=True)
class Evictions:
    """Messages dropped, by why (``ringcast_history_evicted_total{reason}``)."""

    size: int = 0
    ttl: int = 0
    budget: int = 0


@dataclass(eq=False, slots=True)
class Stream:
    """One channel's history: ``entries`` holds ``(offset, time, frame)``, oldest first."""

    name: str
    epoch: str
    top: int = 0
    """The offset of the last message published (0: none yet)."""
    entries: deque[tuple[int, float, bytes]] = field(default_factory=deque)

    @property
    def first(self) -> int:
        """The offset of the oldest message held (``top + 1`` when none is)."""
        return self.entries[0][0] if self.entries else self.top + 1


class History:
    """Every stream of this process, within ``size`` messages per channel, ``ttl``
    seconds (0: no limit) and ``max_bytes`` in all."""

    def __init__(self, channels: Iterable[str], *, size: int, ttl: float, max_bytes: int) -> None:
        self._patterns = ChannelPatterns(channels)
        self.enabled = bool(self._patterns)
        self.size = size
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.bytes = 0
        self.messages = 0
        self.evicted = Evictions()
        self._streams: dict[str, Stream] = {}
        self._wants: dict[str, bool] = {}  # a pattern match remembered (bounded below)
        # Every held message in publication order: (stream, offset, time).
        self._order: deque[tuple[Stream, int, float]] = deque()

    def wants(self, channel: str) -> bool:
        """Does ``channel`` keep history?"""
        wanted = self._wants.get(channel)
        if wanted is None:
            if len(self._wants) >= 65536:  # channel names come from clients: bound it
                self._wants.clear()
            wanted = self._wants[channel] = channel in self._patterns
        return wanted

    def stream(self, channel: str) -> Stream:
        """``channel``'s stream (history wanted), made with a new epoch when it has none."""
        stream = self._streams.get(channel)
        if stream is None:
            stream = self._streams[channel] = Stream(channel, secrets.token_urlsafe(6))
        return stream

    def position(self, channel: str) -> Position | None:
        """Where ``channel`` stands now; None when it keeps no history. (Reading makes
        no stream: channel names come from clients, and only a publish costs memory.)"""
        if not self.wants(channel):
            return None
        stream = self._streams.get(channel)
        return NO_HISTORY if stream is None else Position(stream.epoch, stream.top)

    def next_position(self, channel: str) -> Position:
        """The position the next message published on ``channel`` gets (history wanted)."""
        stream = self.stream(channel)
        return Position(stream.epoch, stream.top + 1)

    def append(self, channel: str, offset: int, frame: bytes, now: float) -> None:
        """Keep ``frame``, the message at ``offset`` (given by :meth:`next_position`)."""
        stream = self.stream(channel)
        assert offset == stream.top + 1, (offset, stream.top)
        stream.top = offset
        stream.entries.append((offset, now, frame))
        self._order.append((stream, offset, now))
        self.bytes += len(frame) + ENTRY_OVERHEAD
        self.messages += 1
        if len(stream.entries) > self.size:
            self._drop_first(stream)
            self.evicted.size += 1
            if len(self._order) > 2 * self.messages + 1024:
                self._compact()
        self.expire(now)
        while self.bytes > self.max_bytes and self._order:
            if self._drop_oldest():
                self.evicted.budget += 1

    def since(self, channel: str, after: Position, now: float) -> list[bytes] | None:
        """The frames of every message after ``after``, oldest first; None when they
        cannot all be given (another epoch, or some were dropped or never kept)."""
        if not self.wants(channel):
            return None
        self.expire(now)
        stream = self._streams.get(channel)
        if stream is None:
            return [] if after == NO_HISTORY else None
        point = resume_point(after, Position(stream.epoch, stream.top))
        if point is None:
            return None
        after = point
        if after.offset + 1 < stream.first:
            return None
        start = after.offset + 1 - stream.first
        entries = stream.entries
        return [entries[i][2] for i in range(start, len(entries))]

    def expire(self, now: float) -> None:
        """Drop what is older than ``ttl``, and forget streams left with nothing
        (their epoch goes with them: see docs/history.md)."""
        if self.ttl <= 0:
            return
        limit = now - self.ttl
        order = self._order
        while order and order[0][2] < limit:
            if self._drop_oldest():
                self.evicted.ttl += 1

    def _drop_oldest(self) -> bool:
        """Take the front of the publication order out; True when it was still held. A
        stream left with nothing is forgotten (its epoch goes with it)."""
        stream, offset, _ = self._order.popleft()
        if not (stream.entries and stream.entries[0][0] == offset):
            return False  # dropped already (size), or its stream was forgotten
        self._drop_first(stream)
        if not stream.entries and self._streams.get(stream.name) is stream:
            del self._streams[stream.name]
        return True

    def _compact(self) -> None:
        """Drop the publication order's entries for messages no longer held. Messages
        dropped by size stay there until they reach the front, which a busy channel
        behind a quiet one's old message may not do for long: this bounds the order to
        twice what is held (amortised O(1) per message)."""
        streams = self._streams
        self._order = deque(
            entry for entry in self._order
            if streams.get(entry[0].name) is entry[0] and entry[1] >= entry[0].first)

    def _drop_first(self, stream: Stream) -> None:
        _, _, frame = stream.entries.popleft()
        self.bytes -= len(frame) + ENTRY_OVERHEAD
        self.messages -= 1
