"""Channels and their subscribers, as arrays C can walk.

Each channel keeps its subscriber ids in an ``array('I')`` that is handed to ringio's
fan-out as it is, so a publish costs Python O(1) whatever the number of subscribers.
Removal swaps the last id into the hole (the order of subscribers does not matter; the
order of messages does, and that is per connection).

Messages published to a channel during one loop iteration are held here and leave as one
run per (channel, excluded publisher): a subscriber gets one send per iteration, not one
per message. :meth:`Hub.publish` says at once how many subscribers the message will reach
(the channel's subscribers, less the excluded publisher): that is what an HTTP publish
answers. The hub touches no socket and no clock.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from ringcast.ringio import NO_CONN, ConnId

__all__ = ["Channel", "Hub", "Run"]


@dataclass(frozen=True, slots=True)
class Run:
    """Frames to send together to a channel's subscribers, but ``exclude``."""

    frames: bytes
    exclude: ConnId
    messages: int


@dataclass(eq=False, slots=True)
class Channel:
    name: str
    ids: array[int] = field(default_factory=lambda: array("I"))
    pos: dict[ConnId, int] = field(default_factory=dict)
    # Frames waiting for the end of the iteration: (frame, excluded conn).
    pending: list[tuple[bytes, ConnId]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, conn: ConnId) -> None:
        if conn not in self.pos:
            self.pos[conn] = len(self.ids)
            self.ids.append(conn)

    def remove(self, conn: ConnId) -> None:
        i = self.pos.pop(conn, None)
        if i is None:
            return
        last = ConnId(self.ids.pop())
        if last != conn:
            self.ids[i] = last
            self.pos[last] = i

    def reach(self, exclude: ConnId) -> int:
        """How many subscribers a message published now reaches."""
        return len(self.ids) - (exclude in self.pos)

    def take_runs(self) -> list[Run]:
        """Take the pending frames as runs; consecutive frames with the same excluded
        publisher are joined, so the usual case (one publisher, or echo on) is one run."""
        runs: list[Run] = []
        frames: list[bytes] = []
        current = NO_CONN
        for frame, exclude in self.pending:
            if frames and exclude != current:
                runs.append(Run(b"".join(frames), current, len(frames)))
                frames = []
            current = exclude
            frames.append(frame)
        if frames:
            runs.append(Run(b"".join(frames), current, len(frames)))
        self.pending.clear()
        return runs


class Hub:
    """Every channel of this process with local subscribers, and which have frames waiting."""

    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}
        self._dirty: dict[str, Channel] = {}

    def subscribe(self, conn: ConnId, name: str) -> Channel:
        ch = self.channels.get(name)
        if ch is None:
            ch = self.channels[name] = Channel(name)
        ch.add(conn)
        return ch

    def unsubscribe(self, conn: ConnId, name: str) -> bool:
        """Remove ``conn`` from ``name``; True when the channel has no subscriber left."""
        ch = self.channels.get(name)
        if ch is None:
            return True
        ch.remove(conn)
        if not ch.ids and not ch.pending:
            del self.channels[name]
        return not ch.ids

    def has_subscribers(self, name: str) -> bool:
        ch = self.channels.get(name)
        return ch is not None and bool(ch.ids)

    def publish(self, name: str, frame: bytes, exclude: ConnId = NO_CONN) -> int:
        """Hold a framed message for the end of the iteration; returns how many local
        subscribers it will reach (0: nobody listens, and nothing is held)."""
        ch = self.channels.get(name)
        if ch is None or not ch.ids:
            return 0
        ch.pending.append((frame, exclude))
        self._dirty[name] = ch
        return ch.reach(exclude)

    def take_dirty(self) -> list[Channel]:
        """The channels with frames waiting, once each (see `take`)."""
        if not self._dirty:
            return []
        dirty = list(self._dirty.values())
        self._dirty.clear()
        return [ch for ch in dirty if self._ready(ch)]

    def take(self, name: str) -> Channel | None:
        """Channel ``name`` if frames wait for it, which it no longer does for the hub.

        A channel whose subscribers all left since its frames were published has them
        dropped and is forgotten here, the one place besides `unsubscribe` that removes
        channels."""
        ch = self._dirty.pop(name, None)
        return ch if ch is not None and self._ready(ch) else None

    def _ready(self, ch: Channel) -> bool:
        if ch.ids:
            return True
        ch.pending.clear()
        if self.channels.get(ch.name) is ch:
            del self.channels[ch.name]
        return False

    def subscribed_channels(self) -> list[str]:
        """Channels with at least one local subscriber (what the broker must send here)."""
        return [name for name, ch in self.channels.items() if ch.ids]

    def subscriber_count(self) -> int:
        return sum(len(ch) for ch in self.channels.values())
