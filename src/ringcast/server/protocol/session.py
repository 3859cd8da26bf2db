"""One TCP connection of the server, as a sans-I/O state machine.

Bytes and the time come in, :mod:`actions <.actions>` come out; this module opens no
socket and reads no clock. The runtime owns one :class:`Session` per accepted
connection and drives it like this (the python-websockets pattern)::

    session = Session(settings, now, unix_offset=time.time() - now)
    on bytes received:   run(session.receive_data(data, now))
    on EOF:              run(session.receive_data(b"", now))
    on timer:            run(session.tick(now))      # at session.next_deadline()
    on shutdown:         run(session.close(1001, "going away", now))
    on slow consumer:    run(session.close(3008, "slow", now))
    after HttpPublish:   run(session.publish_done(reached)) or publish_refused(...)
    after HttpQuery:     run(session.respond(status, content_type, body))

``run`` executes the actions in order (a :class:`Refused` is only counted: the session
sends the answer it explains itself). After a :class:`CloseConnection` the session is
``CLOSED`` and every method returns an empty list: the runtime may still call
:meth:`Session.publish_done` for a publish that finished after the client left.

States::

    HTTP --101--> OPEN --close()--> CLOSING
      |             |                  |
      +-------------+------------------+--CloseConnection--> CLOSED

The two phases live in :mod:`.http_phase` and :mod:`.websocket_phase`; this class
switches between them, keeps the state, and turns any unexpected exception into a
500 response or a 1011 close frame without details (they may be security-sensitive),
so a bug costs one connection, not the worker. Only misuse by the caller raises: an
answer nobody asked for (:exc:`RuntimeError`) or an invalid status or close code
(:exc:`ValueError`).
"""

from __future__ import annotations

from enum import Enum

from .actions import Action, CloseConnection, Ended
from .batch import Result
from .frames import valid_close_code
from .http_phase import HttpPhase, Route, check_status
from .ringcast_v1 import Commands
from .settings import ProtocolSettings
from .websocket_phase import WebSocketPhase

__all__ = ["Session", "SessionState"]


class SessionState(Enum):
    """Where a :class:`Session` stands."""

    HTTP = "http"
    """Reading HTTP requests: the WebSocket handshake or the HTTP API."""
    OPEN = "open"
    """The WebSocket is open and subscribed to :attr:`Session.channel`."""
    CLOSING = "closing"
    """The server sent a close frame and waits for the client's."""
    CLOSED = "closed"
    """A :class:`CloseConnection` was emitted; nothing more will be."""


