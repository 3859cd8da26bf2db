"""The WebSocket side of a connection, from the 101 response to the TCP close.

:class:`~.frames.FrameReader` parses the client's frames (unmasking, UTF-8 validation
of text, control frame rules, close codes, the size limit); this module decides what
they mean for a fan-out server:

- Data messages are assembled (fragments joined once, when the last one arrives) and
  become :class:`Publish` actions. At the first frame of a message, the connection is
  closed with 1008 when clients may not publish ("publishing is disabled on this
  server"), when its token does not allow this channel ("not allowed to publish on
  <channel>") or has expired since the handshake ("token expired"), or when the message
  rate limit is exceeded ("message rate limit exceeded", see :mod:`.ratelimit`). A
  message announced bigger than ``max_message_size`` closes with 1009 as soon as its
  frame header arrives.
- A ping is answered with a pong (and counts against the rate limit).
- A protocol error closes with the code the reader gives (1002, or 1007 for invalid
  UTF-8) and the TCP connection right after: the peer's stream can no longer be trusted,
  so there is no waiting for its close frame ("Fail the WebSocket Connection", RFC 6455
  section 7.1.7). The same holds for 1008 and 1009, whose remaining bytes are not read.
- The peer's close is echoed (its code and reason), then the TCP connection is closed:
  the server closes first (section 7.1.1).
- A server-initiated close (:meth:`WebSocketPhase.close`) sends a close frame and waits
  up to ``close_timeout`` for the peer's; data arriving meanwhile is discarded.
- Keepalive: a ping every ``ping_interval``; when nothing at all arrives within
  ``ping_timeout`` after it, the server closes with 1011 "keepalive ping timeout".

Every close because the client broke a rule or a limit (1002, 1007, 1008, 1009) is
preceded by a :class:`Refused` action.

Memory: this object is what an idle subscriber costs, so it holds references and
numbers only. The frame reader exists while a frame or a fragmented message is in
progress, and the publishing gate (a token's limits, the rate limit) only when something
limits publishing.
"""

from __future__ import annotations

import struct
from typing import Final

from .actions import Action, CloseConnection, Publish, Refused, SendBytes
from .auth import Access
from .frames import START, FrameError, FrameEvent, FrameReader
from .framing import BINARY, CLOSE, PING, PONG, TEXT, encode_frame
from .ratelimit import TokenBucket
from .refusals import Refusal
from .settings import ProtocolSettings

__all__ = ["WebSocketPhase", "close_frame"]

PROTOCOL_ERROR: Final = 1002
INVALID_DATA: Final = 1007
POLICY_VIOLATION: Final = 1008
MESSAGE_TOO_BIG: Final = 1009
INTERNAL_ERROR: Final = 1011

_REFUSAL_OF_CODE: Final = {  # what the reader's failures mean
    INVALID_DATA: Refusal.INVALID_UTF8,
    MESSAGE_TOO_BIG: Refusal.MESSAGE_TOO_BIG,
}
_MAX_REASON: Final = 123  # bytes of a close reason: 125 minus the status code

_pack_ping = struct.Struct("!I").pack
_pack_code = struct.Struct("!H").pack


def close_frame(code: int, reason: str) -> bytes:
    """A server close frame with ``code`` and ``reason``, truncated to whole UTF-8
    characters to fit (what wsproto's ``CloseConnection(code, reason)`` sends)."""
    data = reason.encode()
    if len(data) > _MAX_REASON:
        data = data[:_MAX_REASON].decode(errors="ignore").encode()
    return encode_frame(CLOSE, _pack_code(code) + data)


class _Gate:
    """What limits one client's publishing besides the server's switch: its token (a
    channel it may not publish on, an expiry) and the message rate limit. Exists only
    when one of them does."""

    __slots__ = ("bucket", "may_publish", "until")

    def __init__(self, may_publish: bool, until: float | None, bucket: TokenBucket | None) -> None:
        self.may_publish = may_publish
        self.until = until  # when publishing ends, on the session's clock; None: never
        self.bucket = bucket


