"""RedisBridge's state machine, one step at a time, on real loopback sockets.

The test plays Redis: it accepts the bridge's two connections on a loopback
listener, reads the commands the bridge wrote (parsed with hiredis), writes
Redis's replies and watches what the bridge does with them. `SocketLoop` stands
in for the worker's ringio loop: the three calls the bridge makes of it, done
with the plain sockets. Time is the test's: ``maintain(now)`` is called with the
``now`` a step needs, so keepalive and backoff deadlines are exact, not slept for.
Real redis-server runs are in tests/cluster/test_redis.py.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import hiredis
import pytest

from ringcast.ringio import NO_CONN
from ringcast.server.cluster import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    CONNECT_TIMEOUT,
    PING_INTERVAL,
    PING_TIMEOUT,
    PUBLISH_SCRIPT,
    READ_SCRIPT,
    RedisBridge,
    StreamRead,
)
from ringcast.server.history import Position

WAIT = 5.0                              # seconds any one observable change may take
ORIGIN = struct.Struct("!8sIQ")         # the tag the bridge prefixes: nonce, conn, sequence
OK, PONG = b"+OK\r\n", b"+PONG\r\n"
WRONGPASS = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def subscribed(channel: str, count: int) -> bytes:
    """Redis's confirmation of one channel of a SUBSCRIBE."""
    name = f"ringcast:{channel}".encode()
    return b"*3\r\n" + bulk(b"subscribe") + bulk(name) + b":%d\r\n" % count


def message(channel: str, body: bytes) -> bytes:
    """A message Redis pushes to a subscriber connection."""
    return b"*3\r\n" + bulk(b"message") + bulk(f"ringcast:{channel}".encode()) + bulk(body)


