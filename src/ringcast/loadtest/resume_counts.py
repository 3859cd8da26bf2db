"""What a resume storm counts: per channel, what its publisher sent and had
acknowledged at which offset (`Channel`); per subscriber, what it expected and what it
received, recovered, got twice or out of order, and what its resyncs skipped
(`Subscriber`). The definitions are the ones in `ringcast.loadtest.resume`.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from ringcast.loadtest.resume_ws import V1Socket

__all__ = ["Channel", "Parsed", "Subscriber", "position"]


def position(epoch: object, offset: object) -> tuple[str, int] | None:
    """``(epoch, offset)`` when a reply's two fields are a ringcast.v1 position; None when
    they are not (a channel without history has none)."""
    if isinstance(epoch, str) and isinstance(offset, int) and not isinstance(offset, bool):
        return epoch, offset
    return None


class Channel:
    """One channel: its publisher's count of what was sent and acknowledged at which
    offset, and its positions at the storm's moments."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.subscribers = 0
        self.epoch: str | None = None       # its messages' epoch, as acknowledged
        # The epoch its frames are in, as the run last saw one named (a subscribed reply,
        # a message at offset 1): the one an epoch-less message's data is checked under.
        self.current: str | None = None
        self.sent = 0
        self.acked = 0
        self.last_offset = 0                # the highest offset acknowledged
        self.offset_seq: dict[int, int] = {}    # offset -> message number, as acknowledged
        self.errors: Counter[str] = Counter()
        self.lost: str | None = None        # why its publisher stopped, if it did
        self.first_offset = 0               # the lowest subscription position
        self.at_drop = 0
        self.at_reconnect = 0
        self.final = 0

    def ack(self, seq: int, epoch: object, offset: object) -> None:
        """Message ``seq`` was acknowledged at (``epoch``, ``offset``), as the server said."""
        at = position(epoch, offset)
        if at is None:
            self.errors["acknowledged without a position (the channel keeps no history)"] += 1
            return
        epoch, offset = at
        if self.epoch is None:
            self.epoch = epoch
        elif epoch != self.epoch:
            self.errors["acknowledged in another epoch"] += 1
        self.acked += 1
        self.offset_seq[offset] = seq
        self.last_offset = max(self.last_offset, offset)

    @property
    def settled(self) -> bool:
        """Every message sent is acknowledged or refused (or the publisher is gone)."""
        return self.lost is not None or self.acked + self.errors.total() >= self.sent


Parsed = tuple[Channel, str | None, int]
"""A message frame as the subscribers take it: its channel, epoch (None when it names
none: then the one its subscriber's connection is in) and offset."""


