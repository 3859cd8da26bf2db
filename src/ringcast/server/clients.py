"""Client connections: admission, one sans-I/O session each, and what their actions do.

This is the owner (see :mod:`.table`) of the client listeners and of every client
connection. Around each :class:`~.protocol.session.Session` it does the I/O the session
asks for, in order (:meth:`Clients.execute`): bytes to send, a subscription, a message to
publish (through :class:`~.fanout.FanOut`), an HTTP answer, the close.

Limits on what clients may hold:

- ``max_connections`` counts open connections and closed ones whose id is not free yet
  (flushing, or waiting for the peer's close): those still hold a file and an id. A
  connection refused at a limit gets a 503 while fewer than ``REFUSALS_IN_FLIGHT``
  refusals are on their way, and a reset beyond that, so refusals never fill the table.
- ``max_connections_per_ip`` likewise counts a closed connection against its address
  until ringio reports it free (CLOSED), so one address cannot lock out the others.
- A connection whose own answers (pongs, HTTP responses) pile up past
  ``queue_max_bytes`` is closed: it sends and does not read.
- A subscriber that falls ``queue_max_bytes`` behind is a slow consumer: closed with 3008
  (its unsent backlog dropped) or its messages dropped, by ``slow_consumer_policy``.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable

from ringcast.ringio import NO_CONN, ConnId, Loop
from ringcast.server.bounded_log import BoundedLog, RefusalLog
from ringcast.server.cluster import Bridge
from ringcast.server.fanout import FORWARDED, UNAVAILABLE, Answer, FanOut, Joining
from ringcast.server.held import Held, HeldHandshakes
from ringcast.server.history import Position
from ringcast.server.hub import Hub
from ringcast.server.metrics import Counters
from ringcast.server.protocol.actions import (
    Action,
    ClientAddress,
    CloseConnection,
    Ended,
    HttpPublish,
    HttpPublishBatch,
    HttpQuery,
    Join,
    Leave,
    OpenedV1,
    Publish,
    PublishCommand,
    Refused,
    SendBytes,
    Subscribe,
)
from ringcast.server.protocol.batch import Result
from ringcast.server.protocol.frames import CloseCode, data_frame
from ringcast.server.protocol.refusals import Refusal, error_response
from ringcast.server.protocol.ringcast_v1 import error_frame, published_frame
from ringcast.server.protocol.session import Session, SessionState
from ringcast.server.settings import Current
from ringcast.server.table import ConnectionTable, Owner
from ringcast.server.timers import Deadlines, Timers

__all__ = ["ACCEPT_RETRY_DELAY", "REFUSALS_IN_FLIGHT", "Clients"]

log = logging.getLogger("ringcast")

KEEPALIVE_TIMEOUT = "keepalive ping timeout"  # the close reason, as the session gives it
_OWNER_UNAVAILABLE = ("what orders this channel (its owner worker, or Redis) did not answer "
                      "(restarting?): retry")
BROKER_LOST = "lost the connection to Redis: reconnect and resume from your last position"
MISSED = "messages were lost on their way to this server: reconnect and resume"
REFUSALS_IN_FLIGHT = 64
"""Connections refused at a limit whose 503 may be on its way at once; more are reset."""
ACCEPT_RETRY_DELAY = 0.1
ACCEPT_WARN_EVERY = 10.0

_LEVELS = logging.getLevelNamesMapping()

Query = Callable[[str], tuple[int, str, bytes]]
"""Answers ``GET /healthz`` and ``GET /metrics``: path -> (status, content type, body)."""


class Clients(Owner):
    """Every client connection of this worker, from accept to the release of its id."""

    def __init__(self, table: ConnectionTable, current: Current, hub: Hub, fanout: FanOut, *,
                 counters: Counters, timers: Timers, query: Query, max_connections: int,
                 bridge: Bridge | None) -> None:
        self._table = table
        self._loop: Loop = table.loop
        self._current = current
        self._hub = hub
        self._fanout = fanout
        self._counts = counters
        self._timers = timers
        self._query = query
        self._bridge = bridge
        self.max_connections = max_connections  # "auto" resolved: see .capacity
        self.sessions: dict[ConnId, Session] = {}
        self.listeners: set[ConnId] = set()
        self.draining = False
        self._deadlines = Deadlines()
        self._held = HeldHandshakes()
        self._refusal_log = RefusalLog(
            lambda: self._current.config.logging.refusals_per_second)
        # The settings are read once a second: a reload applies within one.
        self._access_log = BoundedLog(
            "ringcast.access", title="access", what="connections and requests",
            counted_in="ringcast_connections_accepted_total",
            per_second=lambda: self._current.config.logging.access_per_second,
            level=lambda: _LEVELS[self._current.config.logging.access_level.upper()])
        # Closed connections whose ids are not free yet: id -> generation. Past
        # close_timeout they are reset (the generation makes sure it is still them).
        self._closing: dict[ConnId, int] = {}
        # Refusals whose 503 is on its way: id -> generation.
        self._refusing: dict[ConnId, int] = {}
        self._per_ip: Counter[str] = Counter()
        self._conn_ip: dict[ConnId, str] = {}  # until the id is released
        self._born: dict[ConnId, float] = {}  # until the handshake: when it was accepted
        # WebSockets whose last bytes ended inside a frame or message (see data_received).
        self._mid_message: set[ConnId] = set()
        # ringcast.v1 WebSockets: the window their permessage-deflate compresses with
        # (0: none), until they close.
        self._v1_bits: dict[ConnId, int] = {}
        self._accept_warned = -ACCEPT_WARN_EVERY

    # -- listeners ---------------------------------------------------------------------

    def listen(self, sock: socket.socket) -> None:
        self.listeners.add(self._table.listen(sock, self))

    def stop_listening(self) -> None:
        for lid in self.listeners:
            self._table.close_listener(lid)
        self.listeners.clear()

    def accepted(self, conn: ConnId, fd: int, listener: ConnId, now: float) -> Owner:
        limits = self._current.config.limits
        if self.draining:
            self._loop.close_connection(conn)
            return self
        self._counts.accepted += 1
        if len(self.sessions) + len(self._closing) >= self.max_connections:
            self._refuse(conn, Refusal.TOO_MANY_CONNECTIONS,
                         "the server is at its connection limit, retry later")
            return self
        settings = self._current.settings
        logged = self._access_log.enabled
        peer = (_peer_address(fd) if limits.max_connections_per_ip or settings.trusted_proxies
                or logged else None)
        ip = None if peer is None else _ip(peer[0])
        proxied = ip is not None and bool(settings.trusted_proxies) and \
            settings.proxies.trusts(ip)
        # A trusted proxy's connection counts for its client, once the proxy names it
        # (a ClientAddress action), not for the proxy.
        if limits.max_connections_per_ip and ip is not None and not proxied \
                and not self._admit(conn, ip):
            return self
        if logged:
            self._access_log.line("connection %d accepted from %s%s", conn,
                                  "an unknown address" if peer is None else _host_port(*peer),
                                  " (a trusted proxy)" if proxied else "")
        session = Session(settings, now, unix_offset=time.time() - now, peer=ip)
        self.sessions[conn] = session
        self._born[conn] = now
        self._deadlines.set(conn, session.next_deadline())
        return self

    def accept_failed(self, listener: ConnId, err: int, now: float) -> None:
        self._counts.accept_errors += 1
        if now >= self._accept_warned + ACCEPT_WARN_EVERY:
            # Once per episode-ish: the count says how long it lasted.
            log.warning("accept failed: %s (%d failures so far); pausing accepts for %.1fs "
                        "at a time (raise the open-files limit, e.g. LimitNOFILE=, or lower "
                        "limits.max_connections)", _errno_text(err),
                        self._counts.accept_errors, ACCEPT_RETRY_DELAY)
            self._accept_warned = now
        self._timers.call_at(now + ACCEPT_RETRY_DELAY, lambda: self._resume(listener))

    def refused(self, listener: ConnId, now: float) -> None:
        self._counts.refusals[Refusal.TOO_MANY_CONNECTIONS] += 1

    def _resume(self, listener: ConnId) -> None:
        if listener in self.listeners:
            self._loop.resume_accept(listener)

    def _admit(self, conn: ConnId, ip: str) -> bool:
        """The per-address limit (``max_connections_per_ip``, per worker): count ``conn``
        for ``ip``, or refuse it (False) when ``ip`` has its fill."""
        if conn in self._conn_ip:
            return True  # counted already
        if self._per_ip[ip] >= self._current.config.limits.max_connections_per_ip:
            self._refuse(conn, Refusal.TOO_MANY_CONNECTIONS_PER_IP,
                         "too many connections from your address")
            return False
        self._per_ip[ip] += 1
        self._conn_ip[conn] = ip
        return True

    def _refuse(self, conn: ConnId, reason: Refusal, message: str) -> None:
        """Refuse a connection at a limit (at accept, or once its proxy named its client):
        a 503 while few refusals are on their way, a reset beyond (refused connections
        never hold more than REFUSALS_IN_FLIGHT ids)."""
        if self.sessions.pop(conn, None) is not None:  # its end is counted below, once
            self._born.pop(conn, None)
            self._deadlines.discard(conn)
        self._counts.refusals[reason] += 1
        self._counts.count_close(Ended.REFUSED)  # accepted, and closed at once
        if len(self._refusing) >= REFUSALS_IN_FLIGHT:
            self._counts.refusals_reset += 1
            self._refusal_log.refused(0, reason.value, message, conn)  # reset, no answer
            self._loop.close_connection(conn, abort=True)
            return
        self._refusal_log.refused(503, reason.value, message, conn)
        self._loop.send(conn, error_response(503, message), force=True)
        self._loop.close_connection(conn, flush=True)
        self._linger(self._refusing, conn)

    # -- events on client connections ----------------------------------------------------

    def data_received(self, conn: ConnId, data: bytes, now: float) -> None:
        session = self.sessions.get(conn)
        if session is None:
            return  # closed already: what it still sends is discarded
        if self._loop.queued(conn) > self._current.config.limits.queue_max_bytes:
            # Its own answers (pongs, HTTP responses) are backing up: it sends and does
            # not read. Reading on would grow memory without bound.
            self._counts.slow_closes += 1
            self._drop(conn, flush=False, ended=Ended.NOT_READING)
            return
        self.execute(conn, session.receive_data(data, now))
        # The loop's pong absorber reads a subscriber's bytes only from a frame boundary:
        # once the session read the rest of a frame (or message) it had part of, say so.
        if session.mid_message:
            self._mid_message.add(conn)
        elif conn in self._mid_message:
            self._mid_message.discard(conn)
            if session.state is SessionState.OPEN:
                self._loop.heartbeat(conn, True, aligned=True)

    def heartbeat_timeout(self, conn: ConnId, now: float) -> None:
        """Nothing came back within ``ping_timeout`` of a keepalive ping: 1011."""
        session = self.sessions.get(conn)
        if session is not None and session.state is SessionState.OPEN:
            self.execute(conn, session.close(CloseCode.INTERNAL_ERROR, KEEPALIVE_TIMEOUT, now))

    def hung_up(self, conn: ConnId, err: int, now: float) -> None:
        session = self.sessions.get(conn)
        if session is None:
            return
        if err:  # reset: nothing more to read, nobody to answer
            self._drop(conn, flush=False, ended=Ended.PEER_RESET)
            return
        self.execute(conn, session.receive_data(b"", now))
        if conn in self.sessions:  # the session did not close: the socket is gone
            self._drop(conn, flush=False, ended=Ended.PEER_CLOSED)

    def overflowed(self, conn: ConnId, now: float) -> None:
        session = self.sessions.get(conn)
        if session is None or session.state is not SessionState.OPEN:
            return  # closing already: its close frame is queued, keep it
        # A ringcast.v1 client is closed whatever the policy: a message dropped would be
        # a gap its positions promise against (and a new epoch's first message, lost,
        # would go unnoticed).
        if self._current.config.limits.slow_consumer_policy == "close" or \
                session.commands is not None:
            # Stop fanning out to it at once, and drop the backlog that has not started
            # going out: the close frame (which skips the queue cap) then follows what is
            # already on its way, so a client that reads again learns why at once, and
            # the backlog's memory is free now.
            self._unsubscribe(conn, session)
            self._counts.slow_trimmed_bytes += self._loop.trim(conn)
            self._counts.slow_closes += 1
            self.execute(conn, session.close(CloseCode.SLOW_CONSUMER, "slow consumer", now))
        else:
            self._counts.slow_drops += 1

    def released(self, conn: ConnId) -> None:
        """ringio freed a closed connection's id and file: its places in the limits are
        free, and the id may come back in an ACCEPT."""
        self._closing.pop(conn, None)
        self._refusing.pop(conn, None)
        ip = self._conn_ip.pop(conn, None)
        if ip is not None:
            self._per_ip[ip] -= 1
            if not self._per_ip[ip]:
                del self._per_ip[ip]

    # -- what sessions ask for -----------------------------------------------------------

    def execute(self, conn: ConnId, actions: list[Action]) -> None:
        """Do what a session asked, in order (see :mod:`.protocol.actions`)."""
        loop = self._loop
        if self._bridge is not None and self._bridge.connected:
            self._hold_until_confirmed(conn, actions)
        session = self.sessions.get(conn)
        # A work list, not recursion: an answer may release the next pipelined request,
        # whose actions are appended here (thousands in one receive).
        work = actions
        next_action = 0
        while next_action < len(work):
            action = work[next_action]
            next_action += 1
            if isinstance(action, SendBytes):
                held = self._held.held_bytes(conn) if self._held else None
                if held is not None:
                    held.append(action.data)
                    continue
                if session is not None:
                    # Frames already published to its channels this iteration go first.
                    if session.channel is not None:
                        self._fanout.flush_channel(session.channel)
                    elif session.commands is not None:
                        for name in session.commands.channels:
                            self._fanout.flush_channel(name)
                loop.send(conn, action.data, force=True)
            elif isinstance(action, HttpPublish):
                assert session is not None
                self._counts.published_http += 1
                frame = data_frame(action.payload, action.text)
                reached = self._fanout.publish(action.channel, frame)
                if reached == FORWARDED:  # answered once the channel's owner has ordered it
                    self._fanout.when_ordered(self._http_answer(conn, session, action.channel))
                    continue
                if reached == UNAVAILABLE:
                    work.extend(session.publish_refused(503, _OWNER_UNAVAILABLE))
                    continue
                self._access_log.line("connection %d: POST /publish/%s 200, reached %d",
                                      conn, action.channel, reached)
                work.extend(session.publish_done(reached, self._fanout.position))
            elif isinstance(action, Subscribe):
                self._opened(conn, f"on channel {action.channel}")
                if self._bridge is not None:
                    self._bridge.subscribe(action.channel)
                if not (self._held and self._held.is_held(conn)):
                    self._hub.subscribe(conn, action.channel, action.window_bits)
                if session is not None:  # a WebSocket now: the loop keeps it alive
                    self._loop.heartbeat(conn, True, aligned=not session.mid_message)
            elif isinstance(action, Publish):
                self._counts.published_ws += 1
                exclude = NO_CONN if self._current.settings.echo else conn
                self._fanout.publish(action.channel, data_frame(action.payload, action.text),
                                     exclude)
            elif isinstance(action, OpenedV1):
                self._opened(conn, "(ringcast.v1)")
                self._v1_bits[conn] = action.window_bits
                if session is not None:  # a WebSocket now: the loop keeps it alive
                    self._loop.heartbeat(conn, True, aligned=not session.mid_message)
            elif isinstance(action, Join):
                assert session is not None
                if self._bridge is not None:
                    self._bridge.subscribe(action.channel)
                joining = self._fanout.join(
                    conn, action.channel, action.since, action.ref, self._v1_bits.get(conn, 0),
                    still_wanted=self._still_joining(conn, session, action.channel),
                    on_result=self._join_result(conn, session, action))
                if not self._joined(conn, session, action, joining):
                    return
            elif isinstance(action, Leave):
                self._leave(conn, action.channel)
            elif isinstance(action, PublishCommand):
                self._counts.published_ws += 1
                reached = self._fanout.publish(
                    action.channel, data_frame(action.payload, action.text))
                answer = self._publish_answer(conn, action)
                if reached == FORWARDED:
                    self._fanout.when_ordered(answer)
                else:
                    answer(self._fanout.position, reached)
            elif isinstance(action, HttpPublishBatch):
                assert session is not None
                fanout = self._fanout
                # All or nothing up front: a message of a history channel whose orderer
                # (its owner worker, or Redis) is unreachable refuses the whole batch.
                if not all(fanout.can_publish(m.channel) for m in action.messages):
                    work.extend(session.publish_refused(503, _OWNER_UNAVAILABLE))
                    continue
                self._counts.published_http += len(action.messages)
                batch = _Batch(len(action.messages), self._batch_done(conn, session))
                for index, m in enumerate(action.messages):
                    reached = fanout.publish(m.channel, data_frame(m.payload, m.text))
                    if reached == FORWARDED:
                        fanout.when_ordered(batch.answer(index))
                    else:
                        batch.answer(index)(fanout.position, reached)
                if batch.results_now():
                    work.extend(session.publish_batch_done(batch.results))
            elif isinstance(action, HttpQuery):
                assert session is not None
                status, content_type, body = self._query(action.path)
                self._access_log.line("connection %d: GET %s %d", conn, action.path, status)
                work.extend(session.respond(status, content_type, body))
            elif isinstance(action, ClientAddress):
                self._access_log.line("connection %d: client %s, as its proxy says", conn,
                                      action.address)
                if (action.of_connection
                        and self._current.config.limits.max_connections_per_ip
                        and not self._admit(conn, _ip(action.address))):
                    return  # refused: nothing more for it
            elif isinstance(action, Refused):
                self._counts.refusals[action.reason] += 1
                self._refusal_log.refused(action.code, action.reason.value, action.detail, conn)
            elif isinstance(action, CloseConnection):
                self._drop(conn, flush=True, ended=action.ended)
                return
        if session is not None:
            if session.state is SessionState.CLOSING:
                # RFC 6455 section 5.5.1: no data frame after our close frame.
                self._unsubscribe(conn, session)
            self._deadlines.set(conn, session.next_deadline())

    def close_all(self, code: int, reason: str, now: float) -> None:
        """Start the closing handshake with every client (shutdown)."""
        for conn, session in list(self.sessions.items()):
            self.execute(conn, session.close(code, reason, now))

    # -- timers --------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self._deadlines.next_time()

    def run_due(self, now: float) -> None:
        for conn in self._deadlines.pop_due(now):
            session = self.sessions.get(conn)
            if session is not None:
                self.execute(conn, session.tick(now))

    # -- the broker's confirmations -------------------------------------------------------

    def _hold_until_confirmed(self, conn: ConnId, actions: list[Action]) -> None:
        assert self._bridge is not None
        for action in actions:
            if isinstance(action, Subscribe) and not self._bridge.confirmed(action.channel):
                self._held.hold(conn, action)
                return

    def channel_confirmed(self, channel: str) -> None:
        """The broker confirmed a subscription: complete the handshakes waiting on it."""
        self._release(self._held.confirmed(channel))

    def bridge_down(self) -> None:
        """Local-only mode: nothing to wait for. A ``ringcast.v1`` client subscribed to a
        history channel may miss what other nodes publish from now on, with no position
        to tell it: it is closed (1013), to resume from its last position."""
        self._release(self._held.release_all())
        history = self._fanout.history
        if not history.enabled:
            return
        now = time.monotonic()
        for conn, session in list(self.sessions.items()):
            commands = session.commands
            if commands is not None and session.state is SessionState.OPEN and \
                    any(history.wants(name) for name in commands.channels):
                self.execute(conn, session.close(CloseCode.TRY_AGAIN_LATER, BROKER_LOST, now))

    def missed(self, channel: str) -> None:
        """This worker missed messages of history channel ``channel`` on their way from
        its orderer: its ``ringcast.v1`` subscribers here are closed (1013) to resume
        from their last position."""
        ch = self._hub.channels.get(channel)
        if ch is None:
            return
        now = time.monotonic()
        for conn in [ConnId(c) for group in ch.v1.values() for c in group.ids]:
            session = self.sessions.get(conn)
            if session is not None and session.state is SessionState.OPEN:
                self.execute(conn, session.close(CloseCode.TRY_AGAIN_LATER, MISSED, now))

    def _release(self, released: list[Held]) -> None:
        for conn, subscription, data in released:
            for chunk in data:
                self._loop.send(conn, chunk, force=True)
            self._hub.subscribe(conn, subscription.channel, subscription.window_bits)

    # -- ringcast.v1 and history channels ordered by another worker --------------------------

    def _still_joining(self, conn: ConnId, session: Session, channel: str
                       ) -> Callable[[], bool]:
        def wanted() -> bool:
            commands = session.commands
            return (self.sessions.get(conn) is session and session.state is SessionState.OPEN
                    and commands is not None and channel in commands.channels)
        return wanted

    def _join_result(self, conn: ConnId, session: Session, action: Join
                     ) -> Callable[[Joining], None]:
        def result(joining: Joining) -> None:
            self._joined(conn, session, action, joining)
        return result

    def _joined(self, conn: ConnId, session: Session, action: Join, result: Joining) -> bool:
        """Act on how a subscription went; False when the connection was closed."""
        if result is Joining.SLOW:
            # What it missed does not fit in its queue: a slow consumer, whatever the
            # policy (dropping part of it would break the promise of no gap).
            self._counts.slow_closes += 1
            self.execute(conn, session.close(
                CloseCode.SLOW_CONSUMER, "slow consumer: what it missed does not fit in "
                "limits.queue_max_bytes", time.monotonic()))
            return False
        if result is Joining.UNAVAILABLE and session.commands is not None:
            session.commands.channels.discard(action.channel)
            self._loop.send(conn, error_frame(action.ref, action.channel, "unavailable",
                                              _OWNER_UNAVAILABLE), force=True)
        return True

    def _publish_answer(self, conn: ConnId, action: PublishCommand) -> Answer:
        """The ``published`` reply to a ringcast.v1 publish, whenever it is ordered."""
        def answer(position: Position | None, reached: int) -> None:
            if conn not in self.sessions:
                return
            reply = (error_frame(action.ref, action.channel, "unavailable", _OWNER_UNAVAILABLE)
                     if reached == UNAVAILABLE
                     else published_frame(action.ref, action.channel, position))
            self._loop.send(conn, reply, force=True)
        return answer

    def _http_answer(self, conn: ConnId, session: Session, channel: str) -> Answer:
        """The answer to a ``POST /publish/<channel>`` forwarded to the channel's owner."""
        def answer(position: Position | None, reached: int) -> None:
            if self.sessions.get(conn) is not session:
                return  # gone (a publish answered after the client left is not sent)
            if reached == UNAVAILABLE:
                self.execute(conn, session.publish_refused(503, _OWNER_UNAVAILABLE))
                return
            self._access_log.line("connection %d: POST /publish/%s 200, reached %d",
                                  conn, channel, reached)
            self.execute(conn, session.publish_done(reached, position))
        return answer

    def _batch_done(self, conn: ConnId, session: Session) -> Callable[[list[Result]], None]:
        """The answer to a ``POST /publish`` batch, once each message was ordered."""
        def done(results: list[Result]) -> None:
            if self.sessions.get(conn) is not session:
                return  # gone
            self._access_log.line("connection %d: POST /publish 200 (%d messages)", conn,
                                  len(results))
            self.execute(conn, session.publish_batch_done(results))
        return done

    def _opened(self, conn: ConnId, what: str) -> None:
        """A WebSocket handshake completed: how long it took."""
        born = self._born.pop(conn, None)
        if born is not None:
            took = time.monotonic() - born
            self._counts.handshake.observe(took)
            self._access_log.line("connection %d: WebSocket open %s (%.1f ms after accept)",
                                  conn, what, took * 1000)

    # -- the end of a connection ------------------------------------------------------------

    def _unsubscribe(self, conn: ConnId, session: Session) -> None:
        name = session.channel
        self._held.forget(conn)
        commands = session.commands
        if commands is not None:
            if self._v1_bits.pop(conn, None) is None:
                return  # unsubscribed already
            self._mid_message.discard(conn)
            self._loop.heartbeat(conn, False)
            for name in commands.channels:
                self._leave(conn, name)
            return
        if name is None:
            return  # never a WebSocket: no heartbeats, no channel
        self._mid_message.discard(conn)
        self._loop.heartbeat(conn, False)  # closing: no more pings
        self._leave(conn, name)

    def _leave(self, conn: ConnId, name: str) -> None:
        if self._hub.unsubscribe(conn, name) and self._bridge is not None \
                and not self._held.waits_for(name):
            self._bridge.unsubscribe(name)

    def _drop(self, conn: ConnId, flush: bool, ended: Ended) -> None:
        """Close a client connection, counted once as ``ended``; it keeps its places in the
        limits until ringio reports its id free (`released`)."""
        session = self.sessions.pop(conn, None)
        self._born.pop(conn, None)
        if session is not None:
            self._counts.count_close(ended)
            self._access_log.line("connection %d closed: %s by the %s", conn, ended.value,
                                  ended.side)
            self._unsubscribe(conn, session)
        self._deadlines.discard(conn)
        self._loop.close_connection(conn, flush=flush)
        self._linger(self._closing, conn)

    def _linger(self, closing: dict[ConnId, int], conn: ConnId) -> None:
        # ringio flushes, shuts down writing and lingers for the peer's EOF; past
        # close_timeout the connection is reset.
        gen = self._loop.generation(conn)
        if gen < 0:
            return  # freed already (epoll frees at once): its CLOSED is on the way
        closing[conn] = gen
        self._timers.call_at(time.monotonic() + self._current.settings.close_timeout,
                             lambda: self._force_close(closing, conn, gen))

    def _force_close(self, closing: dict[ConnId, int], conn: ConnId, gen: int) -> None:
        # The peer had close_timeout to read what we sent and answer: reset it, so what it
        # left unread in our kernel buffers is freed now, not when TCP gives up on it.
        # (Only if the id still is that connection: ringio bumps the generation when it
        # frees an id, so a reuse never matches.)
        if closing.get(conn) == gen and self._loop.generation(conn) == gen:
            self._loop.close_connection(conn, abort=True)

    @property
    def open(self) -> int:
        """Client connections open (a session: HTTP, WebSocket, or closing the WebSocket)."""
        return len(self.sessions)

    @property
    def closing(self) -> int:
        """Client connections closed whose ids and files are not free yet."""
        return len(self._closing)

    @property
    def done(self) -> bool:
        """No client left, open or closing (the drain is over)."""
        return not self.sessions and not self._closing


