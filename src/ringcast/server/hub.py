"""Channels and their subscribers, as arrays C can walk.

Each channel keeps its subscriber ids in an ``array('I')`` that is handed to
ringio's fan-out as is, so a publish costs Python O(1) whatever the number of
subscribers. Removal swaps the last id into the hole (order of subscribers does
not matter; order of messages does, and that is per connection).

Messages published to a channel during one loop iteration are held here and
leave as one run per (channel, excluded publisher): the subscriber gets one
send per iteration, not one per message. The hub touches no socket and no
clock.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

NO_CONN = 0xFFFFFFFF


@dataclass(eq=False)
class Channel:
    name: str
    ids: array[int] = field(default_factory=lambda: array("I"))
    pos: dict[int, int] = field(default_factory=dict)
    # Frames waiting for the end of the iteration: (frame, excluded conn).
    pending: list[tuple[bytes, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, conn: int) -> None:
        if conn not in self.pos:
            self.pos[conn] = len(self.ids)
            self.ids.append(conn)

    def remove(self, conn: int) -> None:
        i = self.pos.pop(conn, None)
        if i is None:
            return
        last = self.ids.pop()
        if last != conn:
            self.ids[i] = last
            self.pos[last] = i

    def runs(self) -> list[tuple[bytes, int, int]]:
        """Take the pending frames as runs: (bytes, excluded conn, message count).

        Consecutive frames with the same excluded publisher are joined, so the
        usual case (one publisher, or echo mode) is a single run.
        """
        runs: list[tuple[bytes, int, int]] = []
        frames: list[bytes] = []
        current = -1
        for frame, exclude in self.pending:
            if frames and exclude != current:
                runs.append((b"".join(frames), current, len(frames)))
                frames = []
            current = exclude
            frames.append(frame)
        if frames:
            runs.append((b"".join(frames), current, len(frames)))
        self.pending.clear()
        return runs


class Hub:
    """Every channel of this process, and which have frames waiting."""

    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}
        self.dirty: dict[str, Channel] = {}

    def subscribe(self, conn: int, name: str) -> Channel:
        ch = self.channels.get(name)
        if ch is None:
            ch = self.channels[name] = Channel(name)
        ch.add(conn)
        return ch

    def unsubscribe(self, conn: int, name: str) -> None:
        ch = self.channels.get(name)
        if ch is None:
            return
        ch.remove(conn)
        if not ch.ids and not ch.pending:
            del self.channels[name]

    def publish(self, name: str, frame: bytes, exclude: int = NO_CONN) -> Channel | None:
        """Hold a framed message for the end of the iteration; None if nobody listens."""
        ch = self.channels.get(name)
        if ch is None or not ch.ids:
            return None
        ch.pending.append((frame, exclude))
        self.dirty[name] = ch
        return ch

    def take_runs(self, ch: Channel) -> list[tuple[bytes, int, int]]:
        """Take ``ch``'s pending frames as runs (see `Channel.runs`) for fan-out.

        A channel nobody listens to any more yields nothing and is forgotten here,
        the one place besides `unsubscribe` that removes channels.
        """
        self.dirty.pop(ch.name, None)
        if ch.ids:
            return ch.runs()
        ch.pending.clear()
        if self.channels.get(ch.name) is ch:
            del self.channels[ch.name]
        return []

    def take_dirty(self) -> list[Channel]:
        if not self.dirty:
            return []
        chans = list(self.dirty.values())
        self.dirty.clear()
        return chans

    def subscriber_count(self) -> int:
        return sum(len(ch) for ch in self.channels.values())
