"""Where a published message goes, and how it leaves for the subscribers.

A message published by a client of this worker (a WebSocket message or ``POST
/publish``), already framed once (:func:`~.protocol.frames.data_frame`):

1. while the broker bridge is up, to the broker only: every node of the cluster, this one
   included, delivers what the broker sends back, so all see one order per channel
   (:meth:`FanOut.deliver`);
2. otherwise to the other workers of this host (one record per message, never per
   subscriber; they deliver it with :meth:`FanOut.from_peer`) and to this worker's hub.

The hub holds what was published during the loop iteration; :meth:`FanOut.flush` sends it
at the end of the iteration, one run of frames per channel copied once into a slot of the
loop and handed to ``rio_fanout``, which queues it to every subscriber in C. Subscribers
that agreed on permessage-deflate get the run compressed, once per window size in use
(:class:`~.protocol.deflate.Compressor`), in a slot of its own.

A channel with history (:mod:`.history`) gives each message its position here, where
this process's one order of the channel is decided, and keeps it as its ``ringcast.v1``
frame; ``ringcast.v1`` subscribers get that frame (made once per message, with the
position when there is one). A ``ringcast.v1`` subscription starts here too
(:meth:`FanOut.join`): the reply, then what it missed, then the live messages. With
several workers, a history channel's order is decided by its owner worker instead
(:mod:`.ordering`): publishes are forwarded to it, subscriptions ask it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from ringcast.ringio import NO_CONN, ConnId, Loop
from ringcast.server.cluster import Bridge, StreamRead
from ringcast.server.history import History, Position, resume_point
from ringcast.server.hub import Channel, Group, Hub
from ringcast.server.links import (
    KIND_FORWARD,
    KIND_JOIN,
    KIND_JOINED,
    KIND_PUBLISH,
    KIND_SEQUENCED,
    encode_record,
)
from ringcast.server.metrics import Counters
from ringcast.server.ordering import (
    TICKET_TIMEOUT,
    Sequenced,
    Tickets,
    decode_forward,
    decode_join,
    decode_joined,
    decode_sequenced,
    encode_forward,
    encode_join,
    encode_joined,
    encode_sequenced,
    owner_of,
)
from ringcast.server.peers import PeerLinks
from ringcast.server.protocol.deflate import Compressor
from ringcast.server.protocol.frames import payload_of, split_frames
from ringcast.server.protocol.ringcast_v1 import message_frame, subscribed_frame
from ringcast.server.settings import Current

__all__ = ["FORWARDED", "UNAVAILABLE", "Answer", "FanOut", "Joining"]

log = logging.getLogger("ringcast")


FORWARDED = -1
"""What :meth:`FanOut.publish` returns for a message sent to its channel's owner worker:
its position and reach come later, to the answer given to :meth:`FanOut.when_ordered`
(see :mod:`.ordering`)."""
UNAVAILABLE = -2
"""What :meth:`FanOut.publish` returns when the channel's owner worker cannot be reached:
the message was not published (answer the publisher 503, or ``unavailable``)."""

Answer = Callable[[Position | None, int], None]
"""Called with a forwarded message's position and reach on this worker once its owner
ordered it, or with ``(None, UNAVAILABLE)`` when the owner did not answer in time."""


class Joining(Enum):
    """How a ``ringcast.v1`` subscription went (:meth:`FanOut.join`)."""

    JOINED = "joined"
    """Subscribed; the reply and what it missed are on their way."""
    SLOW = "slow"
    """What it missed does not fit in its queue (``queue_max_bytes``): not subscribed."""
    UNAVAILABLE = "unavailable"
    """The channel's owner worker did not answer: not subscribed."""
    PENDING = "pending"
    """Asked the channel's owner worker; the outcome comes to ``on_result``."""


@dataclass(slots=True)
class _Forwarded:
    exclude: ConnId
    answer: Answer | None = None


@dataclass(frozen=True, slots=True)
class _Join:
    conn: ConnId
    channel: str
    ref: bytes | None
    window_bits: int
    still_wanted: Callable[[], bool]
    on_result: Callable[[Joining], None]


@dataclass(slots=True)
class _Reading:
    """A subscription to a history channel kept in Redis, on its way: its read of the
    stream is sent once Redis confirmed this node's subscription to the channel."""

    join: _Join
    since: Position | None
    start: int
    """Where what the channel gets from now on begins in its caught list."""
    sent: bool = False
    read: StreamRead | None = None


