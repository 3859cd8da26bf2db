"""The WebSocket side of a connection, from the 101 response to the TCP close.

wsproto's :class:`~wsproto.connection.Connection` parses the frames (unmasking, UTF-8
validation of text, control frame rules, close codes); this module decides what they
mean for a fan-out server:

- Data messages are assembled (fragments joined once, when the last one arrives) and
  become :class:`Publish` actions, or close the connection with 1008 when clients may
  not publish. A message announced bigger than ``max_message_size`` closes with 1009 as
  soon as its frame header arrives (see :mod:`.message_size`).
- A ping is answered with a pong.
- A protocol error closes with the code wsproto gives (1002, or 1007 for invalid UTF-8)
  and the TCP connection right after: the peer's stream can no longer be trusted, so
  there is no waiting for its close frame ("Fail the WebSocket Connection", RFC 6455
  section 7.1.7). The same holds for 1008 and 1009, whose remaining bytes are not read.
- The peer's close is echoed (its code and reason), then the TCP connection is closed:
  the server closes first (section 7.1.1).
- A server-initiated close (:meth:`WebSocketPhase.close`) sends a close frame and waits
  up to ``close_timeout`` for the peer's; data arriving meanwhile is discarded.
- Keepalive: a ping every ``ping_interval``; when nothing at all arrives within
  ``ping_timeout`` after it, the server closes with 1011 "keepalive ping timeout".
"""

from __future__ import annotations

import struct
from typing import Final

from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    BytesMessage,
    Event,
    Ping,
    TextMessage,
)
from wsproto.events import CloseConnection as WsClose

from .actions import Action, CloseConnection, Publish, SendBytes
from .framing import CLOSE, encode_frame
from .message_size import MessageSizeGuard
from .settings import ProtocolSettings

__all__ = ["WebSocketPhase"]

MESSAGE_TOO_BIG: Final = 1009
POLICY_VIOLATION: Final = 1008
INTERNAL_ERROR: Final = 1011

_pack_ping = struct.Struct("!I").pack


class WebSocketPhase:
    """Everything that happens on a connection once the WebSocket is open.

    Methods append actions to ``out`` and never raise on bad input. ``closing`` is true
    once the server sent its close frame and waits for the peer's.
    """

    def __init__(
        self,
        settings: ProtocolSettings,
        channel: str,
        connection: Connection,
        now: float,
    ) -> None:
        self.channel = channel
        self.closing = False
        self._settings = settings
        self._conn = connection
        self._guard = MessageSizeGuard(settings.max_message_size)
        self._fragments: list[bytes] = []  # the message so far, text as UTF-8
        interval = settings.ping_interval
        self._ping_at: float | None = now + interval if interval > 0 else None
        self._pong_deadline: float | None = None
        self._close_deadline: float | None = None
        self._pings_sent = 0

    # -- timers ------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        if self.closing:
            return self._close_deadline
        if self._pong_deadline is not None:
            return self._pong_deadline
        return self._ping_at

    def tick(self, now: float, out: list[Action]) -> None:
        if self.closing:
            if self._close_deadline is not None and now >= self._close_deadline:
                out.append(CloseConnection())
            return
        if self._pong_deadline is not None:
            if now >= self._pong_deadline:
                self.close(INTERNAL_ERROR, "keepalive ping timeout", now, out)
            return
        if self._ping_at is not None and now >= self._ping_at:
            self._pings_sent += 1
            out.append(SendBytes(self._conn.send(Ping(_pack_ping(self._pings_sent & 0xFFFFFFFF)))))
            self._pong_deadline = now + self._settings.ping_timeout
            self._ping_at = now + self._settings.ping_interval

    # -- inbound -----------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float, out: list[Action]) -> None:
        if not data:
            out.append(CloseConnection())  # EOF without a close frame (code 1006)
            return
        self._pong_deadline = None  # any byte shows the peer is alive
        if self.closing:
            self._receive_while_closing(data, out)
            return
        cut = self._guard.feed(data)
        if cut is not None:
            data = data[:cut]  # wsproto never sees the frame that is too big
        self._conn.receive_data(data)
        for event in self._conn.events():
            if self._handle(event, out):
                return
        if cut is not None:
            limit = self._settings.max_message_size
            self._fail(
                MESSAGE_TOO_BIG,
                f"message is at least {self._guard.size} bytes, at most {limit} allowed",
                out,
            )

    def _handle(self, event: Event, out: list[Action]) -> bool:
        """Act on one wsproto event; True when the connection is done."""
        if isinstance(event, TextMessage | BytesMessage):
            if not self._settings.client_publish:
                self._fail(POLICY_VIOLATION, "publishing is disabled on this server", out)
                return True
            text = isinstance(event, TextMessage)
            data = event.data.encode() if isinstance(event, TextMessage) else bytes(event.data)
            if not event.message_finished:
                self._fragments.append(data)
                return False
            if self._fragments:
                self._fragments.append(data)
                data = b"".join(self._fragments)
                self._fragments.clear()
            out.append(Publish(self.channel, data, text))
        elif isinstance(event, Ping):
            out.append(SendBytes(self._conn.send(event.response())))
        elif isinstance(event, WsClose):
            if self._conn.state is ConnectionState.REMOTE_CLOSING:
                out.append(SendBytes(self._conn.send(event.response())))  # echo the code
                out.append(CloseConnection())
            else:  # wsproto turns a parse failure into a close event; nothing was received
                self._fail(event.code, event.reason or "", out)
            return True
        # A Pong needs nothing more: receiving it already cleared the pong deadline.
        return False

    def _receive_while_closing(self, data: bytes, out: list[Action]) -> None:
        """After our close frame: look for the peer's, discard everything else."""
        self._conn.receive_data(data)
        for event in self._conn.events():
            if isinstance(event, WsClose):  # the peer's close, or a parse failure
                out.append(CloseConnection())
                return

    # -- closing -----------------------------------------------------------------------

    def close(self, code: int, reason: str, now: float, out: list[Action]) -> None:
        """Start the closing handshake: send a close frame, wait for the peer's."""
        if self.closing:
            return
        out.append(SendBytes(self._conn.send(WsClose(code, reason))))
        self.closing = True
        self._close_deadline = now + self._settings.close_timeout
        self._fragments.clear()

    def _fail(self, code: int, reason: str, out: list[Action]) -> None:
        """Send a close frame and close the TCP connection without waiting."""
        out.append(SendBytes(self._conn.send(WsClose(code, reason))))
        out.append(CloseConnection())

    def internal_error(self, out: list[Action]) -> None:
        """Close with 1011 after an unexpected exception, whatever state wsproto is in."""
        if not self.closing:
            out.append(SendBytes(encode_frame(CLOSE, struct.pack("!H", INTERNAL_ERROR))))
        out.append(CloseConnection())
