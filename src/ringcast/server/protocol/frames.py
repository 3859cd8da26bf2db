"""WebSocket frames, RFC 6455 sections 5 to 8: wsproto reads and writes them.

wsproto's frame protocol (``wsproto.frame_protocol``) does the framing both ways. This
module fits it to a fan-out server, where a subscriber sends almost nothing and one
published message is framed once for every subscriber.

**Reading.** A :class:`FrameReader` feeds one client's bytes to a wsproto
``FrameProtocol`` and turns what it parses into :class:`Event` values. wsproto enforces
RFC 6455 and its reasons become the close reasons: 1002 for reserved opcodes and RSV
bits, an unmasked frame, a length not in its shortest encoding, a fragmented or
oversized control frame, a continuation frame out of place, a close frame with a 1-byte
payload or a status code an endpoint may not send; 1007 for a text message or close
reason that is not UTF-8, found at the first invalid piece, across fragments. ringcast
adds two limits of its own, decided on each data frame's header before any of its
payload is read (so an announced 2 GB frame costs nothing):

- 1009 when the message's announced length (its frames' lengths so far) exceeds
  ``max_size``;
- 1008 when the message comes in more than ``max_frames`` frames: each frame costs the
  server a parse, so a flood of empty fragments must not be free.

A ``FrameProtocol`` costs about 1.7 KB, which an idle subscriber must not hold: the
WebSocket phase makes a reader when bytes arrive and drops it once it is
:attr:`~FrameReader.idle` (no partial frame, no message in progress). A message in
progress is kept in one ``bytearray``: it costs its length plus a small constant, however
many frames it comes in.

**Writing.** :func:`data_frame`, :func:`ping_frame`, :func:`pong_frame` and
:func:`close_frame` use one server-side ``FrameProtocol`` for the whole process: a
server's frames are unmasked and carry no per-connection state, so one serialisation
serves every subscriber (and one compression every subscriber that agreed on
permessage-deflate: see :mod:`.deflate`).

**Compressed messages** from a client that agreed on permessage-deflate are inflated by
the reader's :class:`~.deflate.Inflate` extension as their frames arrive.

Copies of a published payload on its way to the first send, each once per message
(never per subscriber): wsproto unmasks a piece of payload (1) and copies it out of its
frame buffer (2); a text piece is decoded (3, the UTF-8 check) and encoded back (4); a
message of several pieces is joined (5); wsproto's serialiser copies the payload (6),
joins it to the header (7) and copies the result (8), which becomes ``bytes`` (9); the
fan-out copies that into its slot (10). A binary message that arrived in one piece skips
3 to 5.

The wsproto internals this needs, pinned by ``TestWsprotoInternals`` in
``tests/unit/protocol/test_frames.py`` so that a wsproto release that changes them fails
there first: the attributes ``FrameProtocol.__init__`` sets (:class:`_ServerFrames` sets
them itself, with a :class:`_LimitedDecoder` as ``_frame_decoder``),
``FrameProtocol._message_decoder.opcode``, ``FrameDecoder.parse_header()``, ``.header``
and ``.buffer``, and ``FrameProtocol._serialize_frame()`` (a text frame from bytes that
are known to be UTF-8, without decoding them to ``str`` and back).
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import IntEnum
from typing import Final, NamedTuple

from wsproto.frame_protocol import (
    CloseReason,
    FrameDecoder,
    FrameProtocol,
    MessageDecoder,
    Opcode,
    ParseFailed,
)

from .deflate import DeflateError, Inflate, deflated_bound

__all__ = [
    "CloseCode",
    "Event",
    "FrameError",
    "FrameReader",
    "Kind",
    "close_frame",
    "data_frame",
    "payload_of",
    "ping_frame",
    "pong_frame",
    "split_frames",
    "valid_close_code",
]


class CloseCode(IntEnum):
    """The close codes ringcast sends (RFC 6455 section 7.4.1, and one of its own)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    NO_STATUS = 1005
    """Never sent: stands for a close frame without a code."""
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    """Registered with IANA (RFC 6455 section 11.7): a temporary condition; here, the
    node lost Redis, which orders history channels, so its subscribers may have missed
    messages and should reconnect and resume."""
    SLOW_CONSUMER = 3008
    """In the range for libraries (3000-3999): the client fell too far behind (Centrifugo's
    code for the same thing)."""


def valid_close_code(code: int) -> bool:
    """Codes an endpoint may send (RFC 6455 section 7.4 and the IANA registry, without
    1004-1006 and 1015, which never travel in a close frame)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class Kind(IntEnum):
    """What a :class:`FrameReader` event is."""

    START = 0
    """A data message begins: its first piece arrived and passed the checks."""
    TEXT = 1
    """A complete text message (its payload is valid UTF-8)."""
    BINARY = 2
    """A complete binary message."""
    CLOSE = 8
    """The client's close frame (``code``, ``reason``); nothing after it is read."""
    PING = 9
    PONG = 10