class WebSocketPhase:
    """Everything that happens on a connection once the WebSocket is open.

    Methods append actions to ``out`` and never raise on bad input. ``closing`` is true
    once the server sent its close frame and waits for the peer's.
    """

    __slots__ = (
        "_deadline",
        "_gate",
        "_ping_at",
        "_pings_sent",
        "_reader",
        "_settings",
        "channel",
        "closing",
    )

    def __init__(
        self,
        settings: ProtocolSettings,
        channel: str,
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
        # The frame or fragmented message in progress, if any; None between them.
        self._reader: FrameReader | None = None
        may_publish = access is None or access.may_publish
        rate = settings.max_messages_per_second
        bucket = TokenBucket(rate, settings.message_burst, now) if rate > 0 else None
        self._gate = (
            None
            if may_publish and publish_until is None and bucket is None
            else _Gate(may_publish, publish_until, bucket)
        )
        interval = settings.ping_interval
        self._ping_at: float | None = now + interval if interval > 0 else None
        # Open: when the pong is due (None: no ping outstanding). Closing: when the
        # peer's close frame is due.
        self._deadline: float | None = None
        self._pings_sent = 0

    # -- timers ------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        if self.closing or self._deadline is not None:
            return self._deadline
        return self._ping_at

    def tick(self, now: float, out: list[Action]) -> None:
        deadline = self._deadline
        if self.closing:
            if deadline is not None and now >= deadline:
                out.append(CloseConnection())
            return
        if deadline is not None:  # a pong is due
            if now >= deadline:
                self.close(INTERNAL_ERROR, "keepalive ping timeout", now, out)
            return
        if self._ping_at is not None and now >= self._ping_at:
            self._pings_sent = (self._pings_sent + 1) & 0xFFFFFFFF
            out.append(SendBytes(encode_frame(PING, _pack_ping(self._pings_sent))))
            self._deadline = now + self._settings.ping_timeout
            self._ping_at = now + self._settings.ping_interval

    # -- inbound -----------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float, out: list[Action]) -> None:
        if not data:
            out.append(CloseConnection())  # EOF without a close frame (code 1006)
            return
        if self.closing:
            self._receive_while_closing(data, out)
            return
        self._deadline = None  # any byte shows the peer is alive
        reader = self._reader or FrameReader()
        try:
            for event in reader.feed(data, self._settings.max_message_size):
                if self._handle(event, now, out):
                    return
        except FrameError as exc:
            refusal = _REFUSAL_OF_CODE.get(exc.code, Refusal.PROTOCOL_ERROR)
            self._fail(refusal, exc.code, exc.reason, out)
            return
        self._reader = None if reader.idle else reader

    def _handle(self, event: FrameEvent, now: float, out: list[Action]) -> bool:
        """Act on one frame event; True when the connection is done."""
        kind, payload = event
        if kind == START:
            return self._refuse_message(now, out)
        if kind <= BINARY:  # TEXT or BINARY: a complete message
            out.append(Publish(self.channel, payload, kind == TEXT))
        elif kind == PING:
            gate = self._gate
            if gate is not None and gate.bucket is not None and not gate.bucket.take(now):
                self._rate_limited(out)
                return True
            out.append(SendBytes(encode_frame(PONG, payload)))
        elif kind == CLOSE:
            out.append(SendBytes(encode_frame(CLOSE, payload)))  # echo the code and reason
            out.append(CloseConnection())
            return True
        # A Pong needs nothing more: receiving it already cleared the pong deadline.
        return False

    def _refuse_message(self, now: float, out: list[Action]) -> bool:
        """At the first frame of a data message: close (True) if it may not be published."""
        if not self._settings.client_publish:
            reason = "publishing is disabled on this server"
            self._fail(Refusal.PUBLISH_DISABLED, POLICY_VIOLATION, reason, out)
            return True
        gate = self._gate
        if gate is None:
            return False
        if not gate.may_publish:
            reason = f"not allowed to publish on {self.channel}"
            self._fail(Refusal.PUBLISH_FORBIDDEN, POLICY_VIOLATION, reason, out)
        elif gate.until is not None and now >= gate.until:
            self._fail(Refusal.EXPIRED_TOKEN, POLICY_VIOLATION, "token expired", out)
        elif gate.bucket is not None and not gate.bucket.take(now):
            self._rate_limited(out)
        else:
            return False
        return True

    def _rate_limited(self, out: list[Action]) -> None:
        reason = "message rate limit exceeded"
        self._fail(Refusal.RATE_LIMITED, POLICY_VIOLATION, reason, out)

    def _receive_while_closing(self, data: bytes, out: list[Action]) -> None:
        """After our close frame: look for the peer's, discard everything else (a
        broken frame ends the wait too)."""
        reader = self._reader or FrameReader()
        try:
            for kind, _ in reader.feed(data, self._settings.max_message_size, keep=False):
                if kind == CLOSE:
                    out.append(CloseConnection())
                    return
        except FrameError:
            out.append(CloseConnection())
            return
        self._reader = None if reader.idle else reader

    # -- closing -----------------------------------------------------------------------

    def close(self, code: int, reason: str, now: float, out: list[Action]) -> None:
        """Start the closing handshake: send a close frame, wait for the peer's."""
        if self.closing:
            return
        out.append(SendBytes(close_frame(code, reason)))
        self.closing = True
        self._deadline = now + self._settings.close_timeout
        if self._reader is not None:
            self._reader.drop_message()

    def _fail(self, refusal: Refusal, code: int, reason: str, out: list[Action]) -> None:
        """Refuse: emit :class:`Refused`, send a close frame and close the TCP connection
        without waiting."""
        out.append(Refused(refusal, code, reason))
        out.append(SendBytes(close_frame(code, reason)))
        out.append(CloseConnection())

    def internal_error(self, out: list[Action]) -> None:
        """Close with 1011 after an unexpected exception, whatever state the reader is in."""
        if not self.closing:
            out.append(SendBytes(encode_frame(CLOSE, _pack_code(INTERNAL_ERROR))))
        out.append(CloseConnection())
