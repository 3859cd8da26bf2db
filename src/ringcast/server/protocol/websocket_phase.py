"""The WebSocket side of a connection, from the 101 response to the TCP close.

:class:`~.frames.FrameReader` (wsproto) parses the client's frames; this module decides
what they mean for a fan-out server:

- Data messages are assembled and become :class:`Publish` actions. At the first frame
  of a message, the connection is closed with 1008 when clients may not publish
  ("publishing is disabled on this server"), when its token does not allow this channel
  ("not allowed to publish on <channel>") or has expired since the handshake ("token
  expired"), or when the message rate limit is exceeded ("message rate limit exceeded",
  see :mod:`.ratelimit`). A message announced bigger than ``max_message_size`` closes
  with 1009 as soon as its frame header arrives; one in more than
  ``max_message_frames`` frames with 1008.
- A ping is answered with a pong. Pings and unsolicited pongs are paid from the
  control-frame budget (``max_control_frames_per_second``, a token bucket); past it the
  connection is closed with 1008 "control frame rate limit exceeded". The pong that
  answers the server's own ping is free. So every frame a client sends is paid for: a
  data frame by its message (the message rate limit, the frame count per message), a
  control frame by this budget.
- A frame or message still unfinished ``message_timeout`` after its first byte closes
  the connection with 1008: an unfinished message holds memory, and its bytes would
  otherwise keep the connection alive forever.
- A protocol error closes with the code the reader gives (1002, or 1007 for invalid
  UTF-8) and the TCP connection right after: the peer's stream can no longer be trusted,
  so there is no waiting for its close frame ("Fail the WebSocket Connection", RFC 6455
  section 7.1.7). The same holds for every 1008 and 1009, whose remaining bytes are not
  read.
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
progress, and the gate (a token's limits, the rate limits) only when something limits
the client.
"""

from __future__ import annotations

import struct
from typing import Final

from .actions import Action, CloseConnection, Ended, Publish, Refused, SendBytes
from .auth import Access
from .frames import (
    CloseCode,
    Event,
    FrameError,
    FrameReader,
    Kind,
    close_frame,
    ping_frame,
    pong_frame,
)
from .ratelimit import TokenBucket
from .refusals import Refusal
from .ringcast_v1 import Commands
from .settings import ProtocolSettings

__all__ = ["WebSocketPhase"]

_REFUSAL_OF_CODE: Final[dict[int, Refusal]] = {  # what the reader's failures mean
    CloseCode.INVALID_DATA: Refusal.INVALID_UTF8,
    CloseCode.MESSAGE_TOO_BIG: Refusal.MESSAGE_TOO_BIG,
    CloseCode.POLICY_VIOLATION: Refusal.TOO_MANY_FRAMES,
}

_pack_ping = struct.Struct("!I").pack


class _Gate:
    """What limits one client besides the server's switches: its token (a channel it may
    not publish on, an expiry), the message rate limit and the control-frame budget.
    Exists only when one of them does (the budget's bucket is made on the first control
    frame it charges)."""

    __slots__ = ("bucket", "control", "may_publish", "until")

    def __init__(self, may_publish: bool, until: float | None, bucket: TokenBucket | None) -> None:
        self.may_publish = may_publish
        self.until = until  # when publishing ends, on the session's clock; None: never
        self.bucket = bucket  # the message rate limit
        self.control: TokenBucket | None = None  # the control-frame budget, once charged