CAUGHT_MAX = 100_000
"""Messages a channel may get while subscriptions to it wait for their read (a few
milliseconds, normally); past it they fail (``unavailable``: the client retries)."""


class FanOut:
    """Publishing on this worker: routing (broker, other workers, hub) and the sends."""

    def __init__(self, loop: Loop, hub: Hub, current: Current, counters: Counters, *,
                 compressor: Compressor, peers: PeerLinks | None,
                 bridge: Bridge | None, history: History | None = None) -> None:
        self._loop = loop
        self._hub = hub
        self.history = history if history is not None else History((), size=1, ttl=0,
                                                                     max_bytes=1024)
        #: The position the last message published got (None: its channel keeps no
        #: history): what ``POST /publish`` and a ``published`` reply answer.
        self.position: Position | None = None
        self._current = current
        self._counts = counters
        self._compressor = compressor
        self._peers = peers
        self._bridge = bridge
        # History channels' owners (see .ordering): what this worker waits for from them.
        self._forwarded: Tickets[_Forwarded] = Tickets()
        self._last_forwarded: _Forwarded | None = None  # for when_ordered
        self._joins: Tickets[_Join] = Tickets()
        # History channels kept in Redis: subscriptions waiting for their read, and what
        # the channel got meanwhile, (position, ringcast.v1 frame) in Redis's order.
        self._reading: dict[str, list[_Reading]] = {}
        self._caught: dict[str, list[tuple[Position, bytes]]] = {}
        #: Called with a history channel whose messages from its orderer (the owner
        #: worker, or Redis) did not all arrive: its ringcast.v1 subscribers here must
        #: resume (the runtime closes them).
        self.on_gap: Callable[[str], None] = lambda _channel: None
        #: When the loop iteration in progress began (the runtime sets it): what is sent
        #: now arrived then, for the publish-to-flush histogram.
        self.received_at = time.monotonic()

    def publish(self, channel: str, frame: bytes, exclude: ConnId = NO_CONN) -> int:
        """A message from a client of this worker (``exclude``: its publisher, unless
        echo is on). Returns how many subscribers of this worker it reaches, or
        :data:`FORWARDED` (then :meth:`when_ordered` may say where it went) or
        :data:`UNAVAILABLE`."""
        peers = self._peers
        kept = self.history.enabled and self.history.wants(channel)
        if kept and self._bridge is not None:
            return self._publish_kept(self._bridge, channel, frame, exclude)
        if kept and peers is not None:
            owner = owner_of(channel, peers.count)
            if owner != peers.worker:
                return self._forward(peers, owner, channel, frame, exclude)
            return self._sequence(peers, channel, frame, exclude=exclude, origin=peers.worker,
                                  ticket=0)
        if self._bridge is not None and self._bridge.publish(channel, frame, exclude):
            ch = self._hub.channels.get(channel)
            self.position = None
            return 0 if ch is None else ch.reach(exclude)  # delivered when it comes back
        if peers is not None:
            peers.broadcast(encode_record(KIND_PUBLISH, channel, frame))
        return self._hold(channel, frame, exclude)

    def can_publish(self, channel: str) -> bool:
        """Can a message on ``channel`` be published now? False for a history channel
        whose orderer (Redis, or its owner worker) is unreachable."""
        history = self.history
        if not (history.enabled and history.wants(channel)):
            return True
        if self._bridge is not None:
            return self._bridge.connected
        peers = self._peers
        if peers is None:
            return True
        owner = owner_of(channel, peers.count)
        return owner == peers.worker or peers.linked_to(owner)

    def deliver(self, channel: str, frame: bytes, exclude: ConnId,
                position: Position | None = None) -> None:
        """A message from the broker bridge (the broker's, or one of ours it never echoed
        before going down): to the subscribers of this worker, with its ``position`` on
        a history channel (Redis gave it)."""
        if position is None:
            self.position = None
            self._to_hub(channel, frame, exclude, None)
            return
        caught = self._caught.get(channel)
        ch = self._hub.channels.get(channel)
        self._check_order(ch, position)
        if caught is None and (ch is None or not ch.v1):
            self._to_hub(channel, frame, exclude, None)
            return
        v1 = message_frame(channel, *payload_of(frame), position)
        if caught is not None:
            caught.append((position, v1))
            if len(caught) > CAUGHT_MAX:
                self._fail_readings(channel)
        self._to_hub(channel, frame, exclude, v1)

    def from_peer(self, channel: str, frame: bytes) -> None:
        """A message another worker of this host published."""
        self._counts.received_peers += 1
        self._hold(channel, frame, NO_CONN)

    def _hold(self, channel: str, frame: bytes, exclude: ConnId) -> int:
        """Hand a message to the hub for this iteration's flush, with its position and
        its place in the history first when its channel keeps history (this process
        orders it). Returns the local subscribers it reaches."""
        history = self.history
        v1 = None
        if history.enabled and history.wants(channel):
            self.position, v1 = self._keep(channel, frame)
        else:
            self.position = None
        return self._to_hub(channel, frame, exclude, v1)

    def _keep(self, channel: str, frame: bytes) -> tuple[Position, bytes]:
        """Give a message of a history channel its position, and keep it."""
        history = self.history
        position = history.next_position(channel)
        v1 = message_frame(channel, *payload_of(frame), position)
        history.append(channel, position.offset, v1, self.received_at)
        return position, v1

    def _to_hub(self, channel: str, frame: bytes, exclude: ConnId, v1: bytes | None) -> int:
        """Hold a message for this worker's subscribers, its ``ringcast.v1`` frame made
        (without a position) if v1 subscribers need it and none was given."""
        hub = self._hub
        ch = hub.channels.get(channel)
        if ch is None:
            return 0
        if v1 is None and ch.v1:
            v1 = message_frame(channel, *payload_of(frame), None)
        return hub.hold(ch, frame, exclude, v1)

    # -- history channels across workers (see .ordering) -------------------------------------

    def _forward(self, peers: PeerLinks, owner: int, channel: str, frame: bytes,
                 exclude: ConnId) -> int:
        self.position = None
        forwarded = _Forwarded(exclude)
        ticket = self._forwarded.add(owner, self.received_at + TICKET_TIMEOUT, forwarded)
        body = encode_forward(peers.worker, ticket, frame)
        if peers.send_to(owner, encode_record(KIND_FORWARD, channel, body)):
            self._last_forwarded = forwarded
            return FORWARDED
        self._forwarded.pop(ticket)
        self._counts.owner_unavailable += 1
        return UNAVAILABLE

    def when_ordered(self, answer: Answer) -> None:
        """Have the message :meth:`publish` just forwarded answered: ``answer(position,
        reach on this worker)`` once its owner ordered it, ``answer(None, UNAVAILABLE)``
        if the owner does not answer in time."""
        assert self._last_forwarded is not None
        self._last_forwarded.answer = answer
        self._last_forwarded = None

    def _sequence(self, peers: PeerLinks, channel: str, frame: bytes, *, exclude: ConnId,
                  origin: int, ticket: int) -> int:
        """Order a message of a channel this worker owns: keep it, send it with its
        position to every other worker (at once: the links carry the order), hold it
        for this worker's subscribers."""
        position, v1 = self._keep(channel, frame)
        self.position = position
        body = encode_sequenced(origin, ticket, position, frame, v1)
        peers.broadcast(encode_record(KIND_SEQUENCED, channel, body))
        return self._to_hub(channel, frame, exclude, v1)

    def from_ordering(self, kind: int, channel: str, body: bytes) -> None:
        """A record of a history channel's order from another worker."""
        peers = self._peers
        assert peers is not None
        if kind == KIND_FORWARD:
            origin, ticket, frame = decode_forward(body)
            self._counts.received_peers += 1
            self._sequence(peers, channel, frame, exclude=NO_CONN, origin=origin, ticket=ticket)
        elif kind == KIND_SEQUENCED:
            self._sequenced(channel, decode_sequenced(body), peers.worker)
        elif kind == KIND_JOIN:
            origin, ticket, since = decode_join(body)
            position, recovered, missed = self._position_and_missed(channel, since)
            assert position is not None  # the owner of a history channel
            body = encode_joined(ticket, recovered, position, b"".join(missed or ()))
            peers.send_to(origin, encode_record(KIND_JOINED, channel, body))
        elif kind == KIND_JOINED:
            joined = decode_joined(body)
            join = self._joins.pop(joined.ticket)
            if join is not None and join.still_wanted():
                frames = split_frames(joined.frames) if joined.recovered else None
                join.on_result(self._subscribe(
                    join.conn, channel, join.ref, join.window_bits, position=joined.position,
                    recovered=joined.recovered, missed=frames))

    def _sequenced(self, channel: str, message: Sequenced, worker: int) -> None:
        self._counts.received_peers += 1
        self._check_order(self._hub.channels.get(channel), message.position)
        forwarded = self._forwarded.pop(message.ticket) if message.origin == worker else None
        exclude = NO_CONN if forwarded is None else forwarded.exclude
        reached = self._to_hub(channel, message.frame, exclude, message.v1)
        if forwarded is not None and forwarded.answer is not None:
            self.position = message.position
            forwarded.answer(message.position, reached)

    def _check_order(self, ch: Channel | None, position: Position) -> None:
        """A message ordered elsewhere, with its position: if it does not follow the last
        one delivered here, some were lost on the way (a link to the owner worker was
        full, or down for a while), and this worker's ringcast.v1 subscribers of the
        channel may not learn it from the offsets (a new epoch's first message may be
        what was lost): :attr:`on_gap` has them resume."""
        if ch is None:
            return
        last = ch.position
        ch.position = position
        if last is not None and ch.v1 and not _follows(Position(*last), position):
            log.warning("history channel %r: messages ordered elsewhere were lost on the way "
                        "here (after %s:%d, got %s:%d); its ringcast.v1 subscribers on this "
                        "worker resume", ch.name, *last, *position)
            self.on_gap(ch.name)

    def expire(self, now: float) -> None:
        """Fail what the owners did not answer in time (or whose link went down)."""
        peers = self._peers
        if peers is None or not (self._forwarded or self._joins):
            return

        def down(owner: int) -> bool:
            return not peers.linked_to(owner)

        for forwarded in self._forwarded.expire(now, down):
            self._counts.owner_unavailable += 1
            if forwarded.answer is not None:
                forwarded.answer(None, UNAVAILABLE)
        for join in self._joins.expire(now, down):
            self._counts.owner_unavailable += 1
            if join.still_wanted():
                join.on_result(Joining.UNAVAILABLE)

    # -- history channels kept in Redis (see .cluster) --------------------------------------

    def _publish_kept(self, bridge: Bridge, channel: str, frame: bytes,
                      exclude: ConnId) -> int:
        self.position = None
        forwarded = _Forwarded(exclude)

        def positioned(position: Position | None) -> None:
            if forwarded.answer is None:
                return
            if position is None:
                forwarded.answer(None, UNAVAILABLE)
                return
            ch = self._hub.channels.get(channel)
            forwarded.answer(position, 0 if ch is None else ch.reach(exclude))

        if bridge.publish_kept(channel, frame, exclude, positioned):
            self._last_forwarded = forwarded
            return FORWARDED
        self._counts.owner_unavailable += 1
        return UNAVAILABLE

    def _join_kept(self, bridge: Bridge, join: _Join, since: Position | None) -> Joining:
        if not bridge.connected:
            self._counts.owner_unavailable += 1
            return Joining.UNAVAILABLE
        caught = self._caught.setdefault(join.channel, [])
        reading = _Reading(join, since, start=len(caught))
        self._reading.setdefault(join.channel, []).append(reading)
        if bridge.confirmed(join.channel):
            self._read(bridge, reading)
        return Joining.PENDING

    def channel_confirmed(self, channel: str) -> None:
        """Redis confirmed this node's subscription to ``channel``: what is published on
        it from now on comes here, so the subscriptions waiting for that may read."""
        bridge = self._bridge
        assert bridge is not None
        for reading in list(self._reading.get(channel, ())):
            if not reading.sent:
                self._read(bridge, reading)

    def _read(self, bridge: Bridge, reading: _Reading) -> None:
        reading.sent = True
        since = reading.since
        after = -1 if since is None else since.offset

        def read(found: StreamRead | None) -> None:
            reading.read = found
            if found is None or not bridge.sync(lambda ok: self._synced(reading, ok)):
                self._synced(reading, False)

        if not bridge.read_history(reading.join.channel, after, read):
            self._synced(reading, False)

    def _synced(self, reading: _Reading, ok: bool) -> None:
        """Everything Redis published before the read is here (``ok``): the reply, what
        the subscription missed, then what came since the read, and it is live."""
        join = reading.join
        channel = join.channel
        waiting = self._reading.get(channel)
        if waiting is None or reading not in waiting:
            return  # failed already
        waiting.remove(reading)
        caught = self._caught.get(channel, [])
        read = reading.read
        tail = _after_read(caught[reading.start:], read.position) \
            if ok and read is not None else None
        if not waiting:
            del self._reading[channel]
            self._caught.pop(channel, None)
        elif (done := min(r.start for r in waiting)) > 0:
            del caught[:done]  # nobody waiting needs those any more
            for r in waiting:
                r.start -= done
        if read is None or tail is None:
            self._counts.owner_unavailable += 1
            if join.still_wanted():
                join.on_result(Joining.UNAVAILABLE)
            return
        if not join.still_wanted():
            return
        frames, at = tail
        recovered: bool | None = None
        missed = None
        if reading.since is not None:
            missed = self._recovered(channel, reading.since, read)
            recovered = missed is not None
            if missed is not None:
                missed += frames
        join.on_result(self._subscribe(join.conn, channel, join.ref, join.window_bits,
                                       position=at, recovered=recovered, missed=missed))

    def _recovered(self, channel: str, since: Position, read: StreamRead
                   ) -> list[bytes] | None:
        """The ``ringcast.v1`` frames of every message after ``since`` up to the read's
        position; None when Redis does not hold them all (trimmed by ``history.size``,
        older than ``history.ttl``, or another epoch)."""
        top = read.position
        start = resume_point(since, top)
        if start is None:
            return None
        since = start
        entries = read.entries
        if len(entries) != top.offset - since.offset or \
                (entries and entries[0][0] != since.offset + 1):
            return None
        ttl_ms = self.history.ttl * 1000
        if ttl_ms and entries and entries[0][1] < read.now_ms - ttl_ms:
            return None
        return [message_frame(channel, *payload_of(frame), Position(top.epoch, offset))
                for offset, _, frame in entries]

    def _fail_readings(self, channel: str) -> None:
        for reading in list(self._reading.get(channel, ())):
            self._synced(reading, False)

    # -- ringcast.v1 subscriptions ---------------------------------------------------------

    def join(self, conn: ConnId, channel: str, since: tuple[str, int] | None,
             ref: bytes | None, window_bits: int, *, still_wanted: Callable[[], bool],
             on_result: Callable[[Joining], None]) -> Joining:
        """Subscribe a ``ringcast.v1`` connection to ``channel``: the ``subscribed`` reply
        with the channel's position, then (``since`` given and the history has all
        after it) every message after ``since``, then the live ones.

        A history channel another worker owns is asked of that worker: PENDING, and
        ``on_result`` gets the outcome if ``still_wanted()`` then (the client may have
        left or unsubscribed meanwhile)."""
        peers = self._peers
        history = self.history
        wanted = history.enabled and history.wants(channel)
        if wanted and self._bridge is not None:
            return self._join_kept(
                self._bridge, _Join(conn, channel, ref, window_bits, still_wanted, on_result),
                None if since is None else Position(*since))
        if wanted and peers is not None:
            owner = owner_of(channel, peers.count)
            if owner != peers.worker:
                ticket = self._joins.add(owner, self.received_at + TICKET_TIMEOUT,
                                         _Join(conn, channel, ref, window_bits, still_wanted,
                                               on_result))
                body = encode_join(peers.worker, ticket,
                                   None if since is None else Position(*since))
                if peers.send_to(owner, encode_record(KIND_JOIN, channel, body)):
                    return Joining.PENDING
                self._joins.pop(ticket)
                self._counts.owner_unavailable += 1
                return Joining.UNAVAILABLE
        position, recovered, missed = self._position_and_missed(
            channel, None if since is None else Position(*since))
        return self._subscribe(conn, channel, ref, window_bits, position=position,
                               recovered=recovered, missed=missed)

    def _position_and_missed(self, channel: str, since: Position | None
                             ) -> tuple[Position | None, bool | None, list[bytes] | None]:
        """Where a channel this worker orders stands, and the frames after ``since``
        (None when they cannot all be given; ``recovered`` None when no ``since``)."""
        history = self.history
        position = history.position(channel) if history.enabled else None
        if since is None:
            return position, None, None
        if position is None:
            return None, False, None
        missed = history.since(channel, since, self.received_at)
        return position, missed is not None, missed

    def _subscribe(self, conn: ConnId, channel: str, ref: bytes | None, window_bits: int, *,
                   position: Position | None, recovered: bool | None,
                   missed: list[bytes] | None) -> Joining:
        # What was published before goes to those subscribed before: messages pending
        # here are below the position the reply gives (in the history, or sent by the
        # owner before its answer).
        self.flush_channel(channel)
        reply = subscribed_frame(ref, channel, position, recovered)
        if window_bits and missed:
            compressor = self._configured_compressor()
            missed = [compressor.frame(f, window_bits) for f in missed]
        data = reply + b"".join(missed) if missed else reply
        if not self._loop.send(conn, data, cap=self._current.config.limits.queue_max_bytes):
            return Joining.SLOW
        ch = self._hub.subscribe(conn, channel, window_bits, v1=True)
        if ch.position is None and position is not None:
            ch.position = position  # where the next message ordered elsewhere follows on
        return Joining.JOINED

    # -- the sends ----------------------------------------------------------------------

    def flush(self) -> None:
        """Send what was published since the last flush (at the end of an iteration)."""
        for ch in self._hub.take_dirty():
            self._send(ch)

    def flush_channel(self, name: str) -> None:
        """Send what waits for channel ``name`` now: a direct send to one of its
        subscribers (a pong, a close frame) must follow the messages published before."""
        ch = self._hub.take(name)
        if ch is not None:
            self._send(ch)

    def _send(self, ch: Channel) -> None:
        cap = self._current.config.limits.queue_max_bytes
        plain, deflate = ch.plain, ch.deflate
        compressor = self._configured_compressor() if deflate or ch.v1 else self._compressor
        if ch.pending_v1:
            frames_v1 = ch.pending_v1
            ch.pending_v1 = []
            for bits, group in ch.v1.items():
                frames = b"".join([compressor.frame(f, bits) for f in frames_v1]
                                  if bits else frames_v1)
                self._queue(frames, group, NO_CONN, cap)
        for run in ch.take_runs():
            if plain.ids:
                self._queue(b"".join(run.frames), plain, run.exclude, cap)
            for bits, group in deflate.items():
                frames = b"".join([compressor.frame(f, bits) for f in run.frames])
                self._queue(frames, group, run.exclude, cap)
            messages = len(run.frames)
            self._counts.messages_out += messages
            self._counts.publish_flush.observe(time.monotonic() - self.received_at, messages)

    def _configured_compressor(self) -> Compressor:
        """The compressor, set to the level and threshold in force (a reload may change
        them)."""
        compression = self._current.config.compression
        self._compressor.configure(compression.level, compression.threshold)
        return self._compressor

    def _queue(self, frames: bytes, group: Group, exclude: ConnId, cap: int) -> None:
        """Copy ``frames`` into a slot once and queue it to ``group`` but ``exclude``."""
        loop = self._loop
        slot = loop.slot(frames)
        try:
            loop.fanout(slot, group.ids, len(group.ids), exclude=exclude, cap=cap)
        finally:
            loop.release(slot)


def _follows(before: Position, position: Position) -> bool:
    """Is ``position`` the message right after ``before`` (the next offset, or the first
    of a new epoch)?"""
    if position.epoch == before.epoch:
        return position.offset == before.offset + 1
    return position.offset == 1


def _after_read(caught: list[tuple[Position, bytes]], read: Position
                ) -> tuple[list[bytes], Position] | None:
    """Of the messages a channel got while a subscription waited (in Redis's order), the
    frames of those published after the read at ``read``, and the position of the last;
    None if they do not follow on from it (an epoch began just then: the client retries).

    Those before the read are in it: the last of them, if any, is at ``read`` itself."""
    start = 0
    for i, (position, _) in enumerate(caught):
        if position == read:
            start = i + 1
    frames = []
    at = read
    for position, frame in caught[start:]:
        if not _follows(at, position):
            return None
        frames.append(frame)
        at = position
    return frames, at
