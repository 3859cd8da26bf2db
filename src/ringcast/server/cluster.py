"""Many nodes: a bridge to a broker, Redis pub/sub first.

The rule that gives every node one order per channel without double delivery:
while the bridge is up, a publish is *not* delivered locally; it goes to the
broker, and every node (the origin included) delivers what the broker sends
back, in the broker's order. The origin's publisher is excluded on the way
back by an origin tag (node nonce, connection id, sequence) prefixed to the
frame.

"Up" means proven, not assumed: both connections made, AUTH accepted, every
SUBSCRIBE confirmed and a PING answered; afterwards a PING every few seconds
must be answered in time. While the bridge is down, publishes are delivered on
this host only. Messages this node published that the broker had not yet
echoed when it went down are delivered locally then, once: local subscribers
lose nothing to an outage. A new subscriber's handshake completes only once
the broker confirmed its channel (`confirmed`), so nothing published
elsewhere after its 101 can miss it.

A bridge speaks over sockets on the worker's own loop: no thread, no second
event loop, and no blocking connect (connects are polled from `maintain`).
Channels with history (docs/history.md) take another way through Redis: a publish is
one Lua script (:data:`PUBLISH_SCRIPT`) that gives the message the channel's next
position, appends it to the channel's stream (XADD with the offset as the stream id,
MAXLEN ``history.size``) and PUBLISHes it with its position, atomically: Redis decides
the one order and the position of every message of the channel, whichever node published
it. There is no local fallback for those: while Redis is down their publishes are refused
(the order cannot be decided), and a subscription reads the stream
(:meth:`RedisBridge.read_history`) before it goes live.

`Bridge` is the interface a NATS bridge would implement too.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import select
import socket
import struct
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import unquote, urlsplit

import hiredis

from ringcast.redact import mask_credentials
from ringcast.ringio import NO_CONN
from ringcast.server.history import Position

log = logging.getLogger("ringcast")

CHANNEL_PREFIX = "ringcast:"
HISTORY_PREFIX = "ringcast:history:"   # a hash: the channel's epoch and top offset
STREAM_PREFIX = "ringcast:stream:"     # a stream: its messages, with ids 0-<offset>
_KEPT = b"H"    # after the origin tag: a message with its position (a frame starts 0x8?)
_ORIGIN = struct.Struct("!8sIQ")     # node nonce, publishing conn, node sequence
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0
CONNECT_TIMEOUT = 2.0
PING_INTERVAL, PING_TIMEOUT = 2.0, 3.0
OUTBOUND_CAP = 64 << 20
INFLIGHT_MAX = 100_000              # own messages awaiting their echo

Deliver = Callable[[str, bytes, int, Position | None], None]
"""channel, frame, excluded local conn, and the message's position on a history channel."""
Positioned = Callable[[Position | None], None]
"""A history message's position, once Redis gave it; None if it may not be published
(Redis went down before it answered, or refused)."""
Synced = Callable[[bool], None]
"""Everything published before is delivered to this node (False: the bridge went down)."""

# KEYS: the channel's history hash, its stream, its pub/sub channel. ARGV: the origin tag
# (with the _KEPT mark), an epoch for a channel that has none, the frame, history.size,
# history.ttl in ms (0: none). Returns {epoch, offset}.
PUBLISH_SCRIPT = b"""
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 'top', 1)
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], '0-' .. offset, 't', ms, 'f', ARGV[3])
if ARGV[5] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
redis.call('PUBLISH', KEYS[3], ARGV[1] .. epoch .. ':' .. offset .. ':' .. ARGV[3])
return {epoch, offset}
"""

# KEYS: the channel's history hash, its stream. ARGV: the offset after which messages are
# wanted (-1: none). Returns {epoch ('' when the channel has no history yet), top offset,
# Redis's time in ms, the entries after ARGV[1] as XRANGE gives them}.
READ_SCRIPT = b"""
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return {'', 0, ms, {}} end
local top = tonumber(redis.call('HGET', KEYS[1], 'top'))
local after = tonumber(ARGV[1])
if after < 0 or after >= top then return {epoch, top, ms, {}} end
return {epoch, top, ms, redis.call('XRANGE', KEYS[2], '0-' .. (after + 1), '+')}
"""


