"""The runtime: one ringio loop (io_uring or epoll) drives everything a worker does.

Follow one message through this file, top to bottom. One iteration of :meth:`Server.run`:

1. ``loop.reap_raw(timeout)`` waits for events (``ringio``: multishot receives and
   accepts, send completions handled in C); the timeout is the nearest deadline.
2. :meth:`Server.run_once` hands each event to the owner of its connection id (a lookup
   in the :class:`~.table.ConnectionTable`): client connections (:class:`~.clients.Clients`),
   links to the other workers (:class:`~.peers.PeerLinks`), the broker bridge, the signal
   wake-up socket. A client's bytes go to its sans-I/O session
   (:class:`~.protocol.session.Session`, which reads frames with wsproto) and come back as
   actions, which :meth:`Clients.execute <.clients.Clients.execute>` carries out. A
   complete WebSocket message is a ``Publish`` action: framed once for every subscriber
   (:func:`~.protocol.frames.data_frame`) and handed to :meth:`FanOut.publish
   <.fanout.FanOut.publish>`, which sends it to the broker, or to the other workers and to
   this worker's :class:`~.hub.Hub`, where it waits for the end of the iteration.
3. :meth:`FanOut.flush <.fanout.FanOut.flush>`: each channel's messages of the iteration
   leave as one run, copied once into a slot of the loop; ``rio_fanout`` (C) queues the
   slot to every subscriber and submits the sends in batches.
4. Due timers run: session deadlines (handshake timeouts, keepalive pings, close
   timeouts), resets of lingering connections, retries; the links and the bridge keep
   themselves up.

Only this package's runtime modules own file descriptors and read the clock; the protocol
core gets bytes and time as arguments. Per-delivery work is in C; Python does the work of
each message and of each connection's life.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from importlib import resources
from typing import Any, Final

from ringcast.config import Config, load_config, plan_reload
from ringcast.errors import ConfigError
from ringcast.ringio import ConnId, EventKind, Loop
from ringcast.server import sdnotify
from ringcast.server.backend import Backend
from ringcast.server.clients import Clients
from ringcast.server.cluster import Bridge, RedisBridge
from ringcast.server.fanout import FanOut
from ringcast.server.history import History, Position
from ringcast.server.hub import Hub
from ringcast.server.metrics import Counters, Metrics
from ringcast.server.peers import PeerLinks
from ringcast.server.port import tcp_socket
from ringcast.server.protocol import keepalive
from ringcast.server.protocol.deflate import Compressor
from ringcast.server.protocol.frames import CloseCode
from ringcast.server.protocol.http_phase import CLIENT_SCRIPT
from ringcast.server.settings import Current
from ringcast.server.status import StatusBoard
from ringcast.server.table import ConnectionTable, Owner
from ringcast.server.timers import Timers

__all__ = ["LINK_WAIT", "Server", "build_server"]

_DATA: Final = EventKind.DATA.value
_ACCEPT: Final = EventKind.ACCEPT.value

log = logging.getLogger("ringcast")

LINK_WAIT = 2.0  # how long a new worker waits for its links before accepting anyway
HEALTH_CHECK_EVERY = 10.0  # seconds between looks at the loop's own counters
STATUS_EVERY = 1.0  # seconds between the status page's figures


class _WakeUp(Owner):
    """The signal wake-up socket: its bytes only wake ``reap``; the handler already ran."""


class _BrokerConnections(Owner):
    """The broker bridge's connections, in the table: the bridge opens them through this
    object (its loop) and gets their events from it, so it knows nothing of owners."""

    def __init__(self, table: ConnectionTable, bridge: Callable[[], Bridge]) -> None:
        self._table = table
        self._loop = table.loop
        self._bridge = bridge

    # What the bridge calls its loop (it counts connections in plain ints).

    def adopt(self, sock: socket.socket) -> int:
        return self._table.adopt(sock, self)

    def send(self, conn: int, data: bytes, *, cap: int = 0, force: bool = False) -> bool:
        return self._loop.send(ConnId(conn), data, cap=cap, force=force)

    def close_connection(self, conn: int) -> None:
        self._loop.close_connection(ConnId(conn))

    def data_received(self, conn: ConnId, data: bytes, now: float) -> None:
        self._bridge().data_received(conn, data)

    def hung_up(self, conn: ConnId, err: int, now: float) -> None:
        self._bridge().connection_lost(conn)


class Server:
    """One worker's server: its listeners, the owners of its connections, its timers.

    Life cycle: :meth:`start` binds and listens (the kernel queues connections);
    :meth:`accept_clients` starts accepting them (a worker of several does so once linked
    to the others); :meth:`run` serves until :meth:`stop` (SIGTERM/SIGINT once
    :meth:`install_signal_handlers` was called); then, for ``shutdown.lame_duck`` seconds
    (not after SIGINT), it still accepts and serves while ``/healthz`` answers 503, and then
    drains: no more accepts, close 1001 to every client, queued bytes flushed for up to
    ``shutdown.drain_timeout`` seconds.
    Build one with :func:`build_server`.
    """

    def __init__(self, current: Current, backend: Backend, table: ConnectionTable, *,
                 clients: Clients, fanout: FanOut, timers: Timers, metrics: Metrics,
                 peers: PeerLinks | None, bridge: Bridge | None, config_path: str | None,
                 worker: int, on_linked: Callable[[], None]) -> None:
        self.current = current
        self.status: StatusBoard | None = None  # set by build_server
        self.backend = backend
        self.loop: Loop = backend.loop
        self.table = table
        self.clients = clients
        self.fanout = fanout
        self.timers = timers
        self.metrics = metrics
        self.peers = peers
        self.bridge = bridge
        self.config_path = config_path
        self.worker = worker
        self._on_linked: Callable[[], None] | None = on_linked
        self.address: tuple[str, int] = ("", 0)
        self._unarmed: list[socket.socket] = []  # listening, not accepting yet
        self._link_deadline = time.monotonic() + LINK_WAIT
        self._wake_w: socket.socket | None = None
        self._reload_requested = False
        self.stopping = False
        # When the lame duck ends (stopping, not draining yet: /healthz 503, still
        # serving); None until it begins, 0.0 when skipped.
        self._lame_until: float | None = None
        self._drain_deadline = 0.0
        self._events_deferred = 0

    @property
    def config(self) -> Config:
        return self.current.config

    # -- start and stop ----------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        """Bind and listen; connections wait in the backlog until `accept_clients`."""
        srv = self.config.server
        sock = tcp_socket(srv.host)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.peers is not None:
            # Workers of one supervisor share the port (the kernel spreads connections
            # over their listeners). A server alone does not: its bind then fails while
            # any other process listens there, instead of splitting the clients with it.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if self.config.limits.socket_send_buffer:
            # Accepted sockets inherit it: what a stalled client can hold in the kernel
            # is bounded too, not only what waits in ringio's queue.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                            self.config.limits.socket_send_buffer)
        sock.bind((srv.host, srv.port))
        sock.listen(srv.backlog)
        self.address = sock.getsockname()[:2]
        self._unarmed.append(sock)
        return self.address

    def accept_clients(self) -> None:
        """Start accepting on the listeners `start` opened.

        A worker of several calls this only once it is linked both ways to every other
        worker (or after LINK_WAIT): until then the kernel holds new connections in the
        backlog, so no client of this worker can miss a message another worker publishes
        after the client's handshake.
        """
        while self._unarmed:
            self.clients.listen(self._unarmed.pop())
        if self._on_linked is not None:
            on_linked, self._on_linked = self._on_linked, None
            on_linked()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT drain and stop, SIGHUP reloads; the loop wakes through a
        socketpair the loop owns."""
        r, w = socket.socketpair()
        w.setblocking(False)
        self._wake_w = w
        self.table.adopt(r, _WakeUp())
        signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop(lame_duck=False))
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    def stop(self, *, lame_duck: bool = True) -> None:
        """Stop serving: after the lame duck (``lame_duck=False``, or a second call, skips
        what is left of it), drain. Safe in a signal handler: it only sets flags."""
        if self.stopping or not lame_duck:
            self._lame_until = 0.0
        self.stopping = True

    def request_reload(self) -> None:
        self._reload_requested = True

    def reload(self) -> None:
        """Read the config file again (SIGHUP) and apply what can change live.

        Limits, policies, tokens and the log level apply at once (new limits to new
        connections; the queue cap and slow-consumer policy to every fan-out from now on).
        Other changes are logged as needing a restart and not applied. An invalid file
        changes nothing.
        """
        self._reload_requested = False
        sdnotify.reloading()
        try:
            plan = plan_reload(self.config, load_config(self.config_path, os.environ))
            current = Current.of(plan.applied) if plan.live else self.current
        except (ConfigError, ValueError) as exc:
            log.error("reload refused, the running configuration stays: %s", exc)
            sdnotify.ready()
            return
        sdnotify.ready()
        if plan.restart:
            log.warning("reload: %s changed but need a restart; not applied",
                        plan.describe(plan.restart))
        if not plan.live:
            log.info("reload: no live-reloadable setting changed")
            return
        # Every part holds this one object: swap both halves together.
        self.current.config, self.current.settings = current.config, current.settings
        self.keep_alive()
        logging.getLogger().setLevel(self.config.logging.level.upper())
        log.info("reload: applied %s", plan.describe(plan.live))

    def keep_alive(self) -> None:
        """Hand keepalive to the loop (``limits.ping_interval``, ``ping_timeout``): a ping to
        each WebSocket idle that long, pongs taken in C (see .protocol.keepalive)."""
        limits = self.config.limits
        self.loop.heartbeat_config(limits.ping_interval, limits.ping_timeout, keepalive.PING,
                                   keepalive.pong_absorber())

    def _begin_lame_duck(self, now: float) -> float:
        """When the lame duck ends (now, when ``shutdown.lame_duck`` is 0)."""
        seconds = self.config.shutdown.lame_duck
        if seconds > 0:
            sdnotify.stopping(f"lame duck for {seconds:g}s, then draining")
            log.info("stopping: /healthz answers 503 for %gs while still serving (a load "
                     "balancer's time to stop sending clients), then draining", seconds)
        return now + seconds

    def _begin_drain(self, now: float) -> None:
        clients = self.clients
        sdnotify.stopping(f"draining {clients.open} connections")
        clients.draining = True
        self._drain_deadline = now + self.config.shutdown.drain_timeout
        clients.stop_listening()
        while self._unarmed:
            self._unarmed.pop().close()
        log.info("draining: %d connections, up to %.1fs", clients.open,
                 self.config.shutdown.drain_timeout)
        clients.close_all(CloseCode.GOING_AWAY, "server shutting down", now)
        self.fanout.flush()

    def run(self) -> None:
        """Serve until stopped and drained. Raises RingioError if the loop fails for good
        (the kernel refused the ring): the worker must exit, and its supervisor restarts
        it."""
        self.timers.call_at(time.monotonic() + HEALTH_CHECK_EVERY, self._check_loop)
        self.timers.call_at(time.monotonic() + STATUS_EVERY, self._status_tick)
        try:
            while True:
                now = time.monotonic()
                if self._reload_requested:
                    self.reload()
                if self.stopping and not self.clients.draining:
                    if self._lame_until is None:
                        self._lame_until = self._begin_lame_duck(now)
                    if now >= self._lame_until:
                        self._begin_drain(now)
                if self.clients.draining and (self.clients.done or now >= self._drain_deadline):
                    break
                self.run_once(self._timeout(now))
        finally:
            self.close()

    def _status_tick(self) -> None:
        if self.status is not None:
            self.status.tick()
        self.timers.call_at(time.monotonic() + STATUS_EVERY, self._status_tick)

    def _check_loop(self) -> None:
        """Say when ringio had to hold events back for want of memory (none is lost, but
        the process is short of memory), every HEALTH_CHECK_EVERY seconds at most."""
        deferred = self.loop.stats()["events_deferred"]
        if deferred > self._events_deferred:
            log.warning("%d events waited for memory to be reported (%d in all): this "
                        "process is short of memory; nothing was lost, but lower "
                        "limits.max_connections or give it more memory",
                        deferred - self._events_deferred, deferred)
            self._events_deferred = deferred
        self.timers.call_at(time.monotonic() + HEALTH_CHECK_EVERY, self._check_loop)

    def close(self) -> None:
        if self._wake_w is not None:
            signal.set_wakeup_fd(-1)
            self._wake_w.close()
            self._wake_w = None
        self.loop.close()

    # -- one iteration -------------------------------------------------------------------

    def run_once(self, timeout: float) -> None:
        events, received = self.loop.reap_raw(timeout)
        now = self.fanout.received_at = time.monotonic()
        owner_of = self.table.owner
        # DATA and ACCEPT straight from the raw events (a storm is thousands of each per
        # reap: an Event object and a call per event would be a tenth of a handshake's
        # Python); the rest through _dispatch.
        for kind, conn, res, length, aux in events:
            if kind == _DATA:
                owner = owner_of(conn)
                if owner is not None:  # None: bytes for an id closed meanwhile
                    owner.data_received(conn, received[aux:aux + length], now)
            elif kind == _ACCEPT:
                self._accepted(conn, res, ConnId(aux), now)
            else:
                self._dispatch(kind, conn, res, now)
        self.fanout.flush()
        self.timers.run_due(now)
        if not self.loop.behind:
            # Sessions' deadlines (a handshake's, a closing handshake's) time out a silent
            # peer: not while bytes that have arrived wait unread (a storm, a starved
            # worker), for they may be the ones awaited. The next caught-up reap judges.
            self.clients.run_due(now)
        self.fanout.flush()  # what the timers published (a released handshake's frames)
        if self.peers is not None:
            self.peers.maintain(now)
            self.fanout.expire(now)
            if self._unarmed and (self.peers.linked or now >= self._link_deadline):
                if not self.peers.linked:
                    log.warning("not linked to every other worker after %.0fs (out %d, in %d "
                                "of %d); accepting anyway: their messages reach this worker's "
                                "clients once linked", LINK_WAIT, len(self.peers.out),
                                len(self.peers.inbound), self.peers.count - 1)
                self.accept_clients()
        if self.bridge is not None:
            self.bridge.maintain(now)

    def _accepted(self, conn: ConnId, fd: int, listener_id: ConnId, now: float) -> None:
        """conn is new: its listener's owner decides."""
        listener = self.table.owner(listener_id)
        if listener is None:
            self.loop.close_connection(conn)  # a listener closed meanwhile
        else:
            self.table.own(conn, listener.accepted(conn, fd, listener_id, now))

    def _dispatch(self, kind: int, conn: ConnId, res: int, now: float) -> None:
        """An event other than DATA and ACCEPT (see run_once), to its id's owner. ``kind``
        is the C core's number: compared with the IntEnum members, not converted (a call
        per event)."""
        owner = self.table.owner(conn)
        if owner is None:
            return  # the wake-up of a closed id, or a listener closed meanwhile
        if kind == EventKind.HUP:
            owner.hung_up(conn, res, now)
        elif kind == EventKind.CLOSED:
            self.table.forget(conn)
            owner.released(conn)
        elif kind == EventKind.OVERFLOW:
            owner.overflowed(conn, now)
        elif kind == EventKind.HEARTBEAT_TIMEOUT:
            owner.heartbeat_timeout(conn, now)
        elif kind == EventKind.ACCEPT_ERROR:
            owner.accept_failed(conn, res, now)
        elif kind == EventKind.REFUSED:
            owner.refused(conn, now)

    def _timeout(self, now: float) -> float:
        """Seconds until the nearest deadline of anything this worker waits for (at most 1)."""
        lame = self._lame_until if self.stopping and not self.clients.draining else None
        nearest = [self.timers.next_time(), self.clients.next_deadline(), lame]
        for helper in (self.peers, self.bridge):
            if helper is not None:
                nearest.append(helper.next_attempt())
        return max(0.0, min([1.0, *(t - now for t in nearest if t is not None)]))

    # -- GET /healthz and /metrics -------------------------------------------------------

    @property
    def state(self) -> str:
        """``ok``, ``stopping (lame duck)`` or ``draining``."""
        if self.clients.draining:
            return "draining"
        return "stopping (lame duck)" if self.stopping else "ok"

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """The answer to ``GET path``: ``/healthz``, ``/metrics``, ``/ringcast.js``,
        ``/status`` or ``/status.json`` (the protocol routes only those that are
        enabled)."""
        if path == "/metrics":
            return 200, self.metrics.content_type, self.metrics.render()
        if path == CLIENT_SCRIPT:
            return 200, "text/javascript; charset=utf-8", client_script()
        if self.status is not None and path == "/status":
            return 200, "text/html; charset=utf-8", self.status.page()
        if self.status is not None and path == "/status.json":
            return 200, "application/json", self.status.json()
        lines = [self.state, f"worker: {self.worker}",
                 f"backend: {self.backend.name}"]
        if self.peers is not None:
            lines.append(f"workers linked: {len(self.peers.out) + 1}/{self.peers.count}")
        if self.bridge is not None:
            lines += [f"cluster {k}: {v}" for k, v in self.bridge.status().items()]
        body = ("\n".join(lines) + "\n").encode()
        return (503 if self.stopping else 200), "text/plain; charset=utf-8", body