class WebSocketPhase:
    """Everything that happens on a connection once the WebSocket is open.

    Methods append actions to ``out`` and never raise on bad input. ``closing`` is true
    once the server sent its close frame and waits for the peer's.
    """

    __slots__ = (
        "_commands",
        "_deadline",
        "_deflate",
        "_gate",
        "_partial_until",
        "_ping_at",
        "_pings_sent",
        "_pong_owed",
        "_reader",
        "_settings",
        "channel",
        "closing",
    )

    def __init__(
        self,
        settings: ProtocolSettings,
        channel: str | None,
        now: float,
        *,
        access: Access | None = None,
        publish_until: float | None = None,
        deflate: bool = False,
        commands: Commands | None = None,
    ) -> None:
        """``access``: what the client's token allows (``None``: anything the settings
        allow); ``publish_until``: when publishing ends (the token expires), on the
        session's clock, ``None`` for never; ``deflate``: permessage-deflate was agreed,
        and the client's messages may come compressed. ``commands``: a ``ringcast.v1``
        client (``channel`` None): its messages are commands, which decide for
        themselves what may be published where."""
        self.channel = channel
        self._commands = commands
        self._deflate = deflate
        # Why the server started the closing handshake; None while open (one attribute
        # for both: an idle connection pays for no more).
        self.closing: Ended | None = None
        self._settings = settings
        # The frame or fragmented message in progress, if any; None between them.
        self._reader: FrameReader | None = None
        # When the frame or message in progress must be complete; None between them.
        self._partial_until: float | None = None
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
        self._pong_owed = False  # a ping was sent and no pong came back yet
        self._pings_sent = 0

    @property
    def mid_message(self) -> bool:
        """Part of a frame or of a fragmented message has been read."""
        return self._reader is not None

    # -- timers ------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        if self.closing:
            return self._deadline
        due = self._deadline if self._deadline is not None else self._ping_at
        partial = self._partial_until
        if partial is not None and (due is None or partial < due):
            return partial
        return due

    def tick(self, now: float, out: list[Action]) -> None:
        deadline = self._deadline
        if self.closing:
            if deadline is not None and now >= deadline:
                out.append(CloseConnection(self.closing))
            return
        if self._partial_until is not None and now >= self._partial_until:
            reason = f"message not completed within {self._settings.message_timeout:g} seconds"
            self._fail(Refusal.MESSAGE_TIMEOUT, CloseCode.POLICY_VIOLATION, reason, out)
            return
        if deadline is not None:  # a pong is due
            if now >= deadline:
                self.close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout", now, out)
            return
        if self._ping_at is not None and now >= self._ping_at:
            self._pings_sent = (self._pings_sent + 1) & 0xFFFFFFFF
            out.append(SendBytes(ping_frame(_pack_ping(self._pings_sent))))
            self._pong_owed = True
            self._deadline = now + self._settings.ping_timeout
            self._ping_at = now + self._settings.ping_interval

    # -- inbound -----------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float, out: list[Action]) -> None:
        if not data:
            # EOF without a close frame (code 1006)
            out.append(CloseConnection(self.closing or Ended.PEER_CLOSED))
            return
        if self.closing:
            self._receive_while_closing(data, out)
            return
        self._deadline = None  # any byte shows the peer is alive
        settings = self._settings
        reader = self._reader or FrameReader(
            settings.max_message_size, settings.max_message_frames, deflate=self._deflate
        )
        try:
            for event in reader.feed(data):
                if self._handle(event, now, out):
                    return
        except FrameError as exc:
            refusal = _REFUSAL_OF_CODE.get(exc.code, Refusal.PROTOCOL_ERROR)
            if exc.inflating and exc.code == CloseCode.INVALID_DATA:
                refusal = Refusal.INVALID_COMPRESSION
            self._fail(refusal, exc.code, exc.reason, out)
            return
        if reader.idle:
            self._reader = None
            self._partial_until = None
        else:
            self._reader = reader
            if self._partial_until is None:
                self._partial_until = now + settings.message_timeout

    def _handle(self, event: Event, now: float, out: list[Action]) -> bool:
        """Act on one event of the reader; True when the connection is done."""
        kind = event.kind
        if kind is Kind.START:
            return self._refuse_message(now, out)
        if kind is Kind.TEXT or kind is Kind.BINARY:
            if self._commands is not None:
                self._commands.receive(event.payload, kind is Kind.TEXT, now, out)
            else:
                assert self.channel is not None
                out.append(Publish(self.channel, event.payload, kind is Kind.TEXT))
            self._partial_until = None  # the next message has its own time
        elif kind is Kind.PING:
            if not self._pay_control(now, out):
                return True
            out.append(SendBytes(pong_frame(event.payload)))
        elif kind is Kind.PONG:
            if self._pong_owed:
                self._pong_owed = False  # the answer to our ping: free
            elif not self._pay_control(now, out):
                return True
        else:  # CLOSE: echo the code and reason
            out.append(SendBytes(close_frame(event.code, event.reason)))
            out.append(CloseConnection(Ended.CLIENT_CLOSE))
            return True
        return False

    def _pay_control(self, now: float, out: list[Action]) -> bool:
        """Charge a ping or an unsolicited pong to the control-frame budget; False (and
        the connection closed) when it is spent."""
        settings = self._settings
        rate = settings.max_control_frames_per_second
        if rate <= 0:
            return True
        gate = self._gate
        if gate is None:
            gate = self._gate = _Gate(True, None, None)
        if gate.control is None:
            gate.control = TokenBucket(rate, settings.control_frame_burst, now)
        if gate.control.take(now):
            return True
        reason = "control frame rate limit exceeded"
        self._fail(Refusal.CONTROL_FLOOD, CloseCode.POLICY_VIOLATION, reason, out)
        return False

    def _refuse_message(self, now: float, out: list[Action]) -> bool:
        """At the first frame of a data message: close (True) if it may not be published."""
        if not self._settings.client_publish and self._commands is None:
            reason = "publishing is disabled on this server"
            self._fail(Refusal.PUBLISH_DISABLED, CloseCode.POLICY_VIOLATION, reason, out)
            return True
        gate = self._gate
        if gate is None:
            return False
        if not gate.may_publish:
            reason = f"not allowed to publish on {self.channel}"
            self._fail(Refusal.PUBLISH_FORBIDDEN, CloseCode.POLICY_VIOLATION, reason, out)
        elif gate.until is not None and now >= gate.until:
            self._fail(Refusal.EXPIRED_TOKEN, CloseCode.POLICY_VIOLATION, "token expired", out)
        elif gate.bucket is not None and not gate.bucket.take(now):
            reason = "message rate limit exceeded"
            self._fail(Refusal.RATE_LIMITED, CloseCode.POLICY_VIOLATION, reason, out)
        else:
            return False
        return True

    def _receive_while_closing(self, data: bytes, out: list[Action]) -> None:
        """After our close frame: look for the peer's, discard everything else (a
        broken frame ends the wait too)."""
        closing = self.closing
        assert closing is not None
        reader = self._reader or FrameReader(None, self._settings.max_message_frames,
                                             deflate=self._deflate)
        try:
            for event in reader.feed(data):
                if event.kind is Kind.CLOSE:
                    out.append(CloseConnection(closing))
                    return
        except FrameError:
            out.append(CloseConnection(closing))
            return
        self._reader = None if reader.idle else reader

    # -- closing -----------------------------------------------------------------------

    def close(self, code: int, reason: str, now: float, out: list[Action]) -> None:
        """Start the closing handshake: send a close frame, wait for the peer's."""
        if self.closing:
            return
        out.append(SendBytes(close_frame(code, reason)))
        self.closing = Ended.by_server_close(code)
        self._deadline = now + self._settings.close_timeout
        self._partial_until = None
        # The message in progress is dropped; the rest of its frames are read and
        # discarded by a reader that keeps nothing.
        self._reader = None if self._reader is None else self._reader.discarding()

    def _fail(self, refusal: Refusal, code: int, reason: str, out: list[Action]) -> None:
        """Refuse: emit :class:`Refused`, send a close frame and close the TCP connection
        without waiting."""
        out.append(Refused(refusal, code, reason))
        out.append(SendBytes(close_frame(code, reason)))
        out.append(CloseConnection(Ended.REFUSED))

    def internal_error(self, out: list[Action]) -> None:
        """Close with 1011 after an unexpected exception, whatever state the reader is in."""
        if not self.closing:
            out.append(SendBytes(close_frame(CloseCode.INTERNAL_ERROR)))
        out.append(CloseConnection(Ended.INTERNAL_ERROR))