class Event(NamedTuple):
    """One thing the client sent, as a :class:`FrameReader` reports it."""

    kind: Kind
    payload: bytes = b""
    """The message (TEXT, BINARY) or the control frame's payload (PING, PONG)."""
    code: int = CloseCode.NO_STATUS
    """CLOSE: the status code, 1005 when the frame had none."""
    reason: str = ""
    """CLOSE: the reason."""


class FrameError(Exception):
    """The client broke RFC 6455 or a limit: fail the connection with ``code``.
    ``inflating``: it failed while inflating a compressed message (RFC 7692)."""

    def __init__(self, code: int, reason: str, *, inflating: bool = False) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.inflating = inflating


_START: Final = Event(Kind.START)
_CONTROL_KINDS: Final = {Opcode.PING: Kind.PING, Opcode.PONG: Kind.PONG}


class _LimitedDecoder(FrameDecoder):
    """wsproto's frame decoder, plus the message size and frame count limits, checked
    as each data frame's header is parsed (after wsproto's own checks on it).

    A compressed message (permessage-deflate, see :mod:`.deflate`) is limited twice: on
    the wire, to what deflate can make of ``max_size`` bytes at most, and as it is
    inflated, to ``max_size`` (by the :class:`~.deflate.Inflate` extension)."""

    def __init__(self, max_size: int | None, max_frames: int, inflate: Inflate | None) -> None:
        super().__init__(client=False, extensions=[] if inflate is None else [inflate])
        self.max_size = max_size  # None: read and check, but neither keep nor limit
        self.max_frames = max_frames
        self.open = False  # a message's last frame is still to come
        self.size = 0  # its announced length so far
        self.frames = 0  # its frames so far
        self.compressed = False  # the message is (RSV1 on its first frame)

    def parse_header(self) -> bool:
        if not super().parse_header():
            return False
        header = self.header
        assert header is not None  # set by a successful parse
        opcode = header.opcode
        if opcode & 0x8 or self.max_size is None:
            return True
        if opcode is Opcode.CONTINUATION:
            if not self.open:
                return True  # wsproto's message decoder fails it next, with its reason
            size, frames = self.size + header.payload_len, self.frames + 1
        else:
            if self.open:
                return True  # likewise: a new message inside a fragmented one
            size, frames = header.payload_len, 1
            self.compressed = header.rsv.rsv1  # the extension allowed it, or failed it
        limit = deflated_bound(self.max_size) if self.compressed else self.max_size
        if size > limit:
            what = "compressed message" if self.compressed else "message"
            msg = f"{what} is at least {size} bytes, at most {limit} allowed"
            raise ParseFailed(msg, CloseReason.MESSAGE_TOO_BIG)
        if frames > self.max_frames:
            msg = f"message in more than {self.max_frames} frames"
            raise ParseFailed(msg, CloseReason.POLICY_VIOLATION)
        self.open = not header.fin
        self.size = size
        self.frames = frames
        return True


class _ServerFrames(FrameProtocol):
    """wsproto's frame protocol as a server, reading through a :class:`_LimitedDecoder`
    (and its extensions): the attributes ``FrameProtocol.__init__`` sets, without the
    decoder it would make only to be replaced (a reader is made per burst of bytes)."""

    def __init__(self, decoder: _LimitedDecoder) -> None:
        self.client = False
        self.extensions = decoder.extensions
        self._frame_decoder = decoder
        self._message_decoder = MessageDecoder()
        self._parse_more = self._parse_more_gen()
        self._outbound_opcode = None


