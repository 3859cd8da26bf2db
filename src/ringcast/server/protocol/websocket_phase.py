"""The WebSocket side of a connection, from the 101 response to the TCP close.

wsproto's :class:`~wsproto.connection.Connection` parses the frames (unmasking, UTF-8
validation of text, control frame rules, close codes); this module decides what they
mean for a fan-out server:

- Data messages are assembled (fragments joined once, when the last one arrives) and
  become :class:`Publish` actions. At the first frame of a message, the connection is
  closed with 1008 when clients may not publish ("publishing is disabled on this
  server"), when its token does not allow this channel ("not allowed to publish on
  <channel>") or has expired since the handshake ("token expired"), or when the message
  rate limit is exceeded ("message rate limit exceeded", see :mod:`.ratelimit`). A
  message announced bigger than ``max_message_size`` closes with 1009 as soon as its
  frame header arrives (see :mod:`.message_size`).
- A ping is answered with a pong (and counts against the rate limit).
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

Every close because the client broke a rule or a limit (1002, 1007, 1008, 1009) is
preceded by a :class:`Refused` action.
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

from .actions import Action, CloseConnection, Publish, Refused, SendBytes
from .auth import Access
from .framing import CLOSE, encode_frame
from .message_size import MessageSizeGuard
from .ratelimit import TokenBucket
from .refusals import Refusal
from .settings import ProtocolSettings

__all__ = ["WebSocketPhase"]

PROTOCOL_ERROR: Final = 1002
INVALID_DATA: Final = 1007
POLICY_VIOLATION: Final = 1008
MESSAGE_TOO_BIG: Final = 1009
INTERNAL_ERROR: Final = 1011

_REFUSAL_OF_CODE: Final = {  # what wsproto's parse failures mean
    INVALID_DATA: Refusal.INVALID_UTF8,
    MESSAGE_TOO_BIG: Refusal.MESSAGE_TOO_BIG,
}

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
        *,
        access: Access | None = None,
        publish_until: float | None = None,
    ) -> None:
        """``access``: what the client's token allows (``None``: anything the settings
        allow); ``publish_until``: when publishing ends (the token expires), on the
        session's clock, ``None`` for never."""
        self.channel = channel
        self.closing = False
        self._settings = settings
        self._conn = connection
        self._guard = MessageSizeGuard(settings.max_message_size)
        self._fragments: list[bytes] = []  # the message so far, text as UTF-8
        self._in_message = False  # a data message has started and not finished
        self._may_publish = access is None or access.may_publish
        self._publish_until = publish_until
        rate = settings.max_messages_per_second
        self._bucket = TokenBucket(rate, settings.message_burst, now) if rate > 0 else None
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
            if self._handle(event, now, out):
                return
        if cut is not None:
            limit = self._settings.max_message_size
            self._fail(
                Refusal.MESSAGE_TOO_BIG,
                MESSAGE_TOO_BIG,
                f"message is at least {self._guard.size} bytes, at most {limit} allowed",
                out,
            )

    def _handle(self, event: Event, now: float, out: list[Action]) -> bool:
        """Act on one wsproto event; True when the connection is done."""
        if isinstance(event, TextMessage | BytesMessage):
            if not self._in_message:
                if self._refuse_message(now, out):
                    return True
                self._in_message = True
            text = isinstance(event, TextMessage)
            data = event.data.encode() if isinstance(event, TextMessage) else bytes(event.data)
            if not event.message_finished:
                self._fragments.append(data)
                return False
            self._in_message = False
            if self._fragments:
                self._fragments.append(data)
                data = b"".join(self._fragments)
                self._fragments.clear()
            out.append(Publish(self.channel, data, text))
        elif isinstance(event, Ping):
            if self._bucket is not None and not self._bucket.take(now):
                self._rate_limited(out)
                return True
            out.append(SendBytes(self._conn.send(event.response())))
        elif isinstance(event, WsClose):
            if self._conn.state is ConnectionState.REMOTE_CLOSING:
                out.append(SendBytes(self._conn.send(event.response())))  # echo the code
                out.append(CloseConnection())
            else:  # wsproto turns a parse failure into a close event; nothing was received
                refusal = _REFUSAL_OF_CODE.get(event.code, Refusal.PROTOCOL_ERROR)
                self._fail(refusal, event.code, event.reason or "", out)
            return True
        # A Pong needs nothing more: receiving it already cleared the pong deadline.
        return False

    def _refuse_message(self, now: float, out: list[Action]) -> bool:
        """At the first frame of a data message: close (True) if it may not be published."""
        if not self._settings.client_publish:
            reason = "publishing is disabled on this server"
            self._fail(Refusal.PUBLISH_DISABLED, POLICY_VIOLATION, reason, out)
        elif not self._may_publish:
            reason = f"not allowed to publish on {self.channel}"
            self._fail(Refusal.PUBLISH_FORBIDDEN, POLICY_VIOLATION, reason, out)
        elif self._publish_until is not None and now >= self._publish_until:
            self._fail(Refusal.EXPIRED_TOKEN, POLICY_VIOLATION, "token expired", out)
        elif self._bucket is not None and not self._bucket.take(now):
            self._rate_limited(out)
        else:
            return False
        return True

    def _rate_limited(self, out: list[Action]) -> None:
        reason = "message rate limit exceeded"
        self._fail(Refusal.RATE_LIMITED, POLICY_VIOLATION, reason, out)

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
        self._in_message = False

    def _fail(self, refusal: Refusal, code: int, reason: str, out: list[Action]) -> None:
        """Refuse: emit :class:`Refused`, send a close frame and close the TCP connection
        without waiting."""
        out.append(Refused(refusal, int(code), reason))
        out.append(SendBytes(self._conn.send(WsClose(code, reason))))
        out.append(CloseConnection())

    def internal_error(self, out: list[Action]) -> None:
        """Close with 1011 after an unexpected exception, whatever state wsproto is in."""
        if not self.closing:
            out.append(SendBytes(encode_frame(CLOSE, struct.pack("!H", INTERNAL_ERROR))))
        out.append(CloseConnection())