class _Batch:
    """The results of a ``POST /publish`` batch, as its messages are ordered: at once
    here, or later by the channel's owner worker or Redis (see :class:`Answer`)."""

    def __init__(self, size: int, done: Callable[[list[Result]], None]) -> None:
        self.results: list[Result] = [None] * size
        self._waiting = size
        self._sync = True   # still publishing: the caller answers (results_now)
        self._done = done

    def answer(self, i: int) -> Answer:
        def answered(position: Position | None, reached: int) -> None:
            self.results[i] = None if reached == UNAVAILABLE else (reached, position)
            self._waiting -= 1
            if not self._waiting and not self._sync:
                self._done(self.results)
        return answered

    def results_now(self) -> bool:
        """Called once every message was published: True when all are answered already
        (answer now); otherwise the last answer calls ``done``."""
        self._sync = False
        return not self._waiting


def _peer_address(fd: int) -> tuple[str, int] | None:
    """The address and port of an IP socket's peer; None when it is gone or not an IP
    socket."""
    try:
        s = socket.socket(fileno=fd)  # borrowed (detached below): the loop owns the fd
    except OSError:
        return None
    try:
        if s.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        host, port = s.getpeername()[:2]
    except OSError:
        return None  # reset before we looked
    finally:
        s.detach()
    return host, port


def _ip(address: str) -> str:
    """An address as the per-address limit counts it: an IPv4-mapped IPv6 address (a
    dual-stack listener's IPv4 peer) as IPv4."""
    return address.removeprefix("::ffff:")


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _errno_text(err: int) -> str:
    return f"{errno.errorcode.get(err, str(err))} ({os.strerror(err)})"