class FrameReader:
    """The client-to-server frames of one connection, parsed by wsproto.

    :meth:`feed` takes the bytes as they arrive, in pieces of any size, and yields
    :class:`Event` values in order; it raises :exc:`FrameError` once the client broke a
    rule, after yielding what came before. After a CLOSE event nothing more is read.

    ``max_size`` is the largest message allowed, in bytes; ``None`` (the server is
    closing) reads and checks messages but neither keeps nor limits them, and yields no
    data events. ``deflate``: the client agreed on permessage-deflate, and its messages
    may come compressed (:class:`~.deflate.Inflate`); they are yielded inflated. A fresh
    reader and an :attr:`idle` one behave the same: the owner may drop an idle reader and
    make a new one for the next bytes. A reader that raised must not be fed again.
    """

    __slots__ = ("_decoder", "_inflate", "_message", "_proto", "_text")

    def __init__(self, max_size: int | None, max_frames: int, *, deflate: bool = False) -> None:
        self._inflate = Inflate(max_size) if deflate else None
        self._decoder = _LimitedDecoder(max_size, max_frames, self._inflate)
        self._proto = _ServerFrames(self._decoder)
        # The pieces of the data message in progress, UTF-8 for text; None between messages.
        self._message: bytearray | None = None
        self._text = False

    @property
    def idle(self) -> bool:
        """No frame or message in progress: dropping the reader loses nothing."""
        decoder = self._decoder
        return (
            decoder.header is None
            and not len(decoder.buffer)
            and self._proto._message_decoder.opcode is None
        )

    def discarding(self) -> FrameReader:
        """Stop keeping messages (the server is closing): the message in progress is
        dropped, and later ones are read and checked but yield nothing. Returns self."""
        self._decoder.max_size = None
        if self._inflate is not None:
            self._inflate.max_size = None
        self._message = None
        return self

    def feed(self, data: bytes) -> Iterator[Event]:
        """Read ``data``, the next bytes from the client; yield what they complete."""
        proto = self._proto
        keep = self._decoder.max_size is not None
        proto.receive_bytes(data)
        try:
            for frame in proto.received_frames():
                opcode = frame.opcode
                if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                    if keep:
                        yield from self._data(frame.payload, opcode, frame.message_finished)
                elif opcode is Opcode.CLOSE:
                    close = frame.payload
                    assert isinstance(close, tuple)  # wsproto's (code, reason)
                    yield Event(Kind.CLOSE, code=close[0], reason=close[1])
                    return
                else:
                    payload = frame.payload
                    assert isinstance(payload, bytes)
                    yield Event(_CONTROL_KINDS[opcode], payload)
        except ParseFailed as exc:
            inflating = isinstance(exc, DeflateError)
            raise FrameError(exc.code, str(exc), inflating=inflating) from None

    def _data(self, piece: object, opcode: Opcode, finished: bool) -> Iterator[Event]:
        """One piece of a data message (wsproto decoded text pieces to ``str``)."""
        data = piece.encode() if isinstance(piece, str) else piece
        assert isinstance(data, bytes)
        message = self._message
        if message is None:
            yield _START
            if finished:  # the whole message in one piece: no buffer
                yield Event(Kind.TEXT if opcode is Opcode.TEXT else Kind.BINARY, data)
                return
            self._message = bytearray(data)
            return
        message += data
        if finished:
            self._message = None
            yield Event(Kind.TEXT if opcode is Opcode.TEXT else Kind.BINARY, bytes(message))


# -- writing ----------------------------------------------------------------------------

# Server frames: unmasked, no extension, no state between calls (every frame is final).
_SERVER: Final = FrameProtocol(client=False, extensions=[])


def data_frame(payload: bytes, text: bool) -> bytes:
    """One final, unmasked data frame: TEXT (``payload`` must be UTF-8; it is not checked
    again) or BINARY."""
    return bytes(_SERVER._serialize_frame(Opcode.TEXT if text else Opcode.BINARY, payload))


def _own_frame(data: bytes, at: int) -> tuple[int, int]:
    """Where the payload of the server's own frame at ``at`` starts, and where the frame
    ends (unmasked: no key between the length and the payload)."""
    length = data[at + 1] & 0x7F
    if length == 126:
        start, length = at + 4, int.from_bytes(data[at + 2:at + 4])
    elif length == 127:
        start, length = at + 10, int.from_bytes(data[at + 2:at + 10])
    else:
        start = at + 2
    return start, start + length


def payload_of(frame: bytes) -> tuple[bytes, bool]:
    """The payload of a :func:`data_frame` and whether it is TEXT (the inverse of
    :func:`data_frame`, for the server's own frames only: unmasked, uncompressed)."""
    start, _ = _own_frame(frame, 0)
    return frame[start:], frame[0] & 0x0F == Opcode.TEXT


def split_frames(data: bytes) -> list[bytes]:
    """The server's own frames sent back to back, one by one."""
    frames = []
    at = 0
    while at < len(data):
        _, end = _own_frame(data, at)
        frames.append(data[at:end])
        at = end
    return frames


def ping_frame(payload: bytes) -> bytes:
    """A ping with ``payload`` (at most 125 bytes)."""
    return bytes(_SERVER.ping(payload))


def pong_frame(payload: bytes) -> bytes:
    """A pong echoing ``payload`` (RFC 6455 section 5.5.3)."""
    return bytes(_SERVER.pong(payload))


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with ``code`` and ``reason``, the reason cut to whole UTF-8
    characters to fit 125 bytes; :data:`CloseCode.NO_STATUS` sends none (an empty
    payload)."""
    if code == CloseCode.NO_STATUS:
        return bytes(_SERVER.close())
    return bytes(_SERVER.close(code, reason))
