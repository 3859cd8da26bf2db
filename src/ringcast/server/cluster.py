"""Many nodes: a bridge to a broker, Redis pub/sub first.

The rule that gives every node one order per channel without double delivery:
while the bridge is up, a publish is *not* delivered locally; it goes to the
broker, and every node (the origin included) delivers what the broker sends
back, in the broker's order. The origin's publisher is excluded on the way
back by an origin tag (node nonce + connection id) prefixed to the frame.

While the broker is unreachable, publishes are delivered locally only (this
process and the other workers of this host); messages that were on their way
to the broker when it went away may be lost. The bridge reconnects with
backoff and resubscribes every channel that has local subscribers.

A bridge speaks over sockets on the worker's own loop: no thread, no second
event loop. `Bridge` is the interface a NATS bridge would implement too.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import hiredis

from ringcast.ringio import Loop

log = logging.getLogger("ringcast")

CHANNEL_PREFIX = "ringcast:"
_ORIGIN = struct.Struct("!8sI")
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0
CONNECT_TIMEOUT = 0.5
OUTBOUND_CAP = 64 << 20

Deliver = Callable[[str, bytes, int], None]  # channel, frame, excluded local conn


class Bridge(Protocol):
    """What the runtime needs of a broker bridge."""

    connected: bool

    def owns(self, conn: int) -> bool: ...
    def data_received(self, conn: int, data: bytes) -> None: ...
    def connection_lost(self, conn: int) -> None: ...
    def subscribe(self, channel: str) -> None: ...
    def unsubscribe(self, channel: str) -> None: ...
    def publish(self, channel: str, frame: bytes, origin_conn: int) -> bool: ...
    def next_attempt(self) -> float | None: ...
    def maintain(self, now: float) -> None: ...
    def status(self) -> dict[str, Any]: ...


def resp(*args: bytes) -> bytes:
    """Encode one command in RESP (what redis-cli sends)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RedisBridge:
    """Redis pub/sub over two connections on the worker's loop.

    ``sub`` is in subscriber mode (SUBSCRIBE/UNSUBSCRIBE, receives messages);
    ``pub`` sends PUBLISH. Both must be up for the bridge to be connected.
    """

    def __init__(self, url: str, loop: Loop, deliver: Deliver,
                 channels: Callable[[], list[str]]) -> None:
        parts = urlsplit(url)
        if parts.scheme != "redis" or not parts.hostname:
            raise ValueError(f"cluster.redis_url {url!r} is not redis://host[:port][/db]")
        self.url = url
        self.addr = (parts.hostname, parts.port or 6379)
        self.password = parts.password
        self.loop = loop
        self.deliver = deliver
        self.local_channels = channels
        self.nonce = os.urandom(8)
        self.connected = False
        self.sub = -1
        self.pub = -1
        self._readers: dict[int, Any] = {}
        self._subscribed: set[str] = set()
        self._backoff = BACKOFF_MIN
        self._next_try: float | None = 0.0
        self._down_logged = False
        self.published = 0
        self.received = 0
        self.reconnects = 0
        self.local_only = 0

    # -- connection management -------------------------------------------

    def owns(self, conn: int) -> bool:
        return conn in self._readers

    def next_attempt(self) -> float | None:
        return self._next_try

    def maintain(self, now: float) -> None:
        if self.connected or self._next_try is None or now < self._next_try:
            return
        try:
            sub = self._connect()
            pub = self._connect()
        except OSError as exc:
            self._next_try = now + self._backoff
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            if not self._down_logged:
                log.warning("cluster: redis at %s:%d unreachable (%s); delivering locally only "
                            "and retrying with backoff", *self.addr, exc.strerror or exc)
                self._down_logged = True
            return
        self.sub, self.pub = sub, pub
        for conn in (sub, pub):
            self._readers[conn] = hiredis.Reader()
            if self.password:
                self.loop.send(conn, resp(b"AUTH", self.password.encode()), force=True)
        self._subscribed = set(self.local_channels())
        if self._subscribed:
            self.loop.send(sub, resp(b"SUBSCRIBE", *(CHANNEL_PREFIX.encode() + c.encode()
                                                     for c in sorted(self._subscribed))),
                           force=True)
        self.connected = True
        self._next_try = None
        self._backoff = BACKOFF_MIN
        self.reconnects += 1
        if self._down_logged or self.reconnects > 1:
            log.info("cluster: connected to redis at %s:%d, %d channels subscribed",
                     *self.addr, len(self._subscribed))
        self._down_logged = False

    def _connect(self) -> int:
        sock = socket.create_connection(self.addr, timeout=CONNECT_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.loop.adopt(sock)

    def connection_lost(self, conn: int) -> None:
        if conn not in self._readers:
            return
        for c in (self.sub, self.pub):
            if c in self._readers:
                self.loop.close(c)
        self._readers.clear()
        self.sub = self.pub = -1
        if self.connected:
            log.warning("cluster: lost the connection to redis at %s:%d; delivering locally "
                        "only until it is back", *self.addr)
            self._down_logged = True
        self.connected = False
        self._next_try = 0.0

    def close(self) -> None:
        for c in list(self._readers):
            self.loop.close(c)
        self._readers.clear()
        self.connected = False
        self._next_try = None

    # -- subscriptions and messages ----------------------------------------

    def subscribe(self, channel: str) -> None:
        if channel in self._subscribed:
            return
        self._subscribed.add(channel)
        if self.connected:
            self.loop.send(self.sub, resp(b"SUBSCRIBE", (CHANNEL_PREFIX + channel).encode()),
                           force=True)

    def unsubscribe(self, channel: str) -> None:
        if channel not in self._subscribed:
            return
        self._subscribed.discard(channel)
        if self.connected:
            self.loop.send(self.sub, resp(b"UNSUBSCRIBE", (CHANNEL_PREFIX + channel).encode()),
                           force=True)

    def publish(self, channel: str, frame: bytes, origin_conn: int) -> bool:
        """Send to the broker; False when the bridge is down (deliver locally)."""
        if not self.connected:
            self.local_only += 1
            return False
        body = _ORIGIN.pack(self.nonce, origin_conn) + frame
        if not self.loop.send(self.pub, resp(b"PUBLISH", (CHANNEL_PREFIX + channel).encode(),
                                             body), cap=OUTBOUND_CAP):
            self.local_only += 1
            return False
        self.published += 1
        return True

    def data_received(self, conn: int, data: bytes) -> None:
        reader = self._readers.get(conn)
        if reader is None:
            return
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if conn == self.sub and isinstance(reply, list) and len(reply) == 3 \
                    and reply[0] == b"message":
                self._message(reply[1], reply[2])
            elif isinstance(reply, hiredis.ReplyError):
                log.error("cluster: redis answered an error: %s", reply)

    def _message(self, rchannel: bytes, body: bytes) -> None:
        name = rchannel.decode(errors="replace").removeprefix(CHANNEL_PREFIX)
        if len(body) < _ORIGIN.size:
            return
        nonce, conn = _ORIGIN.unpack_from(body)
        self.received += 1
        exclude = conn if nonce == self.nonce else 0xFFFFFFFF
        self.deliver(name, body[_ORIGIN.size:], exclude)

    def status(self) -> dict[str, Any]:
        return {"redis": "connected" if self.connected else "disconnected",
                "channels": len(self._subscribed)}