def wait_for(done: Callable[[], bool], what: str, *,
             step: Callable[[], None] = lambda: None) -> None:
    """Run ``step`` until ``done()``; fail naming ``what`` after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while True:
        step()
        if done():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {WAIT}s waiting for {what}")
        time.sleep(0.001)


class SocketLoop:
    """adopt, send and close_connection as ringio's Loop does them, on plain sockets.

    ``pump`` plays the loop's reap and the runtime's dispatch: bytes that arrived
    go to ``data_received``, an end of stream to ``connection_lost``.
    """

    def __init__(self) -> None:
        self.socks: dict[int, socket.socket] = {}
        self.received: dict[int, int] = {}      # bytes handed to the bridge, per conn
        self._next = 100

    def adopt(self, sock: socket.socket) -> int:
        conn, self._next = self._next, self._next + 1
        self.socks[conn] = sock
        self.received[conn] = 0
        return conn

    def send(self, conn: int, data: bytes, *, cap: int = 0, force: bool = False) -> bool:
        self.socks[conn].sendall(data)      # a few bytes: the socket buffer takes them
        return True

    def close_connection(self, conn: int) -> None:
        self.socks.pop(conn).close()

    def pump(self, bridge: RedisBridge) -> None:
        for conn, sock in list(self.socks.items()):
            if conn not in self.socks:
                continue            # closed by the bridge while handling another
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            if data:
                self.received[conn] += len(data)
                bridge.data_received(conn, data)
            elif bridge.owns(conn):
                bridge.connection_lost(conn)


class Redis:
    """The server side of the bridge's two connections."""

    def __init__(self, listener: socket.socket, loop: SocketLoop, bridge: RedisBridge) -> None:
        self.listener = listener
        self.loop = loop
        self.bridge = bridge
        by_peer = dict(self._accept() for _ in range(2))
        self.sub = by_peer[loop.socks[bridge.sub].getsockname()]
        self.pub = by_peer[loop.socks[bridge.pub].getsockname()]
        self._readers = {self.sub: hiredis.Reader(), self.pub: hiredis.Reader()}

    def _accept(self) -> tuple[Any, socket.socket]:
        """One of the bridge's connections: (its address on the bridge's side, our end)."""
        ready, _, _ = select.select([self.listener], [], [], WAIT)
        assert ready, "the bridge's connection never arrived"
        peer, addr = self.listener.accept()
        return addr, peer

    def commands(self, side: socket.socket, count: int) -> list[list[bytes]]:
        """The next ``count`` commands the bridge sent on ``side``."""
        reader = self._readers[side]
        out: list[list[bytes]] = []
        deadline = time.monotonic() + WAIT
        while len(out) < count:
            while len(out) < count and (cmd := reader.gets()) is not False:
                out.append(cmd)
            if len(out) == count:
                break
            ready, _, _ = select.select([side], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"expected {count} commands, got {out}"
            data = side.recv(65536)
            assert data, f"the bridge closed the connection; commands so far: {out}"
            reader.feed(data)
        return out

    def nothing_more(self, side: socket.socket) -> bool:
        ready, _, _ = select.select([side], [], [], 0)
        return not ready and self._readers[side].gets() is False

    def say(self, side: socket.socket, data: bytes) -> None:
        """Write ``data``; return once the bridge has handled all of it, or closed ``side``."""
        conn = self.bridge.sub if side is self.sub else self.bridge.pub
        before = self.loop.received[conn]
        side.sendall(data)
        wait_for(lambda: (self.loop.received[conn] >= before + len(data)
                          or conn not in self.loop.socks),
                 f"the bridge to read {len(data)} bytes", step=self.pump)

    def hang_up(self, side: socket.socket) -> None:
        """Close ``side``; return once the bridge noticed."""
        side.close()
        wait_for(lambda: not self.bridge.owns(self.bridge.sub),
                 "the bridge to notice the closed connection", step=self.pump)

    def pump(self) -> None:
        self.loop.pump(self.bridge)

    def closed_by_bridge(self, side: socket.socket) -> bool:
        """Whether the bridge closed ``side`` (what it sent before is skipped)."""
        deadline = time.monotonic() + WAIT
        while select.select([side], [], [], max(0.0, deadline - time.monotonic()))[0]:
            try:
                if not side.recv(65536):
                    return True
            except ConnectionResetError:
                return True
        return False

    def close(self) -> None:
        self.sub.close()
        self.pub.close()


class Harness:
    """A bridge, its loop, what it delivered and what its callbacks saw."""

    def __init__(self, listener: socket.socket, *, userinfo: str = "",
                 channels: tuple[str, ...] = ()) -> None:
        host, port = listener.getsockname()
        self.listener = listener
        self.channels = channels
        self.loop = SocketLoop()
        self.delivered: list[tuple[str, bytes, int]] = []
        self.kept: list[tuple[str, bytes, int, Position]] = []  # with their positions
        self.confirmations: list[str] = []
        self.downs = 0
        self._redis: list[Redis] = []
        self.bridge = RedisBridge(
            f"redis://{userinfo}{host}:{port}", self.loop,
            self._deliver, lambda: list(channels), on_confirmed=self.confirmations.append,
            on_down=self._down)

    def _down(self) -> None:
        self.downs += 1

    def _deliver(self, channel: str, frame: bytes, exclude: int,
                 position: Position | None) -> None:
        if position is None:
            self.delivered.append((channel, frame, exclude))
        else:
            self.kept.append((channel, frame, exclude, position))

    def connect(self, now: float) -> Redis:
        """Start the connects at ``now``; return Redis's side once both are made."""
        self.bridge.maintain(now)
        wait_for(lambda: len(self.loop.socks) == 2, "both connections",
                 step=lambda: self.bridge.maintain(now))
        redis = Redis(self.listener, self.loop, self.bridge)
        self._redis.append(redis)
        return redis

    def up(self, now: float, also: tuple[str, ...] = ()) -> Redis:
        """Connect (no credentials) and answer the handshake: the bridge is up.
        ``also``: channels subscribed to while the bridge was down."""
        redis = self.connect(now)
        channels = sorted({*self.channels, *also})
        if channels:
            subscribe = [b"SUBSCRIBE", *(f"ringcast:{c}".encode() for c in channels)]
            assert redis.commands(redis.sub, 1) == [subscribe]
            redis.say(redis.sub, b"".join(subscribed(c, i + 1)
                                          for i, c in enumerate(channels)))
        assert redis.commands(redis.pub, 1) == [[b"PING"]]
        redis.say(redis.pub, PONG)
        assert self.bridge.connected
        return redis

    def close(self) -> None:
        self.bridge.close()
        for redis in self._redis:
            redis.close()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s


MakeHarness = Callable[..., Harness]


@pytest.fixture
def make_harness(listener: socket.socket) -> Iterator[MakeHarness]:
    """``make_harness(userinfo=..., channels=..., to=listener)``; closed after the test."""
    made: list[Harness] = []

    def make(*, to: socket.socket = listener, **kwargs: Any) -> Harness:
        made.append(Harness(to, **kwargs))
        return made[-1]

    yield make
    for h in made:
        h.close()


@pytest.fixture
def harness(make_harness: MakeHarness) -> Harness:
    return make_harness()


# -- getting up -------------------------------------------------------------


def test_up_only_once_auth_subscriptions_and_ping_are_answered(make_harness: MakeHarness) -> None:
    h = make_harness(userinfo="app:s3cret@", channels=("b", "a"))
    redis = h.connect(now=1.0)
    # What redis-cli would send: AUTH on both connections, every channel in one
    # SUBSCRIBE, a PING to prove the publishing side answers.
    assert redis.commands(redis.sub, 2) == [[b"AUTH", b"app", b"s3cret"],
                                            [b"SUBSCRIBE", b"ringcast:a", b"ringcast:b"]]
    assert redis.commands(redis.pub, 2) == [[b"AUTH", b"app", b"s3cret"], [b"PING"]]

    redis.say(redis.pub, OK + PONG)
    assert not h.bridge.connected, "the subscriber side has not accepted AUTH yet"
    redis.say(redis.sub, OK + subscribed("a", 1))
    assert h.confirmations == ["a"] and h.bridge.confirmed("a")
    assert not h.bridge.connected, "channel b is not confirmed yet"
    redis.say(redis.sub, subscribed("b", 2))
    assert h.confirmations == ["a", "b"]
    assert h.bridge.connected
    assert h.bridge.status() == {"redis": "connected", "channels": 2}


def test_up_waits_for_auth_on_both_connections(make_harness: MakeHarness) -> None:
    h = make_harness(userinfo=":s3cret@")
    redis = h.connect(now=1.0)
    assert redis.commands(redis.sub, 1) == [[b"AUTH", b"s3cret"]]
    assert redis.commands(redis.pub, 2) == [[b"AUTH", b"s3cret"], [b"PING"]]
    redis.say(redis.pub, OK + PONG)
    assert not h.bridge.connected
    redis.say(redis.sub, OK)
    assert h.bridge.connected


def test_each_connection_is_logged_at_info_credentials_masked(
        make_harness: MakeHarness, caplog: pytest.LogCaptureFixture) -> None:
    h = make_harness(userinfo="app:s3cret@", channels=("a",))
    port = h.listener.getsockname()[1]

    def connect(now: float) -> list[str]:
        """Connect and answer AUTH, SUBSCRIBE and PING; the messages logged meanwhile."""
        seen = len(caplog.records)
        redis = h.connect(now)
        assert [c[0] for c in redis.commands(redis.sub, 2)] == [b"AUTH", b"SUBSCRIBE"]
        assert [c[0] for c in redis.commands(redis.pub, 2)] == [b"AUTH", b"PING"]
        redis.say(redis.pub, OK + PONG)
        redis.say(redis.sub, OK + subscribed("a", 1))
        assert h.bridge.connected
        redis.hang_up(redis.sub)
        return [r.getMessage() for r in caplog.records[seen:] if r.levelno == logging.INFO]

    assert connect(now=1.0) == [
        f"cluster: connected to redis://app:***@127.0.0.1:{port} (1 channels subscribed); "
        "publishes go through it"]
    assert connect(now=2.0) == [
        f"cluster: reconnected to redis://app:***@127.0.0.1:{port} (1 channels subscribed); "
        "publishes go through it"]
    assert "s3cret" not in caplog.text


def test_refused_auth_takes_the_bridge_down(make_harness: MakeHarness,
                                            caplog: pytest.LogCaptureFixture) -> None:
    h = make_harness(userinfo=":s3cret@", channels=("a",))
    redis = h.connect(now=1.0)
    assert redis.commands(redis.sub, 2) == [[b"AUTH", b"s3cret"], [b"SUBSCRIBE", b"ringcast:a"]]
    # Whatever follows the refusal in the same read is not acted on.
    redis.say(redis.sub, WRONGPASS + subscribed("a", 1))
    assert not h.bridge.connected and h.confirmations == []
    assert h.downs == 1
    assert redis.closed_by_bridge(redis.sub) and redis.closed_by_bridge(redis.pub)
    assert h.bridge.next_attempt() == pytest.approx(1.0 + BACKOFF_MIN)
    assert "redis refused auth: WRONGPASS" in caplog.text
    assert "s3cret" not in caplog.text


# -- publishing -----------------------------------------------------------------


def test_while_down_a_publish_is_local_only(harness: Harness) -> None:
    assert harness.bridge.publish("a", b"frame", 7) is False
    assert harness.bridge.local_only == 1 and harness.delivered == []


def test_publish_goes_to_redis_tagged_and_the_echo_skips_its_publisher(
        make_harness: MakeHarness) -> None:
    h = make_harness(channels=("a",))
    redis = h.up(now=1.0)
    body = b"\x82\x05hello\r\n\x00"         # binary: RESP carries it by length
    assert h.bridge.publish("a", body, 7) is True
    assert h.delivered == [], "while up, a publish is delivered only when Redis sends it back"
    [[verb, channel, tagged]] = redis.commands(redis.pub, 1)
    assert (verb, channel) == (b"PUBLISH", b"ringcast:a")
    assert ORIGIN.unpack_from(tagged) == (h.bridge.nonce, 7, 1)
    assert tagged[ORIGIN.size:] == body
    redis.say(redis.pub, b":1\r\n")

    other_node = ORIGIN.pack(b"another!", 7, 1) + b"theirs"
    redis.say(redis.sub, message("a", tagged) + message("a", other_node)
              + message("a", b"short"))
    assert h.delivered == [("a", body, 7),                 # ours: not back to its publisher
                           ("a", b"theirs", NO_CONN)]      # another node's: to everyone
    assert h.bridge.received == 2, "a body shorter than the tag is ignored"


def test_unechoed_messages_are_delivered_locally_once_when_redis_goes(
        make_harness: MakeHarness, caplog: pytest.LogCaptureFixture) -> None:
    h = make_harness(channels=("a",))
    redis = h.up(now=1.0)
    for frame in (b"m1", b"m2", b"m3"):
        assert h.bridge.publish("a", frame, 7)
    assert h.bridge.publish("z", b"nobody here", 7), "no local interest in z: no echo owed"
    published = [cmd[2] for cmd in redis.commands(redis.pub, 4)]
    redis.say(redis.sub, message("a", published[0]))
    assert h.delivered == [("a", b"m1", 7)]

    pub = h.bridge.pub
    redis.hang_up(redis.sub)
    assert not h.bridge.connected and h.downs == 1
    assert "lost the connection to redis" in caplog.text
    assert redis.closed_by_bridge(redis.pub), "both connections go"
    assert h.delivered == [("a", b"m1", 7), ("a", b"m2", 7), ("a", b"m3", 7)]
    assert h.bridge.redelivered == 2
    h.bridge.connection_lost(pub)       # the other connection's end: nothing more happens
    assert h.bridge.redelivered == 2 and h.downs == 1


# -- history channels: Redis orders them -------------------------------------------


def test_a_history_publish_is_one_script_and_redis_gives_its_position(
        make_harness: MakeHarness) -> None:
    h = make_harness(channels=("a",))
    redis = h.up(now=1.0)
    positions: list[Position | None] = []
    assert h.bridge.publish_kept("a", b"\x81\x02hi", 7, positions.append) is True
    [command] = redis.commands(redis.pub, 1)
    verb, script, nkeys, *keys, tag, epoch, frame, size, ttl = command
    assert (verb, script, nkeys) == (b"EVAL", PUBLISH_SCRIPT, b"3")
    assert keys == [b"ringcast:history:a", b"ringcast:stream:a", b"ringcast:a"]
    assert ORIGIN.unpack_from(tag) == (h.bridge.nonce, 7, 1) and tag[ORIGIN.size:] == b"H"
    assert len(epoch) == 8 and frame == b"\x81\x02hi" and (size, ttl) == (b"1", b"0")
    assert positions == [], "answered when Redis replies"
    redis.say(redis.pub, b"*2\r\n" + bulk(b"Ep0chXyz") + b":41\r\n")
    assert positions == [Position("Ep0chXyz", 41)]
    # What the script PUBLISHes: the tag, then the position, then the frame.
    redis.say(redis.sub, message("a", tag + b"Ep0chXyz:41:\x81\x02hi"))
    assert h.kept == [("a", b"\x81\x02hi", 7, Position("Ep0chXyz", 41))]
    assert h.delivered == []


def test_a_refused_history_publish_is_not_positioned_and_the_bridge_stays_up(
        make_harness: MakeHarness, caplog: pytest.LogCaptureFixture) -> None:
    h = make_harness()
    redis = h.up(now=1.0)
    positions: list[Position | None] = []
    assert h.bridge.publish_kept("a", b"f", 7, positions.append)
    redis.commands(redis.pub, 1)
    redis.say(redis.pub, b"-OOM command not allowed when used memory > 'maxmemory'.\r\n")
    assert positions == [None] and h.bridge.connected
    assert "redis refused a history publish on 'a'" in caplog.text


def test_a_stream_read_gives_the_position_and_the_entries(make_harness: MakeHarness) -> None:
    h = make_harness()
    redis = h.up(now=1.0)
    reads: list[StreamRead | None] = []
    assert h.bridge.read_history("a", 3, reads.append)
    [command] = redis.commands(redis.pub, 1)
    assert command == [b"EVAL", READ_SCRIPT, b"2", b"ringcast:history:a",
                       b"ringcast:stream:a", b"3"]
    entry = b"*2\r\n" + bulk(b"0-4") + b"*4\r\n" + bulk(b"t") + bulk(b"1700") + \
        bulk(b"f") + bulk(b"\x81\x01x")
    redis.say(redis.pub, b"*4\r\n" + bulk(b"Ep0chXyz") + b":4\r\n:1800\r\n*1\r\n" + entry)
    assert reads == [StreamRead(Position("Ep0chXyz", 4), 1800, [(4, 1700, b"\x81\x01x")])]


def test_sync_is_a_ping_answered_after_what_redis_sent_before(
        make_harness: MakeHarness) -> None:
    h = make_harness(channels=("a",))
    redis = h.up(now=1.0)
    synced: list[bool] = []
    assert h.bridge.sync(synced.append)
    assert redis.commands(redis.sub, 1) == [[b"PING"]]
    tag = ORIGIN.pack(b"another!", 1, 1) + b"H"
    redis.say(redis.sub, message("a", tag + b"E:1:m") + b"*2\r\n" + bulk(b"pong") + bulk(b""))
    assert [k[3] for k in h.kept] == [Position("E", 1)] and synced == [True]


def test_what_waits_for_redis_fails_when_it_goes(make_harness: MakeHarness) -> None:
    h = make_harness()
    redis = h.up(now=1.0)
    positions: list[Position | None] = []
    reads: list[StreamRead | None] = []
    synced: list[bool] = []
    assert h.bridge.publish_kept("a", b"f", 7, positions.append)
    assert h.bridge.read_history("a", -1, reads.append)
    assert h.bridge.sync(synced.append)
    assert len(redis.commands(redis.pub, 2)) == 2 and redis.commands(redis.sub, 1)
    redis.hang_up(redis.sub)
    assert (positions, reads, synced) == ([None], [None], [False])
    assert not h.bridge.publish_kept("a", b"f", 7, positions.append)
    assert not h.bridge.read_history("a", -1, reads.append)
    assert not h.bridge.sync(synced.append)


# -- subscriptions ------------------------------------------------------------


def test_subscribe_and_unsubscribe_while_up(harness: Harness) -> None:
    redis = harness.up(now=1.0)
    harness.bridge.subscribe("x")
    harness.bridge.subscribe("x")
    assert redis.commands(redis.sub, 1) == [[b"SUBSCRIBE", b"ringcast:x"]]
    assert redis.nothing_more(redis.sub), "one SUBSCRIBE per channel"
    assert not harness.bridge.confirmed("x"), "not before Redis confirms it"
    redis.say(redis.sub, subscribed("x", 1))
    assert harness.bridge.confirmed("x") and harness.confirmations == ["x"]
    harness.bridge.unsubscribe("x")
    assert redis.commands(redis.sub, 1) == [[b"UNSUBSCRIBE", b"ringcast:x"]]
    assert not harness.bridge.confirmed("x")

    # Gone before its confirmation came: the confirmation is ignored.
    harness.bridge.subscribe("y")
    harness.bridge.unsubscribe("y")
    assert redis.commands(redis.sub, 2) == [[b"SUBSCRIBE", b"ringcast:y"],
                                            [b"UNSUBSCRIBE", b"ringcast:y"]]
    redis.say(redis.sub, subscribed("y", 1))
    assert not harness.bridge.confirmed("y") and harness.confirmations == ["x"]


def test_channels_wanted_while_down_are_subscribed_on_connect(make_harness: MakeHarness) -> None:
    h = make_harness(channels=("a",))
    h.bridge.subscribe("b")
    h.up(now=1.0, also=("b",))
    assert h.confirmations == ["a", "b"]


# -- keepalive and backoff ----------------------------------------------------


def test_an_unanswered_ping_takes_the_bridge_down(harness: Harness) -> None:
    redis = harness.up(now=1.0)
    t = 1.0 + PING_INTERVAL
    assert harness.bridge.next_attempt() == pytest.approx(t)
    harness.bridge.maintain(t)
    assert redis.commands(redis.pub, 1) == [[b"PING"]]
    redis.say(redis.pub, PONG)

    t += PING_TIMEOUT + 0.01
    harness.bridge.maintain(t)
    assert harness.bridge.connected, "the PING was answered"
    assert redis.commands(redis.pub, 1) == [[b"PING"]], "the next one is due"
    harness.bridge.maintain(t + PING_TIMEOUT - 0.01)
    assert harness.bridge.connected, "not late yet"
    harness.bridge.maintain(t + PING_TIMEOUT + 0.01)
    assert not harness.bridge.connected and harness.downs == 1
    assert redis.closed_by_bridge(redis.sub) and redis.closed_by_bridge(redis.pub)
    assert harness.bridge.next_attempt() == pytest.approx(t + PING_TIMEOUT + 0.01 + BACKOFF_MIN)


def refused_try(h: Harness, now: float) -> float:
    """A try at ``now`` that is refused; returns how long until the next one."""
    wait_for(lambda: (h.bridge.next_attempt() or 0.0) >= now + BACKOFF_MIN, "the refusal",
             step=lambda: h.bridge.maintain(now))
    return (h.bridge.next_attempt() or 0.0) - now


def test_backoff_doubles_up_to_its_cap_and_resets_once_up(
        make_harness: MakeHarness, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))       # bound, not listening: connects are refused
        h = make_harness(to=closed)
        now, delays = 0.0, []
        for _ in range(8):
            delay = refused_try(h, now)
            delays.append(delay)
            now += delay
        assert delays == pytest.approx([min(BACKOFF_MIN * 2**i, BACKOFF_MAX) for i in range(8)])
        assert caplog.text.count("unreachable") == 1, "one warning per outage, not per try"
        assert h.bridge.publish("a", b"frame", 7) is False

        closed.listen(16)
        redis = h.up(now)
        assert "connected to redis" in caplog.text
        redis.hang_up(redis.pub)
        assert h.bridge.next_attempt() == pytest.approx(now + BACKOFF_MIN)