class Session:
    """The protocol state of one TCP connection: HTTP first, then maybe WebSocket.

    Calls:

    - ``Session(settings, now, unix_offset=...)`` at accept time; ``now`` starts the
      handshake timeout. ``unix_offset`` is what to add to the runtime's clock to get
      Unix time (``time.time() - time.monotonic()`` for a monotonic clock): JWT expiry is
      Unix time. Without it (``None``), every JWT is refused as invalid: the session
      cannot tell whether it expired. Static tokens do not need it.
    - :meth:`receive_data` with every chunk received, ``b""`` for end of file.
    - :meth:`tick` at or after :meth:`next_deadline` (a no-op before it, so spurious
      calls are harmless). Deadlines: handshake timeout (a complete request within
      ``handshake_timeout``, also between keep-alive requests), keepalive ping and pong
      timeout, close timeout.
    - :meth:`close` for a server-initiated close.
    - After an :class:`HttpPublish`, exactly one of :meth:`publish_done` or
      :meth:`publish_refused`; after an :class:`HttpQuery`, :meth:`respond`. Only one
      request is outstanding at a time; later pipelined requests wait in the session.
      These three take no ``now``: the keep-alive timeout restarts from the last
      ``now`` the session saw.

    Every method returns the actions to execute, in order:

    - A handshake: ``SendBytes`` (the 101), then ``Subscribe(channel)``, then whatever
      the frames sent along with the request produce.
    - A complete data message, when ``client_publish``: ``Publish`` (fragments joined,
      text as UTF-8). A ping: ``SendBytes`` (the pong).
    - An HTTP API request: ``HttpPublish`` or ``HttpQuery``; the answer's ``SendBytes``
      comes from the method that answers it.
    - The end, always ``CloseConnection`` last, after:

      * an HTTP error response (``Connection: close``): a malformed or refused request
        (after a :class:`Refused` with the reason);
      * the handshake timeout (after a :class:`Refused`, unless the connection was an
        idle keep-alive one) or end of file in the HTTP phase: nothing (but an owed
        answer is still sent when it comes, then the connection closes);
      * a close frame and no wait, when the client broke the rules (after a
        :class:`Refused`): 1002 protocol error, 1007 invalid UTF-8, 1008 publishing
        disabled, not allowed on the channel, token expired, message or control-frame
        rate limit exceeded, a message in too many frames or unfinished past
        ``message_timeout``, 1009 message over ``max_message_size`` (decided on the
        frame header, before the payload);
      * the echo of the client's close frame (its code and reason);
      * after :meth:`close` (state ``CLOSING``; data is discarded meanwhile): the
        client's close frame, or ``close_timeout``;
      * no data within ``ping_timeout`` of a keepalive ping: a 1011 "keepalive ping
        timeout" close, handled like :meth:`close`;
      * end of file on the WebSocket: nothing.

    Bad input from the peer never raises, and nothing follows ``CloseConnection``.
    """

    __slots__ = ("_channel", "_commands", "_phase", "settings")

    def __init__(
        self, settings: ProtocolSettings, now: float, *, unix_offset: float | None = None,
        peer: str | None = None,
    ) -> None:
        """``unix_offset``: Unix time minus the session's clock (tokens expire in Unix
        time); ``peer``: the TCP peer's address, which matters when it is one of
        ``trusted_proxies``: its requests then name their client
        (:class:`~.actions.ClientAddress`)."""
        self.settings = settings
        proxy = peer if peer is not None and settings.proxies.trusts(peer) else None
        # The phase in charge: HTTP until a handshake succeeds, then WebSocket; None
        # once a CloseConnection was emitted.
        self._phase: HttpPhase | WebSocketPhase | None = HttpPhase(settings, now, unix_offset,
                                                                   proxy)
        self._channel: str | None = None
        self._commands: Commands | None = None

    # -- state -------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        phase = self._phase
        if phase is None:
            return SessionState.CLOSED
        if isinstance(phase, HttpPhase):
            return SessionState.HTTP
        return SessionState.CLOSING if phase.closing else SessionState.OPEN

    @property
    def channel(self) -> str | None:
        """The subscribed channel once the handshake succeeded (kept after the close, so
        the runtime can unsubscribe), else ``None`` (and for a ``ringcast.v1`` client:
        see :attr:`commands`)."""
        return self._channel

    @property
    def commands(self) -> Commands | None:
        """A ``ringcast.v1`` client's commands, whose ``channels`` are the channels it is
        subscribed to (kept after the close, so the runtime can unsubscribe them)."""
        return self._commands

    @property
    def mid_message(self) -> bool:
        """The WebSocket holds part of a frame or of a fragmented message: what the client
        sends next may continue it (the runtime's pong absorber must not read it)."""
        phase = self._phase
        return isinstance(phase, WebSocketPhase) and phase.mid_message

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has something to do, or ``None`` for never."""
        return None if self._phase is None else self._phase.next_deadline()

    # -- input -------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Action]:
        """Feed bytes received from the peer (``b""`` at end of file)."""
        out: list[Action] = []
        phase = self._phase
        if phase is not None:
            try:
                phase.receive_data(data, now, out)
                if isinstance(phase, HttpPhase):
                    self._maybe_upgraded(phase, now, out)
            except Exception:
                self._internal_error(out)
        return self._finish(out)

    def tick(self, now: float) -> list[Action]:
        """Run the timers that are due at ``now``."""
        out: list[Action] = []
        if self._phase is not None:
            try:
                self._phase.tick(now, out)
            except Exception:
                self._internal_error(out)
        return self._finish(out)

    def close(self, code: int, reason: str, now: float) -> list[Action]:
        """Close from the server side with ``code`` and ``reason`` (UTF-8, truncated to
        fit a close frame).

        Open WebSocket: send the close frame, enter ``CLOSING``, and wait up to
        ``close_timeout`` for the client's. HTTP phase: just :class:`CloseConnection`.
        Already closing or closed: nothing. Raises :exc:`ValueError` for a code an
        endpoint may not send (1004-1006, 1015, 0-999, 1016-2999, 5000+).
        """
        if not valid_close_code(code):
            msg = f"close code is {code}, expected 1000-1003, 1007-1014 or 3000-4999"
            raise ValueError(msg)
        out: list[Action] = []
        phase = self._phase
        if isinstance(phase, HttpPhase):
            out.append(CloseConnection(Ended.by_server_close(code)))
        elif phase is not None:
            try:
                phase.close(code, reason, now, out)
            except Exception:
                self._internal_error(out)
        return self._finish(out)

    # -- answers to the HTTP API ---------------------------------------------------------

    def publish_done(self, reached: int, position: tuple[str, int] | None = None
                     ) -> list[Action]:
        """Answer the pending :class:`HttpPublish`: 200, JSON
        ``{"channel": ..., "subscribers": reached}``, with ``"epoch"`` and ``"offset"``
        when the message got a ``position`` (its channel keeps history). The connection
        may then serve the next request."""
        http = self._owing(Route.PUBLISH, "publish_done")
        out: list[Action] = []
        if http is not None:
            try:
                http.publish_done(reached, position, out)
                self._maybe_upgraded(http, http.now, out)
            except Exception:
                self._internal_error(out)
        return self._finish(out)

    def publish_batch_done(self, results: list[Result]) -> list[Action]:
        """Answer the pending :class:`HttpPublishBatch`: 200, JSON ``{"results": [...]}``,
        the i-th from ``results[i]``: the subscribers it reached and its position (see
        :data:`~.batch.Result`)."""
        http = self._owing(Route.PUBLISH_BATCH, "publish_batch_done")
        out: list[Action] = []
        if http is not None:
            try:
                http.publish_batch_done(results, out)
                self._maybe_upgraded(http, http.now, out)
            except Exception:
                self._internal_error(out)
        return self._finish(out)

    def publish_refused(self, status: int, reason: str) -> list[Action]:
        """Answer the pending :class:`HttpPublish` with error ``status`` (e.g. 503) and
        ``reason`` as a text body, then close."""
        check_status(status)
        http = self._owing(None, "publish_refused")
        out: list[Action] = []
        if http is not None:
            try:
                http.publish_refused(status, reason, out)
            except Exception:
                self._internal_error(out)
        return self._finish(out)

    def respond(self, status: int, content_type: str, body: bytes) -> list[Action]:
        """Answer the pending :class:`HttpQuery`. A status of 400 or more closes the
        connection after the response; otherwise it may serve the next request."""
        check_status(status)
        http = self._owing(Route.QUERY, "respond")
        out: list[Action] = []
        if http is not None:
            try:
                http.respond(status, content_type, body, out)
                self._maybe_upgraded(http, http.now, out)
            except Exception:
                self._internal_error(out)
        return self._finish(out)

    # -- internals ---------------------------------------------------------------------

    def _owing(self, route: Route | None, method: str) -> HttpPhase | None:
        """The HTTP phase if it owes an answer of this kind (None: either publish); None
        once closed."""
        phase = self._phase
        if phase is None:
            return None
        owed = phase.owed if isinstance(phase, HttpPhase) else None
        publishes = (Route.PUBLISH, Route.PUBLISH_BATCH)
        if owed is None or (owed is not route if route is not None else owed not in publishes):
            what = "publish" if route is None else route.value
            msg = f"{method}() called, but no {what} request is waiting for an answer"
            raise RuntimeError(msg)
        assert isinstance(phase, HttpPhase)
        return phase

    def _maybe_upgraded(self, http: HttpPhase, now: float, out: list[Action]) -> None:
        """Switch to the WebSocket phase if the HTTP phase completed a handshake."""
        upgrade = http.upgrade
        if upgrade is None:
            return
        commands = self._commands = upgrade.commands
        self._channel = upgrade.channel if commands is None else None
        ws = self._phase = WebSocketPhase(
            self.settings,
            self._channel,
            now,
            access=upgrade.access,
            publish_until=upgrade.publish_until,
            deflate=upgrade.deflate,
            commands=commands,
        )
        if upgrade.trailing:
            ws.receive_data(upgrade.trailing, now, out)
        if upgrade.eof:
            ws.receive_data(b"", now, out)  # anything after a CloseConnection is dropped

    def _internal_error(self, out: list[Action]) -> None:
        if out and isinstance(out[-1], CloseConnection):
            return  # the failure came after the end: nothing more to say
        assert self._phase is not None  # only called while a phase is in charge
        self._phase.internal_error(out)

    def _finish(self, out: list[Action]) -> list[Action]:
        """Enforce "nothing after CloseConnection" and enter ``CLOSED`` on it."""
        for index, action in enumerate(out):
            if isinstance(action, CloseConnection):
                del out[index + 1 :]
                self._phase = None
                break
        return out
