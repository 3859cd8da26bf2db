"""The runtime: drives sans-I/O sessions over a ringio loop (io_uring or epoll).

One iteration of `Server.run`:

1. ``loop.reap(timeout)`` waits for events, the timeout being the nearest
   session deadline;
2. each event goes to its session (accept, bytes, hang-up, overflow) and the
   session's actions are executed in order;
3. frames published during the iteration leave as one run per channel
   (`Hub.runs`), each framed once into one slot and fanned out in C;
4. sessions whose deadline passed get ``tick(now)``.

Only this module owns file descriptors and the clock. Per-delivery work is in
C; Python does per-message and per-connection work.
"""

from __future__ import annotations

import errno
import heapq
import json
import logging
import os
import signal
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ringcast.config import Config, config_from_mapping, diff_configs, load_config
from ringcast.errors import ConfigError
from ringcast.ringio import NO_CONN, Event, EventKind, Loop
from ringcast.server import sdnotify
from ringcast.server.backend import REFUSALS_IN_FLIGHT, Backend
from ringcast.server.cluster import Bridge
from ringcast.server.hub import Channel, Hub
from ringcast.server.links import KIND_PUBLISH, KIND_STATS, encode_record
from ringcast.server.metrics import Metrics
from ringcast.server.protocol.actions import (
    Action,
    CloseConnection,
    HttpPublish,
    HttpQuery,
    Publish,
    Refused,
    SendBytes,
    Subscribe,
)
from ringcast.server.protocol.frames import CloseCode, data_frame
from ringcast.server.protocol.refusals import Refusal, error_response
from ringcast.server.protocol.session import Session, SessionState
from ringcast.server.protocol.settings import ProtocolSettings
from ringcast.server.workers import PeerLinks

log = logging.getLogger("ringcast")

ACCEPT_RETRY_DELAY = 0.1
STATS_INTERVAL = 1.0
ACCEPT_WARN_EVERY = 10.0
LINK_WAIT = 2.0     # how long a new worker waits for its links before accepting


def protocol_settings(config: Config) -> ProtocolSettings:
    """The protocol core's settings; ValueError when keys disagree (e.g. a JWT
    algorithm without its key), which callers report as a configuration error."""
    lim = config.limits
    auth = config.auth
    return ProtocolSettings(
        max_message_size=lim.max_message_size,
        max_http_body=lim.max_http_body,
        handshake_timeout=lim.handshake_timeout,
        ping_interval=lim.ping_interval,
        ping_timeout=lim.ping_timeout,
        close_timeout=lim.close_timeout,
        client_publish=config.channels.client_publish,
        http_enabled=config.http.enabled,
        publish_token=config.http.publish_token,
        metrics_enabled=config.metrics.enabled,
        max_channel_name=config.channels.max_name_length,
        echo=config.server.echo,
        publish_tokens=auth.publish_tokens,
        subscribe_tokens=auth.subscribe_tokens,
        require_subscribe_auth=auth.require_subscribe_auth,
        require_publish_auth=auth.require_publish_auth,
        jwt_secret=auth.jwt_secret,
        jwt_public_key=auth.read_jwt_public_key(),
        jwt_algorithms=auth.jwt_algorithms,
        jwt_audience=auth.jwt_audience,
        jwt_issuer=auth.jwt_issuer,
        jwt_leeway=auth.jwt_leeway,
        allowed_origins=config.http.allowed_origins,
        max_messages_per_second=lim.max_messages_per_second,
        message_burst=lim.message_burst,
        max_message_frames=lim.max_message_frames,
        max_control_frames_per_second=lim.max_control_frames_per_second,
        control_frame_burst=lim.control_frame_burst,
        message_timeout=lim.message_timeout,
        max_request_line=lim.max_request_line,
        max_header_size=lim.max_header_size,
        max_headers=lim.max_headers,
    )


@dataclass(order=True)
class _Timer:
    when: float
    seq: int
    fn: Callable[[], None] = field(compare=False)