@functools.cache
def client_script() -> bytes:
    """The JavaScript client (``ringcast/server/ringcast.js``), read once."""
    return (resources.files("ringcast.server") / "ringcast.js").read_bytes()


def build_server(config: Config, backend: Backend, *, max_connections: int,
                 config_path: str | None = None, worker: int = 0, workers: int = 1,
                 token: str = "", on_linked: Callable[[], None] = lambda: None) -> Server:
    """A worker's server with all its parts, wired: ``max_connections`` is the resolved
    limit (see :mod:`.capacity`); ``workers`` > 1 links it to the other workers of the
    host (``token`` names their sockets); ``cluster.redis_url`` joins it to the broker.
    Raises ValueError for settings that disagree (a JWT algorithm without its key): a
    configuration error."""
    current = Current.of(config)
    loop = backend.loop
    table = ConnectionTable(loop)
    hub = Hub()
    timers = Timers()
    counters = Counters()

    # The parts call each other back (a message from the broker goes to the fan-out, a
    # confirmation to the held handshakes...): these functions reach parts built below.
    def deliver(channel: str, frame: bytes, exclude: int, position: Position | None) -> None:
        fanout.deliver(channel, frame, ConnId(exclude), position)

    def from_peer(channel: str, frame: bytes) -> None:
        fanout.from_peer(channel, frame)

    def from_ordering(kind: int, channel: str, body: bytes) -> None:
        fanout.from_ordering(kind, channel, body)

    def confirmed(channel: str) -> None:
        clients.channel_confirmed(channel)
        fanout.channel_confirmed(channel)

    def broker_down() -> None:
        clients.bridge_down()

    def snapshot() -> dict[str, Any]:
        return metrics.snapshot()

    def answer(path: str) -> tuple[int, str, bytes]:
        return server.answer(path)

    def the_bridge() -> Bridge:
        return redis

    kept = config.history
    bridge: Bridge | None = None
    if config.cluster.redis_url:
        redis = RedisBridge(config.cluster.redis_url, _BrokerConnections(table, the_bridge),
                            deliver, hub.subscribed_channels, history_size=kept.size,
                            history_ttl=kept.ttl, on_confirmed=confirmed, on_down=broker_down)
        bridge = redis
    peers = None
    if workers > 1:
        peers = PeerLinks(table, token, worker, workers, on_publish=from_peer,
                          on_ordering=from_ordering, snapshot=snapshot)
    compression = config.compression
    compressor = Compressor(compression.level, compression.threshold)
    history = History(kept.channels, size=kept.size, ttl=kept.ttl, max_bytes=kept.max_bytes)
    fanout = FanOut(loop, hub, current, counters, compressor=compressor, peers=peers,
                    bridge=bridge, history=history)
    clients = Clients(table, current, hub, fanout, counters=counters, timers=timers,
                      query=answer, max_connections=max_connections, bridge=bridge)
    fanout.on_gap = clients.missed
    metrics = Metrics(counters, worker, backend.name, loop=loop, hub=hub, clients=clients,
                      compressor=compressor, peers=peers, bridge=bridge, history=history)
    server = Server(current, backend, table, clients=clients, fanout=fanout, timers=timers,
                    metrics=metrics, peers=peers, bridge=bridge, config_path=config_path,
                    worker=worker, on_linked=on_linked)
    status = server.status = StatusBoard(current, counters, hub, worker=worker,
                                         backend_name=backend.name, snapshot=snapshot,
                                         peers=peers, bridge=bridge,
                                         state=lambda: server.state)
    metrics.status_part = status.local
    server.keep_alive()
    return server
