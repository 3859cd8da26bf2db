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
"""

from __future__ import annotations

import time

from ringcast.ringio import NO_CONN, ConnId, Loop
from ringcast.server.cluster import Bridge
from ringcast.server.hub import Channel, Group, Hub
from ringcast.server.links import KIND_PUBLISH, encode_record
from ringcast.server.metrics import Counters
from ringcast.server.peers import PeerLinks
from ringcast.server.protocol.deflate import Compressor
from ringcast.server.settings import Current

__all__ = ["FanOut"]


class FanOut:
    """Publishing on this worker: routing (broker, other workers, hub) and the sends."""

    def __init__(self, loop: Loop, hub: Hub, current: Current, counters: Counters, *,
                 compressor: Compressor, peers: PeerLinks | None,
                 bridge: Bridge | None) -> None:
        self._loop = loop
        self._hub = hub
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
        return self._hub.publish(channel, frame, exclude)

    def deliver(self, channel: str, frame: bytes, exclude: ConnId) -> None:
        """A message from the broker bridge (the broker's, or one of ours it never echoed
        before going down): to the subscribers of this worker."""
        self._hub.publish(channel, frame, exclude)

    def from_peer(self, channel: str, frame: bytes) -> None:
        """A message another worker of this host published."""
        self._counts.received_peers += 1
        self._hub.publish(channel, frame)

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
        if deflate:
            compression = self._current.config.compression
            compressor.configure(compression.level, compression.threshold)
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