class Server:
    """A ringcast server on one loop: listeners, sessions, channels, timers.

    Life cycle: `start()` binds and listens; `run()` serves until `stop()` (or
    SIGTERM/SIGINT when `install_signal_handlers()` was called) and then drains:
    no more accepts, close 1001 to every client, queued bytes flushed for up to
    ``shutdown.drain_timeout`` seconds.
    """

    def __init__(self, config: Config, backend: Backend, config_path: str | None = None,
                 worker: int = 0) -> None:
        self.config = config
        self.config_path = config_path
        self.worker = worker
        self._reload_requested = False
        self.loop: Loop = backend.loop
        self.backend = backend
        self.settings = protocol_settings(config)
        self.hub = Hub()
        self.metrics = Metrics(self, worker)
        self.sessions: dict[int, Session] = {}
        self.listeners: dict[int, socket.socket | None] = {}
        self._unarmed: list[socket.socket] = []
        self._link_deadline = time.monotonic() + LINK_WAIT
        self.address: tuple[str, int] = ("", 0)
        self.stopping = False
        self.draining = False
        self._drain_deadline = 0.0
        self._timers: list[_Timer] = []
        self._session_timers: list[tuple[float, int]] = []
        self._seq = 0
        # Sessions waiting for their deadline: conn -> the deadline queued for it.
        self._deadlines: dict[int, float] = {}
        # Closed connections whose ids are not free yet (flushing, or lingering for
        # the peer's EOF): id -> generation. Until ringio reports them CLOSED they
        # hold a file and an id, so they keep their place in max_connections, and in
        # max_connections_per_ip through _conn_ip. Past close_timeout they are reset.
        self._closing: dict[int, int] = {}
        # Refusals at a connection limit whose 503 is still on its way (id ->
        # generation); at most REFUSALS_IN_FLIGHT, past which a refusal is a reset.
        self._refusing: dict[int, int] = {}
        # HTTP publishes waiting for the end-of-iteration fan-out: (conn, channel).
        self._http_waiting: list[tuple[int, Channel | None]] = []
        self._run_counts: dict[int, int] = {}
        self._per_ip: Counter[str] = Counter()
        # Handshakes waiting for the broker: conn -> (channel, bytes held back).
        self._held: dict[int, tuple[str, list[bytes]]] = {}
        self._accept_warned = -ACCEPT_WARN_EVERY
        self._conn_ip: dict[int, str] = {}
        self._wake_w: socket.socket | None = None
        # Other workers of this host, and the broker bridge (issue: scale out).
        self.peers: PeerLinks | None = None
        self.bridge: Bridge | None = None
        self.peer_stats: dict[str, dict[str, float]] = {}
        # Called once when linked to every other worker (the supervisor's READY).
        self.on_linked: Callable[[], None] | None = None
        self._next_stats = 0.0

    # -- start and stop ---------------------------------------------------

    def start(self) -> tuple[str, int]:
        srv = self.config.server
        family = socket.AF_INET6 if ":" in srv.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if self.config.limits.socket_send_buffer:
            # Accepted sockets inherit it: what a stalled client can hold in the
            # kernel is bounded too, not only what waits in ringio's queue.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                            self.config.limits.socket_send_buffer)
        sock.bind((srv.host, srv.port))
        sock.listen(srv.backlog)
        self.address = sock.getsockname()[:2]
        self._unarmed.append(sock)
        return self.address

    def accept_clients(self) -> None:
        """Start accepting on the listeners `start` opened.

        A worker of several calls this only once it is linked both ways to every
        other worker (or after LINK_WAIT): until then the kernel holds new
        connections in the backlog, so no client of this worker can miss a
        message another worker publishes after the client's handshake.
        """
        while self._unarmed:
            self.listeners[self.loop.listen(self._unarmed.pop())] = None

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT drain and stop; the loop wakes through a socketpair."""
        r, w = socket.socketpair()
        w.setblocking(False)
        self._wake_w = w
        self.loop.adopt(r)     # the loop owns it: its DATA only wakes reap()
        signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    def _linked(self) -> None:
        self.accept_clients()
        if self.on_linked is not None:
            self.on_linked()
            self.on_linked = None

    def request_reload(self) -> None:
        self._reload_requested = True

    def reload(self) -> None:
        """Re-read the config file (SIGHUP) and apply what can change live.

        Limits, policies, the publish token and the log level apply at once (new
        limits to new connections; queue cap and slow-consumer policy to every
        fan-out from now on). Other changes are logged as needing a restart and
        not applied. An invalid file changes nothing.
        """
        self._reload_requested = False
        sdnotify.reloading()
        try:
            new = load_config(self.config_path, os.environ)
        except ConfigError as exc:
            log.error("reload refused, the running configuration stays: %s", exc)
            sdnotify.ready()
            return
        live, restart = diff_configs(self.config, new)
        if not live and self.config.auth.jwt_public_key_file:
            live = ["auth.jwt_public_key_file"]     # the key file may have been replaced
        if restart:
            log.warning("reload: %s changed but need a restart; not applied", ", ".join(restart))
        sdnotify.ready()
        if not live:
            log.info("reload: no live-reloadable setting changed")
            return
        # Build the applied config: new values for live keys, old ones elsewhere.
        merged = {section: dict(keys) for section, keys in self.config.as_dict().items()}
        fresh = new.as_dict()
        for path in live:
            section, key = path.split(".", 1)
            merged[section][key] = fresh[section][key]
        merged_config = config_from_mapping(merged, self.config_path or "<reload>")
        try:
            settings = protocol_settings(merged_config)
        except (ValueError, ConfigError) as exc:
            log.error("reload refused, the running configuration stays: %s", exc)
            return
        self.config, self.settings = merged_config, settings
        logging.getLogger().setLevel(self.config.logging.level.upper())
        log.info("reload: applied %s", ", ".join(live))

    def stop(self) -> None:
        self.stopping = True

    def _begin_drain(self, now: float) -> None:
        sdnotify.stopping(f"draining {len(self.sessions)} connections")
        self.draining = True
        self._drain_deadline = now + self.config.shutdown.drain_timeout
        for lid in list(self.listeners):
            self.loop.close_connection(lid)
        self.listeners.clear()
        while self._unarmed:
            self._unarmed.pop().close()
        log.info("draining: %d connections, up to %.1fs",
                 len(self.sessions), self.config.shutdown.drain_timeout)
        for conn, sess in list(self.sessions.items()):
            self._execute(conn, sess.close(CloseCode.GOING_AWAY, "server shutting down", now))
        self._flush_channels()

    def run(self) -> None:
        try:
            while True:
                now = time.monotonic()
                if self._reload_requested:
                    self.reload()
                if self.stopping and not self.draining:
                    self._begin_drain(now)
                drained = not self.sessions and not self._closing
                if self.draining and (drained or now >= self._drain_deadline):
                    break
                self.run_once(self._timeout(now))
        finally:
            self.close()

    def close(self) -> None:
        if self._wake_w is not None:
            signal.set_wakeup_fd(-1)
            self._wake_w.close()
            self._wake_w = None
        self.loop.close()

    # -- one iteration ----------------------------------------------------

    def _timeout(self, now: float) -> float:
        t = 1.0
        if self._timers:
            t = min(t, self._timers[0].when - now)
        if self._session_timers:
            t = min(t, self._session_timers[0][0] - now)
        for helper in (self.peers, self.bridge):
            when = helper.next_attempt() if helper is not None else None
            if when is not None:
                t = min(t, when - now)
        return max(0.0, t)

    def run_once(self, timeout: float) -> None:
        events = self.loop.reap(timeout)
        now = time.monotonic()
        for ev in events:
            self._dispatch(ev, now)
        self._flush_channels()
        self._run_timers(now)
        if self.peers is not None:
            self.peers.maintain(now)
            if self._unarmed:
                others = self.peers.count - 1
                if len(self.peers.out) == others and len(self.peers.inbound) >= others:
                    self._linked()
                elif now >= self._link_deadline:
                    log.warning("not linked to every other worker after %.0fs (out %d, in %d "
                                "of %d); accepting anyway: their messages reach this worker's "
                                "clients once linked", LINK_WAIT, len(self.peers.out),
                                len(self.peers.inbound), others)
                    self._linked()
            if now >= self._next_stats:
                self._next_stats = now + STATS_INTERVAL
                self.peers.broadcast(encode_record(
                    KIND_STATS, str(self.worker), json.dumps(self.metrics.snapshot()).encode()))
        if self.bridge is not None:
            self.bridge.maintain(now)

    def _dispatch(self, ev: Event, now: float) -> None:
        kind, conn = ev.kind, ev.conn
        if kind == EventKind.DATA:
            sess = self.sessions.get(conn)
            if sess is not None:
                if self.loop.queued(conn) > self.config.limits.queue_max_bytes:
                    # Its own answers (pongs, HTTP responses) are backing up: it sends
                    # and does not read. Reading on would grow memory without bound.
                    self.metrics.slow_closes += 1
                    self.metrics.count_close("not_reading")
                    self._drop(conn, flush=False)
                    return
                self._execute(conn, sess.receive_data(ev.data, now))
            elif self.peers is not None and conn in self.peers.inbound:
                self._from_peer(conn, ev.data)
            elif self.bridge is not None and self.bridge.owns(conn):
                self.bridge.data_received(conn, ev.data)
            # else: the signal wake-up socket; its handler already ran
        elif kind == EventKind.ACCEPT:
            if self.peers is not None and ev.aux == self.peers.listener:
                self.peers.accepted(conn)
                return
            if self.draining:
                self.loop.close_connection(conn)
                return
            self.metrics.accepted += 1
            if len(self.sessions) + len(self._closing) >= self.config.limits.max_connections:
                # The id table has spare ids for listeners and links: the limit on
                # clients is enforced here, with an answer.
                self.metrics.refused += 1
                self._refuse(conn, Refusal.TOO_MANY_CONNECTIONS,
                             "the server is at its connection limit, retry later")
                return
            if self.config.limits.max_connections_per_ip and not self._admit(conn, ev.res):
                return
            sess = Session(self.settings, now, unix_offset=time.time() - now)
            self.sessions[conn] = sess
            self._schedule(conn, sess)
        elif kind == EventKind.HUP:
            sess = self.sessions.get(conn)
            if sess is None:
                if self.peers is not None and self.peers.lost(conn, now):
                    return
                if self.bridge is not None and self.bridge.owns(conn):
                    self.bridge.connection_lost(conn)
            else:
                self.metrics.count_close("peer_reset" if ev.res else "peer_closed")
                actions = sess.receive_data(b"", now)
                self._execute(conn, actions)
                if conn in self.sessions:  # the session did not close: the socket is gone
                    self._drop(conn, flush=False)
        elif kind == EventKind.OVERFLOW:
            self._overflow(conn, now)
        elif kind == EventKind.ACCEPT_ERROR:
            self.metrics.accept_errors += 1
            if now >= self._accept_warned + ACCEPT_WARN_EVERY:
                # Once per episode-ish: the count says how long it lasted.
                log.warning("accept failed: %s (%d failures so far); pausing accepts for "
                            "%.1fs at a time (raise the open-files limit, e.g. LimitNOFILE=, "
                            "or lower limits.max_connections)", _errno_text(ev.res),
                            self.metrics.accept_errors, ACCEPT_RETRY_DELAY)
                self._accept_warned = now
            self._call_later(now + ACCEPT_RETRY_DELAY, lambda: self._resume(conn))
        elif kind == EventKind.REFUSED:
            self.metrics.refused += 1
            self.metrics.refusals[Refusal.TOO_MANY_CONNECTIONS] += 1
        elif kind == EventKind.CLOSED:
            self._released(conn)

    def _admit(self, conn: int, fd: int) -> bool:
        """Per-address connection limit (limits.max_connections_per_ip, per worker)."""
        try:
            s = socket.socket(fileno=fd)  # borrowed (detached below): the loop owns the fd
        except OSError:
            return True  # already gone: its HUP follows
        try:
            if s.family not in (socket.AF_INET, socket.AF_INET6):
                return True  # not an IP socket: nothing to count
            ip = s.getpeername()[0]
        except OSError:
            return True  # reset before we looked: its HUP follows
        finally:
            s.detach()
        ip = ip.removeprefix("::ffff:")
        if self._per_ip[ip] >= self.config.limits.max_connections_per_ip:
            self._refuse(conn, Refusal.TOO_MANY_CONNECTIONS_PER_IP,
                         "too many connections from your address")
            return False
        self._per_ip[ip] += 1
        self._conn_ip[conn] = ip
        return True

    def _refuse(self, conn: int, reason: Refusal, message: str) -> None:
        """Refuse a connection at a limit: a 503 while few refusals are on their way,
        else a reset, so that refused connections never hold more than
        REFUSALS_IN_FLIGHT ids and files (a flood from one address cannot fill the
        table and lock others out)."""
        self.metrics.refusals[reason] += 1
        if len(self._refusing) >= REFUSALS_IN_FLIGHT:
            self.metrics.refusals_reset += 1
            self.loop.close_connection(conn, abort=True)
            return
        self.loop.send(conn, error_response(503, message), force=True)
        self.loop.close_connection(conn, flush=True)
        self._linger(self._refusing, conn)

    def _resume(self, listener: int) -> None:
        if listener in self.listeners:
            self.loop.resume_accept(listener)

    def _overflow(self, conn: int, now: float) -> None:
        sess = self.sessions.get(conn)
        if sess is None:
            return
        if sess.state is not SessionState.OPEN:
            return  # closing already: its close frame is queued, keep it
        if self.config.limits.slow_consumer_policy == "close":
            # Stop fanning out to it at once, and drop the backlog that has not
            # started going out: the close frame (which skips the queue cap) then
            # follows what is already on its way, so a client that reads again
            # learns why at once, and the backlog's memory is free now.
            self._unsubscribe(conn, sess)
            self.metrics.slow_trimmed_bytes += self.loop.trim(conn)
            self.metrics.slow_closes += 1
            self.metrics.count_close("slow_consumer")
            self._execute(conn, sess.close(CloseCode.SLOW_CONSUMER, "slow consumer", now))
        else:
            self.metrics.slow_drops += 1

    # -- actions ----------------------------------------------------------

    def _execute(self, conn: int, actions: list[Action]) -> None:
        loop = self.loop
        if self.bridge is not None and self.bridge.connected:
            self._hold_until_confirmed(conn, actions)
        # A work list, not recursion: an answer may release the next pipelined
        # request, whose actions are appended here (thousands in one receive).
        work = deque(actions)
        while work:
            a = work.popleft()
            if isinstance(a, SendBytes):
                held = self._held.get(conn)
                if held is not None:
                    held[1].append(a.data)
                    continue
                sess = self.sessions.get(conn)
                if sess is not None and sess.channel is not None:
                    # Frames already published to its channel this iteration go first.
                    ch = self.hub.channels.get(sess.channel)
                    if ch is not None and ch.pending:
                        self._flush_channel(ch)
                loop.send(conn, a.data, force=True)
            elif isinstance(a, Publish):
                self.metrics.published_ws += 1
                exclude = NO_CONN if self.settings.echo else conn
                frame = data_frame(a.payload, a.text)
                self._publish(a.channel, frame, exclude)
            elif isinstance(a, Subscribe):
                if self.bridge is not None:
                    self.bridge.subscribe(a.channel)
                if conn not in self._held:
                    self.hub.subscribe(conn, a.channel)
            elif isinstance(a, HttpPublish):
                self.metrics.published_http += 1
                frame = data_frame(a.payload, a.text)
                target = self._publish(a.channel, frame, NO_CONN)
                if isinstance(target, int):     # via the broker: local count now
                    work.extend(self.sessions[conn].publish_done(target))
                    continue
                self._http_waiting.append((conn, target))
            elif isinstance(a, HttpQuery):
                sess = self.sessions[conn]
                status, ctype, body = self._query(a.path)
                work.extend(sess.respond(status, ctype, body))
            elif isinstance(a, Refused):
                self.metrics.refusals[a.reason] += 1
                log.debug("refused conn %d: %s (%d) %s", conn, a.reason.value, a.code, a.detail)
            elif isinstance(a, CloseConnection):
                self._drop(conn, flush=True)
                return
        sess = self.sessions.get(conn)
        if sess is not None:
            if sess.state is SessionState.CLOSING:
                # RFC 6455 section 5.5.1: no data frame after our close frame.
                self._unsubscribe(conn, sess)
            self._schedule(conn, sess)

    def _query(self, path: str) -> tuple[int, str, bytes]:
        if path == "/healthz":
            lines = ["draining" if self.draining else "ok", f"worker: {self.worker}",
                     f"backend: {self.backend.name}"]
            if self.peers is not None:
                lines.append(f"workers linked: {len(self.peers.out) + 1}/{self.peers.count}")
            if self.bridge is not None:
                lines += [f"cluster {k}: {v}" for k, v in self.bridge.status().items()]
            body = ("\n".join(lines) + "\n").encode()
            return (503 if self.draining else 200), "text/plain; charset=utf-8", body
        return 200, self.metrics.content_type, self.metrics.render()

    def _unsubscribe(self, conn: int, sess: Session) -> None:
        name = sess.channel
        self._held.pop(conn, None)
        if name is None:
            return
        self.hub.unsubscribe(conn, name)
        if self.bridge is not None:
            ch = self.hub.channels.get(name)
            waiting = any(c == name for c, _ in self._held.values())
            if (ch is None or not ch.ids) and not waiting:
                self.bridge.unsubscribe(name)

    # A subscriber's handshake completes only once the broker confirmed its
    # channel: its 101 (and anything after) waits here, so a message published
    # on another node after the client saw its 101 cannot miss it.

    def _hold_until_confirmed(self, conn: int, actions: list[Action]) -> None:
        assert self.bridge is not None
        for a in actions:
            if isinstance(a, Subscribe) and not self.bridge.confirmed(a.channel):
                self._held[conn] = (a.channel, [])
                return

    def channel_confirmed(self, channel: str) -> None:
        """The broker confirmed a subscription: complete the handshakes waiting on it."""
        for conn, (name, data) in list(self._held.items()):
            if name == channel:
                self._release(conn, name, data)

    def bridge_down(self) -> None:
        """Local-only mode: nothing to wait for."""
        for conn, (name, data) in list(self._held.items()):
            self._release(conn, name, data)

    def _release(self, conn: int, channel: str, data: list[bytes]) -> None:
        del self._held[conn]
        for chunk in data:
            self.loop.send(conn, chunk, force=True)
        self.hub.subscribe(conn, channel)

    def _publish(self, channel: str, frame: bytes, exclude: int) -> Channel | int | None:
        """Publish a framed message from a client of this worker.

        Through the broker when the bridge is up (every node, this one included,
        delivers what comes back, in the broker's order): returns the local
        subscriber count. Otherwise here and to the other workers of the host:
        returns the local channel (None if nobody here listens).
        """
        if self.bridge is not None and self.bridge.publish(channel, frame, exclude):
            ch = self.hub.channels.get(channel)
            return 0 if ch is None else len(ch.ids) - (exclude in ch.pos)
        if self.peers is not None:
            self.peers.broadcast(encode_record(KIND_PUBLISH, channel, frame))
        return self.hub.publish(channel, frame, exclude)

    def deliver(self, channel: str, frame: bytes, exclude: int) -> None:
        """A message from the broker bridge (the broker's, or one of ours it never echoed
        before going down): fan it out to local subscribers. The bridge counts which."""
        self.hub.publish(channel, frame, exclude)

    def _from_peer(self, conn: int, data: bytes) -> None:
        assert self.peers is not None
        for rec in self.peers.inbound[conn].feed(data):
            if rec.kind == KIND_PUBLISH:
                self.metrics.received_peers += 1
                self.hub.publish(rec.channel, rec.body)
            else:
                self.peer_stats[rec.channel] = json.loads(rec.body)

    def _drop(self, conn: int, flush: bool) -> None:
        """Close a client connection; it keeps its places in the limits until ringio
        reports its id free (`_released`)."""
        sess = self.sessions.pop(conn, None)
        if sess is not None:
            self._unsubscribe(conn, sess)
        self._deadlines.pop(conn, None)
        self.loop.close_connection(conn, flush=flush)
        self._linger(self._closing, conn)

    def _linger(self, closing: dict[int, int], conn: int) -> None:
        # ringio flushes, shuts down writing and lingers for the peer's EOF; past
        # close_timeout the connection is reset. The generation makes sure that is
        # this connection, not a later one with its id.
        gen = self.loop.generation(conn)
        if gen < 0:
            self._released(conn)  # already free
            return
        closing[conn] = gen
        self._call_later(time.monotonic() + self.settings.close_timeout,
                         lambda: self._force_close(closing, conn, gen))

    def _force_close(self, closing: dict[int, int], conn: int, gen: int) -> None:
        # The peer had close_timeout to read what we sent and answer: reset it, so
        # what it left unread in our kernel buffers is freed now, not when TCP
        # gives up on it.
        if closing.get(conn) == gen:
            self.loop.close_connection(conn, abort=True)

    @property
    def closing_count(self) -> int:
        """Client connections closed whose ids and files are not free yet."""
        return len(self._closing)

    def _released(self, conn: int) -> None:
        """ringio freed a closed connection's id and file: its places are free."""
        self._closing.pop(conn, None)
        self._refusing.pop(conn, None)
        ip = self._conn_ip.pop(conn, None)
        if ip is not None:
            self._per_ip[ip] -= 1
            if not self._per_ip[ip]:
                del self._per_ip[ip]

    # -- fan-out ----------------------------------------------------------

    def _flush_channel(self, ch: Channel) -> None:
        cap = self.config.limits.queue_max_bytes
        for frames, exclude, count in self.hub.take_runs(ch):
            slot = self.loop.slot(frames)
            try:
                reached = self.loop.fanout(slot, ch.ids, len(ch.ids), exclude=exclude, cap=cap)
            finally:
                self.loop.release(slot)
            self._run_counts[id(ch)] = reached
            self.metrics.messages_out += count

    def _flush_channels(self) -> None:
        # Answering a publish may release the next pipelined request, which
        # publishes again: go on until nothing is waiting.
        while self.hub.dirty or self._http_waiting:
            self._flush_once()

    def _flush_once(self) -> None:
        for ch in self.hub.take_dirty():
            self._flush_channel(ch)
        if self._http_waiting:
            waiting, self._http_waiting = self._http_waiting, []
            for conn, target in waiting:
                sess = self.sessions.get(conn)
                if sess is None:
                    continue
                reached = 0 if target is None else self._run_counts.get(id(target), 0)
                self._execute(conn, sess.publish_done(reached))
            self._run_counts.clear()

    # -- timers -----------------------------------------------------------

    def _call_later(self, when: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._timers, _Timer(when, self._seq, fn))

    # Session deadlines live in their own heap of plain (deadline, conn) tuples:
    # one small tuple per connection rather than a closure and a timer object.
    # An entry is stale when the session has a different deadline by then
    # (it moved, or the connection closed); stale entries are skipped.

    def _schedule(self, conn: int, sess: Session) -> None:
        deadline = sess.next_deadline()
        if deadline is None or self._deadlines.get(conn) == deadline:
            return
        self._deadlines[conn] = deadline
        heapq.heappush(self._session_timers, (deadline, conn))

    def _run_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0].when <= now:
            heapq.heappop(timers).fn()
        heap = self._session_timers
        while heap and heap[0][0] <= now:
            deadline, conn = heapq.heappop(heap)
            if self._deadlines.get(conn) != deadline:
                continue
            del self._deadlines[conn]
            sess = self.sessions.get(conn)
            if sess is not None:
                self._execute(conn, sess.tick(now))
        self._flush_channels()


def _errno_text(err: int) -> str:
    return f"{errno.errorcode.get(err, str(err))} ({os.strerror(err)})"