@dataclass(frozen=True, slots=True)
class StreamRead:
    """What :meth:`RedisBridge.read_history` found: the channel's position (epoch ''
    and offset 0 when it has no history yet), Redis's clock, and the messages after the
    offset asked for as ``(offset, time in ms, frame)``, oldest first."""

    position: Position
    now_ms: int
    entries: list[tuple[int, int, bytes]]


class Bridge(Protocol):
    """What the runtime needs of a broker bridge."""

    connected: bool
    received: int       # messages the broker delivered to this node
    local_only: int     # publishes delivered on this node only: the broker was down
    redelivered: int    # this node's messages the broker never echoed before it went
                        # down, delivered locally then

    def owns(self, conn: int) -> bool: ...
    def data_received(self, conn: int, data: bytes) -> None: ...
    def connection_lost(self, conn: int) -> None: ...
    def subscribe(self, channel: str) -> None: ...
    def unsubscribe(self, channel: str) -> None: ...
    def confirmed(self, channel: str) -> bool: ...
    def publish(self, channel: str, frame: bytes, origin_conn: int) -> bool: ...
    def publish_kept(self, channel: str, frame: bytes, origin_conn: int,
                     on_position: Positioned) -> bool: ...
    def read_history(self, channel: str, after: int,
                     on_read: Callable[[StreamRead | None], None]) -> bool: ...
    def sync(self, on_synced: Synced) -> bool: ...
    def next_attempt(self) -> float | None: ...
    def maintain(self, now: float) -> None: ...
    def status(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class SocketLoop(Protocol):
    """What a bridge needs of the worker's loop (`ringcast.ringio.Loop` is one)."""

    def adopt(self, sock: socket.socket) -> int: ...
    def send(self, conn: int, data: bytes, *, cap: int = 0, force: bool = False) -> bool: ...
    def close_connection(self, conn: int) -> None: ...


# One command in RESP, what redis-cli sends. The cast: hiredis's stub types the
# argument as a 1-tuple and the result as Any.
pack_command = cast("Callable[[tuple[bytes, ...]], bytes]", hiredis.pack_command)


def _rname(channel: str) -> bytes:
    return (CHANNEL_PREFIX + channel).encode()


def _keys(channel: str) -> tuple[bytes, bytes]:
    return (HISTORY_PREFIX + channel).encode(), (STREAM_PREFIX + channel).encode()


class RedisBridge:
    """Redis pub/sub over two connections on the worker's loop.

    ``sub`` is in subscriber mode (SUBSCRIBE/UNSUBSCRIBE, receives messages);
    ``pub`` sends AUTH, PUBLISH and PING and gets their replies in order.
    """

    def __init__(self, url: str, loop: SocketLoop, deliver: Deliver,
                 channels: Callable[[], list[str]], *, history_size: int = 1,
                 history_ttl: float = 0.0,
                 on_confirmed: Callable[[str], None] = lambda _ch: None,
                 on_down: Callable[[], None] = lambda: None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "redis" or not parts.hostname:
            shown = mask_credentials(repr(url))
            raise ValueError(f"cluster.redis_url {shown} is not redis://host[:port][/db]")
        self.url = url
        self.addr = (parts.hostname, parts.port or 6379)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.loop = loop
        self.deliver = deliver
        self.local_channels = channels
        self.on_confirmed = on_confirmed
        self.on_down = on_down
        self._size = b"%d" % history_size
        self._ttl_ms = b"%d" % round(history_ttl * 1000)
        self.nonce = os.urandom(8)
        self.connected = False
        self.sub = -1
        self.pub = -1
        self._readers: dict[int, Any] = {}
        # Replies owed on pub, oldest first: what was asked, or who wants the reply.
        self._pub_expect: deque[bytes | Callable[[Any], None]] = deque()
        self._pongs: deque[Synced] = deque()    # PINGs sent on sub, in subscriber mode
        self._sub_auth_pending = False
        self._wanted: set[str] = set()          # channels with local interest
        self._confirmed: set[str] = set()       # SUBSCRIBE acknowledged by Redis
        self._connecting: list[socket.socket] = []
        self._connect_deadline = 0.0
        self._handshaking = False
        self._ping_due = 0.0
        self._ping_sent: float | None = None
        self._seq = 0
        self._inflight: OrderedDict[int, tuple[str, bytes, int]] = OrderedDict()
        self._backoff = BACKOFF_MIN
        self._next_try: float | None = 0.0
        self._down_logged = False
        self._now = 0.0
        self.published = 0
        self.received = 0
        self.reconnects = 0
        self.local_only = 0
        self.redelivered = 0

    # -- the connection's life ----------------------------------------------

    def owns(self, conn: int) -> bool:
        return conn in self._readers

    def next_attempt(self) -> float | None:
        if self._connecting:
            return self._now + 0.02     # poll the connects in progress
        if self.connected or self._handshaking:
            return self._ping_due
        return self._next_try

    def maintain(self, now: float) -> None:
        self._now = now
        if self._connecting:
            self._poll_connect(now)
        elif self.connected or self._handshaking:
            self._keepalive(now)
        elif self._next_try is not None and now >= self._next_try:
            self._start_connect(now)

    def _start_connect(self, now: float) -> None:
        socks = []
        try:
            for _ in range(2):
                s = socket.socket(socket.AF_INET6 if ":" in self.addr[0] else socket.AF_INET)
                socks.append(s)
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                rc = s.connect_ex(self.addr)
                if rc not in (0, errno.EINPROGRESS):
                    raise OSError(rc, os.strerror(rc))
        except OSError as exc:
            for s in socks:
                s.close()
            self._failed(now, exc.strerror or str(exc))
            return
        self._connecting = socks
        self._connect_deadline = now + CONNECT_TIMEOUT

    def _poll_connect(self, now: float) -> None:
        _, writable, _ = select.select([], self._connecting, [], 0)
        if len(writable) < len(self._connecting):
            if now >= self._connect_deadline:
                self._abandon_connect()
                self._failed(now, f"no answer within {CONNECT_TIMEOUT:.0f}s")
            return
        for s in self._connecting:
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._abandon_connect()
                self._failed(now, os.strerror(err))
                return
        sub_sock, pub_sock = self._connecting
        self._connecting = []
        self.sub, self.pub = self.loop.adopt(sub_sock), self.loop.adopt(pub_sock)
        self._readers = {self.sub: hiredis.Reader(), self.pub: hiredis.Reader()}
        self._pub_expect.clear()
        auth = self._auth_command()
        if auth is not None:
            self.loop.send(self.sub, auth, force=True)
            self.loop.send(self.pub, auth, force=True)
            self._sub_auth_pending = True
            self._pub_expect.append(b"auth")
        else:
            self._sub_auth_pending = False
        self._confirmed.clear()
        self._wanted = set(self.local_channels()) | self._wanted
        if self._wanted:
            names = map(_rname, sorted(self._wanted))
            self.loop.send(self.sub, pack_command((b"SUBSCRIBE", *names)), force=True)
        self._handshaking = True
        self._send_ping(now)

    def _abandon_connect(self) -> None:
        for s in self._connecting:
            s.close()
        self._connecting = []

    def _auth_command(self) -> bytes | None:
        if self.password is None:
            return None
        if self.username:
            return pack_command((b"AUTH", self.username.encode(), self.password.encode()))
        return pack_command((b"AUTH", self.password.encode()))

    def _maybe_up(self) -> None:
        if not self._handshaking or self._ping_sent is not None or self._sub_auth_pending:
            return
        if self._wanted - self._confirmed or b"auth" in self._pub_expect:
            return
        self._handshaking = False
        self.connected = True
        self._next_try = None
        self._backoff = BACKOFF_MIN
        self.reconnects += 1
        # Every time, the first included: an operator sees that the node joined the cluster.
        log.info("cluster: %s %s (%d channels subscribed); publishes go through it",
                 "connected to" if self.reconnects == 1 else "reconnected to",
                 mask_credentials(self.url), len(self._confirmed))
        self._down_logged = False

    def _keepalive(self, now: float) -> None:
        if self._ping_sent is not None and now - self._ping_sent > PING_TIMEOUT:
            self._down(f"no answer to PING within {PING_TIMEOUT:.0f}s")
        elif self._ping_sent is None and now >= self._ping_due:
            self._send_ping(now)

    def _send_ping(self, now: float) -> None:
        self.loop.send(self.pub, pack_command((b"PING",)), force=True)
        self._pub_expect.append(b"ping")
        self._ping_sent = now
        self._ping_due = now + PING_INTERVAL

    def _failed(self, now: float, why: str) -> None:
        self._next_try = now + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        if not self._down_logged:
            log.warning("cluster: redis at %s:%d unreachable (%s); delivering locally only "
                        "and retrying with backoff", *self.addr, why)
            self._down_logged = True

    def _down(self, why: str) -> None:
        """Drop both connections, deliver what Redis never echoed, retry later."""
        was_up = self.connected
        for c in (self.sub, self.pub):
            if c in self._readers:
                self.loop.close_connection(c)
        self._readers.clear()
        self.sub = self.pub = -1
        self.connected = False
        self._handshaking = False
        self._ping_sent = None
        self._confirmed.clear()
        pending, self._inflight = self._inflight, OrderedDict()
        self.redelivered += len(pending)
        for channel, frame, exclude in pending.values():
            self.deliver(channel, frame, exclude, None)
        # Who waits for a reply that will not come learns it now: a history publish may
        # or may not have been applied (its publisher is told it was not confirmed).
        expected, self._pub_expect = self._pub_expect, deque()
        pongs, self._pongs = self._pongs, deque()
        for waiting in expected:
            if callable(waiting):
                waiting(None)
        for synced in pongs:
            synced(False)
        if was_up and not self._down_logged:   # before _failed, which says "unreachable"
            log.warning("cluster: lost the connection to redis at %s:%d (%s); delivering "
                        "locally only until it is back", *self.addr, why)
            self._down_logged = True
        self._failed(self._now, why)
        self.on_down()

    def connection_lost(self, conn: int) -> None:
        if conn in self._readers:
            self._down("connection closed")

    def close(self) -> None:
        self._abandon_connect()
        for c in list(self._readers):
            self.loop.close_connection(c)
        self._readers.clear()
        self.connected = False
        self._next_try = None

    # -- subscriptions and messages ------------------------------------------

    def confirmed(self, channel: str) -> bool:
        return channel in self._confirmed

    def subscribe(self, channel: str) -> None:
        if channel in self._wanted:
            return
        self._wanted.add(channel)
        if self.connected or self._handshaking:
            self.loop.send(self.sub, pack_command((b"SUBSCRIBE", _rname(channel))), force=True)

    def unsubscribe(self, channel: str) -> None:
        if channel not in self._wanted:
            return
        self._wanted.discard(channel)
        self._confirmed.discard(channel)
        if self.connected or self._handshaking:
            self.loop.send(self.sub, pack_command((b"UNSUBSCRIBE", _rname(channel))), force=True)

    def publish(self, channel: str, frame: bytes, origin_conn: int) -> bool:
        """Send to the broker; False when the bridge is down (deliver locally)."""
        if not self.connected or len(self._inflight) >= INFLIGHT_MAX:
            self.local_only += 1
            return False
        self._seq += 1
        body = _ORIGIN.pack(self.nonce, origin_conn, self._seq) + frame
        if not self.loop.send(self.pub, pack_command((b"PUBLISH", _rname(channel), body)),
                              cap=OUTBOUND_CAP):
            self.local_only += 1
            return False
        self._pub_expect.append(b"publish")
        if channel in self._confirmed:   # its echo will come back to us
            self._inflight[self._seq] = (channel, frame, origin_conn)
        self.published += 1
        return True

    def publish_kept(self, channel: str, frame: bytes, origin_conn: int,
                     on_position: Positioned) -> bool:
        """Publish a message of a history channel (:data:`PUBLISH_SCRIPT`): Redis gives
        it its position, which comes to ``on_position``. False when the bridge is down:
        not published."""
        if not self.connected:
            return False
        self._seq += 1
        tag = _ORIGIN.pack(self.nonce, origin_conn, self._seq) + _KEPT
        hash_key, stream_key = _keys(channel)
        command = pack_command((
            b"EVAL", PUBLISH_SCRIPT, b"3", hash_key, stream_key, _rname(channel),
            tag, secrets.token_urlsafe(6).encode(), frame, self._size, self._ttl_ms))
        if not self.loop.send(self.pub, command, cap=OUTBOUND_CAP):
            return False

        def positioned(reply: Any) -> None:
            if reply is None or isinstance(reply, hiredis.ReplyError):
                if reply is not None:
                    log.error("cluster: redis refused a history publish on %r: %s",
                              channel, reply)
                on_position(None)
            else:
                on_position(Position(reply[0].decode(), int(reply[1])))

        self._pub_expect.append(positioned)
        self.published += 1
        return True

    def read_history(self, channel: str, after: int,
                     on_read: Callable[[StreamRead | None], None]) -> bool:
        """Read a history channel's position and its messages after offset ``after``
        (-1: none) from Redis (:data:`READ_SCRIPT`), for ``on_read`` (None: the bridge
        went down first, or Redis refused). False when the bridge is down."""
        if not self.connected:
            return False
        hash_key, stream_key = _keys(channel)
        command = pack_command((b"EVAL", READ_SCRIPT, b"2", hash_key, stream_key,
                                b"%d" % after))
        if not self.loop.send(self.pub, command, force=True):
            return False

        def read(reply: Any) -> None:
            if reply is None or isinstance(reply, hiredis.ReplyError):
                if reply is not None:
                    log.error("cluster: redis refused a history read of %r: %s", channel,
                              reply)
                on_read(None)
                return
            epoch, top, now_ms, found = reply
            entries = []
            for entry_id, fields in found:
                values = dict(zip(fields[::2], fields[1::2], strict=True))
                entries.append((int(entry_id.split(b"-")[1]), int(values[b"t"]),
                                values[b"f"]))
            on_read(StreamRead(Position(epoch.decode(), int(top)), int(now_ms), entries))

        self._pub_expect.append(read)
        return True

    def sync(self, on_synced: Synced) -> bool:
        """Have ``on_synced(True)`` called once every message Redis published before now
        has come to this node: a PING on the subscriber connection, which Redis answers
        after the messages it sent there before (``on_synced(False)``: the bridge went
        down first). False when the bridge is down."""
        if not self.connected:
            return False
        self.loop.send(self.sub, pack_command((b"PING",)), force=True)
        self._pongs.append(on_synced)
        return True

    def data_received(self, conn: int, data: bytes) -> None:
        reader = self._readers.get(conn)
        if reader is None:
            return
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if conn not in self._readers:
                return      # went down while handling an earlier reply
            if conn == self.sub:
                self._sub_reply(reply)
            else:
                self._pub_reply(reply)

    def _pub_reply(self, reply: Any) -> None:
        what = self._pub_expect.popleft() if self._pub_expect else b"?"
        if callable(what):
            what(reply)
        elif isinstance(reply, hiredis.ReplyError):
            self._refused(what, reply)
        elif what == b"ping":
            self._ping_sent = None
            self._maybe_up()
        elif what == b"auth":
            self._maybe_up()

    def _sub_reply(self, reply: Any) -> None:
        if isinstance(reply, hiredis.ReplyError):
            self._refused(b"auth" if self._sub_auth_pending else b"subscribe", reply)
        elif not isinstance(reply, list):
            if self._sub_auth_pending:      # +OK to AUTH
                self._sub_auth_pending = False
                self._maybe_up()
        elif len(reply) == 3 and reply[0] == b"message":
            self._message(reply[1], reply[2])
        elif len(reply) == 2 and reply[0] == b"pong" and self._pongs:
            self._pongs.popleft()(True)
        elif len(reply) == 3 and reply[0] == b"subscribe":
            name = reply[1].decode(errors="replace").removeprefix(CHANNEL_PREFIX)
            if name in self._wanted:
                self._confirmed.add(name)
                self._maybe_up()
                self.on_confirmed(name)

    def _refused(self, what: bytes, reply: Any) -> None:
        log.error("cluster: redis refused %s: %s (check the credentials in "
                  "cluster.redis_url)", what.decode(), reply)
        self._down(f"redis refused {what.decode()}")

    def _message(self, rchannel: bytes, body: bytes) -> None:
        name = rchannel.decode(errors="replace").removeprefix(CHANNEL_PREFIX)
        if len(body) < _ORIGIN.size:
            return
        nonce, conn, seq = _ORIGIN.unpack_from(body)
        self.received += 1
        exclude = NO_CONN
        if nonce == self.nonce:
            self._inflight.pop(seq, None)
            exclude = conn
        frame = body[_ORIGIN.size:]
        position = None
        if frame[:1] == _KEPT:  # H<epoch>:<offset>:<frame>, from PUBLISH_SCRIPT
            epoch, offset, frame = frame[1:].split(b":", 2)
            position = Position(epoch.decode(), int(offset))
        self.deliver(name, frame, exclude, position)

    def status(self) -> dict[str, Any]:
        return {"redis": "connected" if self.connected else "disconnected",
                "channels": len(self._confirmed)}
