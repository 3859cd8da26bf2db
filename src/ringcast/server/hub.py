"""Channels and their subscribers, as arrays C can walk.

Each channel keeps its subscriber ids in an ``array('I')`` that is handed to ringio's
fan-out as it is, so a publish costs Python O(1) whatever the number of subscribers.
Removal swaps the last id into the hole (the order of subscribers does not matter; the
order of messages does, and that is per connection). Subscribers that agreed on
permessage-deflate are kept apart, one :class:`Group` per window size, since they get
other bytes (the same for all of them: see :mod:`.protocol.deflate`). So are
``ringcast.v1`` subscribers, who get each message as a ``message`` frame (channel and
position around the payload: :mod:`.protocol.ringcast_v1`), made once per message for
all of them, and every message, their own included (no excluded publisher).

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

__all__ = ["Channel", "Group", "Hub", "Run"]


@dataclass(frozen=True, slots=True)
class Run:
    """Frames to send together to a channel's subscribers, but ``exclude``."""

    frames: list[bytes]
    exclude: ConnId


@dataclass(eq=False, slots=True)
class Group:
    """Subscribers that get the same bytes: their ids, as the array C walks, and where
    each one is in it."""

    ids: array[int] = field(default_factory=lambda: array("I"))
    pos: dict[ConnId, int] = field(default_factory=dict)

    def add(self, conn: ConnId) -> None:
        if conn not in self.pos:
            self.pos[conn] = len(self.ids)
            self.ids.append(conn)

    def remove(self, conn: ConnId) -> bool:
        """Take ``conn`` out; False when it was not in."""
        i = self.pos.pop(conn, None)
        if i is None:
            return False
        last = ConnId(self.ids.pop())
        if last != conn:
            self.ids[i] = last
            self.pos[last] = i
        return True


@dataclass(eq=False, slots=True)
class Channel:
    name: str
    plain: Group = field(default_factory=Group)
    """The subscribers that get frames as they were published."""
    deflate: dict[int, Group] = field(default_factory=dict)
    """By window size: the subscribers that get them compressed (none, most often)."""
    v1: dict[int, Group] = field(default_factory=dict)
    """By window size (0: none): the ``ringcast.v1`` subscribers (none, most often)."""
    # Frames waiting for the end of the iteration: (frame, excluded conn).
    pending: list[tuple[bytes, ConnId]] = field(default_factory=list)
    # The same messages as ringcast.v1 frames, while the channel has v1 subscribers.
    pending_v1: list[bytes] = field(default_factory=list)
    position: tuple[str, int] | None = None
    """The last position of this history channel delivered here, when another worker or
    Redis orders it (to notice a message lost on the way: see FanOut)."""

    def __len__(self) -> int:
        n = len(self.plain.ids)
        if self.deflate:
            n += sum(len(group.ids) for group in self.deflate.values())
        if self.v1:
            n += sum(len(group.ids) for group in self.v1.values())
        return n

    def add(self, conn: ConnId, window_bits: int = 0, *, v1: bool = False) -> None:
        """Subscribe ``conn``; ``window_bits``: the window its permessage-deflate
        compresses with, 0 for none; ``v1``: a ``ringcast.v1`` client."""
        if not window_bits and not v1:
            self.plain.add(conn)
            return
        groups = self.v1 if v1 else self.deflate
        group = groups.get(window_bits)
        if group is None:
            group = groups[window_bits] = Group()
        group.add(conn)

    def remove(self, conn: ConnId) -> None:
        if self.plain.remove(conn):
            return
        for groups in (self.deflate, self.v1):
            for bits, group in groups.items():
                if group.remove(conn):
                    if not group.ids:
                        del groups[bits]
                    return

    def has(self, conn: ConnId) -> bool:
        """Is ``conn`` a raw subscriber (one that an excluded publisher can be)?"""
        return conn in self.plain.pos or any(conn in g.pos for g in self.deflate.values())

    def reach(self, exclude: ConnId) -> int:
        """How many subscribers a message published now reaches."""
        return len(self) - (exclude != NO_CONN and self.has(exclude))

    def take_runs(self) -> list[Run]:
        """Take the pending frames as runs; consecutive frames with the same excluded
        publisher go together, so the usual case (one publisher, or echo on) is one run."""
        runs: list[Run] = []
        frames: list[bytes] = []
        current = NO_CONN
        for frame, exclude in self.pending:
            if frames and exclude != current:
                runs.append(Run(frames, current))
                frames = []
            current = exclude
            frames.append(frame)
        if frames:
            runs.append(Run(frames, current))
        self.pending.clear()
        return runs


class Hub:
    """Every channel of this process with local subscribers, and which have frames waiting."""

    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}
        self._dirty: dict[str, Channel] = {}

    def subscribe(self, conn: ConnId, name: str, window_bits: int = 0, *,
                  v1: bool = False) -> Channel:
        """Add ``conn`` to channel ``name`` (see :meth:`Channel.add`)."""
        ch = self.channels.get(name)
        if ch is None:
            ch = self.channels[name] = Channel(name)
        ch.add(conn, window_bits, v1=v1)
        return ch

    def unsubscribe(self, conn: ConnId, name: str) -> bool:
        """Remove ``conn`` from ``name``; True when the channel has no subscriber left."""
        ch = self.channels.get(name)
        if ch is None:
            return True
        ch.remove(conn)
        if not len(ch) and not ch.pending:
            del self.channels[name]
        return not len(ch)

    def has_subscribers(self, name: str) -> bool:
        ch = self.channels.get(name)
        return ch is not None and bool(len(ch))

    def publish(self, name: str, frame: bytes, exclude: ConnId = NO_CONN,
                v1: bytes | None = None) -> int:
        """Hold a framed message for the end of the iteration; returns how many local
        subscribers it will reach (0: nobody listens, and nothing is held). ``v1``: the
        same message as a ``ringcast.v1`` frame, which the channel's v1 subscribers get
        (given whenever it has some)."""
        ch = self.channels.get(name)
        return 0 if ch is None else self.hold(ch, frame, exclude, v1)

    def hold(self, ch: Channel, frame: bytes, exclude: ConnId = NO_CONN,
             v1: bytes | None = None) -> int:
        """:meth:`publish` to a channel already looked up."""
        if not len(ch):
            return 0
        ch.pending.append((frame, exclude))
        if ch.v1:
            assert v1 is not None
            ch.pending_v1.append(v1)
        self._dirty[ch.name] = ch
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
        if len(ch):
            return True
        ch.pending.clear()
        ch.pending_v1.clear()
        if self.channels.get(ch.name) is ch:
            del self.channels[ch.name]
        return False

    def subscribed_channels(self) -> list[str]:
        """Channels with at least one local subscriber (what the broker must send here)."""
        return [name for name, ch in self.channels.items() if len(ch)]

    def subscriber_count(self, *, compressed: bool = False) -> int:
        """Subscriptions (``compressed``: those with permessage-deflate only)."""
        if compressed:
            return sum(len(g.ids) for ch in self.channels.values()
                       for groups in (ch.deflate, ch.v1) for bits, g in groups.items() if bits)
        return sum(len(ch) for ch in self.channels.values())