def test_a_connect_nobody_answers_gives_up_after_the_timeout(
        make_harness: MakeHarness, caplog: pytest.LogCaptureFixture) -> None:
    with contextlib.ExitStack() as stack:
        full = stack.enter_context(socket.socket())
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        # Fill its accept queue: the kernel drops further SYNs, so a connect hangs.
        for _ in range(4):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            filler.connect_ex(full.getsockname())
        h = make_harness(to=full)
        h.bridge.maintain(10.0)
        h.bridge.maintain(10.0 + CONNECT_TIMEOUT - 0.01)
        assert h.loop.socks == {} and "unreachable" not in caplog.text, "still trying"
        h.bridge.maintain(10.0 + CONNECT_TIMEOUT + 0.01)
        assert f"no answer within {CONNECT_TIMEOUT:.0f}s" in caplog.text
        assert h.bridge.next_attempt() == pytest.approx(10.0 + CONNECT_TIMEOUT + 0.01
                                                        + BACKOFF_MIN)
        assert h.loop.socks == {}


def test_close_closes_both_connections(harness: Harness) -> None:
    redis = harness.up(now=1.0)
    harness.bridge.close()
    assert not harness.bridge.connected and harness.bridge.next_attempt() is None
    assert redis.closed_by_bridge(redis.sub) and redis.closed_by_bridge(redis.pub)


@pytest.fixture(autouse=True)
def _capture_bridge_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ringcast")
