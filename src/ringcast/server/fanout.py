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
(:meth:`FanOut.join`): the reply, then what it missed, then the live messages.
"""

from __future__ import annotations

import time

from ringcast.ringio import NO_CONN, ConnId, Loop
from ringcast.server.cluster import Bridge
from ringcast.server.history import History, Position
from ringcast.server.hub import Channel, Group, Hub
from ringcast.server.links import KIND_PUBLISH, encode_record
from ringcast.server.metrics import Counters
from ringcast.server.peers import PeerLinks
from ringcast.server.protocol.deflate import Compressor
from ringcast.server.protocol.frames import payload_of
from ringcast.server.protocol.ringcast_v1 import message_frame, subscribed_frame
from ringcast.server.settings import Current

__all__ = ["FanOut"]


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
        #: When the loop iteration in progress began (the runtime sets it): what is sent
        #: now arrived then, for the publish-to-flush histogram.
        self.received_at = time.monotonic()

    def publish(self, channel: str, frame: bytes, exclude: ConnId = NO_CONN) -> int:
        """A message from a client of this worker (``exclude``: its publisher, unless
        echo is on). Returns how many subscribers of this worker it reaches."""
        if self._bridge is not None and self._bridge.publish(channel, frame, exclude):
            ch = self._hub.channels.get(channel)
            return 0 if ch is None else ch.reach(exclude)  # delivered when it comes back
        if self._peers is not None:
            self._peers.broadcast(encode_record(KIND_PUBLISH, channel, frame))
        return self._hold(channel, frame, exclude)

    def deliver(self, channel: str, frame: bytes, exclude: ConnId) -> None:
        """A message from the broker bridge (the broker's, or one of ours it never echoed
        before going down): to the subscribers of this worker."""
        self._hold(channel, frame, exclude)

    def from_peer(self, channel: str, frame: bytes) -> None:
        """A message another worker of this host published."""
        self._counts.received_peers += 1
        self._hold(channel, frame, NO_CONN)

    def _hold(self, channel: str, frame: bytes, exclude: ConnId) -> int:
        """Hand a message to the hub for this iteration's flush: its position and its
        place in the history first when its channel keeps history, its ``ringcast.v1``
        frame when someone needs it. Returns the local subscribers it reaches."""
        history = self.history
        v1 = None
        if history.enabled and history.wants(channel):
            position = self.position = history.next_position(channel)
            v1 = message_frame(channel, *payload_of(frame), position)
            history.append(channel, position.offset, v1, self.received_at)
        else:
            self.position = None
        hub = self._hub
        ch = hub.channels.get(channel)
        if ch is None:
            return 0
        if v1 is None and ch.v1:
            v1 = message_frame(channel, *payload_of(frame), None)
        return hub.publish(channel, frame, exclude, v1)

    # -- ringcast.v1 subscriptions ---------------------------------------------------------

    def join(self, conn: ConnId, channel: str, since: tuple[str, int] | None,
             ref: bytes | None, window_bits: int) -> bool:
        """Subscribe a ``ringcast.v1`` connection to ``channel``: the ``subscribed`` reply
        with the channel's position, then (``since`` given and the history has all
        after it) every message after ``since``, then the live ones. False when that
        does not fit in its queue (``queue_max_bytes``): it is then a slow consumer,
        and not subscribed."""
        # What was published before goes to those subscribed before: pending messages
        # are in the history already (and below the position the reply gives).
        self.flush_channel(channel)
        history = self.history
        position = history.position(channel) if history.enabled else None
        missed = None
        if since is not None and position is not None:
            missed = history.since(channel, Position(*since), self.received_at)
        reply = subscribed_frame(ref, channel, position,
                                 None if since is None else missed is not None)
        data = reply + b"".join(missed) if missed else reply
        if window_bits and missed:
            compressor = self._compressor
            compression = self._current.config.compression
            compressor.configure(compression.level, compression.threshold)
            data = reply + b"".join([compressor.frame(f, window_bits) for f in missed])
        cap = self._current.config.limits.queue_max_bytes
        if not self._loop.send(conn, data, cap=cap):
            return False
        self._hub.subscribe(conn, channel, window_bits, v1=True)
        return True

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
        plain, deflate, compressor = ch.plain, ch.deflate, self._compressor
        if deflate or ch.v1:
            compression = self._current.config.compression
            compressor.configure(compression.level, compression.threshold)
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

    def _queue(self, frames: bytes, group: Group, exclude: ConnId, cap: int) -> None:
        """Copy ``frames`` into a slot once and queue it to ``group`` but ``exclude``."""
        loop = self._loop
        slot = loop.slot(frames)
        try:
            loop.fanout(slot, group.ids, len(group.ids), exclude=exclude, cap=cap)
        finally:
            loop.release(slot)