class Subscriber:
    """One subscriber across its connections: what it expects and what it had.

    ``have[i]`` is 1 once offset ``start + 1 + i`` arrived; ``contig`` is the highest
    offset up to which every one did (time to recover is when it reaches ``target``)."""

    __slots__ = ("back_at", "channel", "conn", "contig", "current", "duplicated", "ended",
                 "epoch", "epoch_changes", "errors", "foreign", "have", "highest", "index",
                 "not_replayed", "out_of_order", "recover_at", "recovered",
                 "resumes", "resyncs", "since", "start", "subscribed", "target", "task",
                 "unexpected")

    def __init__(self, index: int, channel: Channel) -> None:
        self.index = index
        self.channel = channel
        self.conn: V1Socket | None = None  # its current connection, a SubscriberConn
        self.task: asyncio.Task[None] | None = None
        self.epoch: str | None = None       # None: never subscribed
        # The epoch of the messages arriving on its connection: its last subscribed
        # reply's, or its last message's that named one (a message names it at offset 1).
        self.current: str | None = None
        self.start = 0                      # the first subscription's offset
        self.highest = 0                    # the highest offset received: the resume's since
        self.contig = 0
        self.have = bytearray()
        self.duplicated = 0
        self.out_of_order = 0
        self.foreign = 0                    # another channel's or epoch's message
        self.unexpected = 0                 # an offset at or below its subscription's
        self.recovered = 0
        self.since = 0                      # the offset of the last resume's since
        self.resumes = 0                    # recovered: true
        self.resyncs = 0                    # recovered: false
        self.not_replayed = 0               # messages the resyncs skipped
        self.epoch_changes = 0
        self.subscribed = False             # on its current connection
        self.target: int | None = None      # all up to here: recovered (None before)
        self.back_at: float | None = None   # subscribed again after the drop
        self.recover_at: float | None = None
        self.errors: Counter[str] = Counter()   # error replies, by code
        self.ended: Counter[str] = Counter()    # connections the server ended, by reason

    def messages(self, batch: list[Parsed], replay_upto: int, now: float) -> None:
        """Message frames, as (channel, epoch or None, offset), in arrival order;
        ``replay_upto``: the current resume's reply offset (0 when the connection's
        subscribe was not a resume). Once per read, not per message: the loop keeps its
        state in locals, as it runs once per message and subscriber."""
        channel, epoch, start, have = self.channel, self.epoch, self.start, self.have
        highest, contig, recovered, size = self.highest, self.contig, 0, len(have)
        current = self.current
        for ch, named, offset in batch:
            if ch is not channel:
                self.foreign += 1
                continue
            if named is not None:
                current = named             # an epoch begins (ours too, at offset 1)
                if named != epoch and start == highest == 0:
                    # Subscribed before anything was published (the epoch then may be
                    # "", none yet): the first epoch to begin is ours.
                    epoch = self.epoch = named
            if current != epoch or current is None:     # (None: no subscribed reply yet)
                self.foreign += 1
                continue
            i = offset - start - 1
            if i < 0:
                self.unexpected += 1
                continue
            if i >= size:
                have.extend(bytes(i - size + 1024))
                size = len(have)
            if have[i]:
                self.duplicated += 1
                continue
            have[i] = 1
            if offset < highest:
                self.out_of_order += 1
            else:
                highest = offset
            if offset <= replay_upto:
                recovered += 1
            if offset == contig + 1:
                contig = offset
                while contig - start < size and have[contig - start]:
                    contig += 1
        self.current = current
        self.highest = highest
        self.recovered += recovered
        if contig != self.contig:
            self.contig = contig
            if self.recover_at is None:
                self.check_recovered(now)

    def on_subscribed(self, epoch: str, offset: int, recovered: bool, now: float) -> bool:
        """A ``subscribed`` reply at (``epoch``, ``offset``): the first sets where the
        expectations start; a later one is a resume (``recovered``) or a resync. True when
        the messages that follow, up to ``offset``, are the resume's replay."""
        self.subscribed = True
        self.current = epoch
        if self.epoch is None:              # its first subscription: expectations start
            self.epoch, self.start = epoch, offset
            self.highest = self.contig = offset
            return False
        if recovered:
            self.resumes += 1
        else:                               # false (or absent: since was not honoured)
            self.resyncs += 1
            if epoch == self.epoch:
                self.not_replayed += max(0, offset - self.since)
            else:
                # Positions of another epoch mean nothing against ours: the rest of this
                # subscriber's messages count as foreign (the server lost its history).
                self.epoch_changes += 1
        if self.target is not None and self.back_at is None:
            self.back_at = now
        self.check_recovered(now)
        return recovered

    def check_recovered(self, now: float) -> None:
        """Note ``now`` as when it recovered, if it just did: subscribed again and has
        every message up to its `target`."""
        if (self.recover_at is None and self.target is not None and self.subscribed
                and self.contig >= self.target):
            self.recover_at = now

    def complete(self) -> bool:
        """Subscribed, with every message of its channel up to the last acknowledged."""
        return self.subscribed and self.contig >= self.channel.final

    def drained(self) -> bool:
        """`complete`, or has what a resync left it: the last message (they come in
        order)."""
        return self.complete() or (self.resyncs > 0 and self.highest >= self.channel.final)

    def expected(self) -> int:
        """Messages of its channel from its first subscription to the last acknowledged."""
        return max(0, self.channel.final - self.start)

    def received_expected(self) -> int:
        """Of the `expected` messages, those it received."""
        return self.have.count(1, 0, self.expected())

