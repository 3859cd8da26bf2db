"""permessage-deflate (RFC 7692) the way a fan-out server can afford it.

A server that compresses per connection pays a zlib stream per subscriber (a deflate
context with a 32 KiB window is over 256 KiB) and compresses every message once per
subscriber. ringcast frames a message once for all its subscribers; it compresses once
too, which RFC 7692 allows when each message stands alone:

- **Negotiation** (section 7.1, :func:`negotiate`). ringcast accepts the first
  permessage-deflate offer it can serve and always answers ``server_no_context_takeover``
  (each message compressed on its own: the same bytes serve every subscriber) and
  ``client_no_context_takeover`` (each message from the client stands alone too, so no
  inflate state outlives a message). Both may be answered whether offered or not
  (sections 7.1.1.1 and 7.1.1.2). An offer that limits the server's window
  (``server_max_window_bits=N``) gets its messages compressed with that window, 9 to 15;
  8 cannot be served (zlib's raw deflate starts at 9) and such an offer is declined, as
  is one with an unknown, duplicate or invalid parameter (section 7.1: "MUST decline").
  ``client_max_window_bits`` needs no answer: ringcast inflates with the largest window,
  which reads any smaller one.
- **Reading** (section 7.2.2, :class:`Inflate`): wsproto's frame decoder calls this
  extension for each frame. RSV1 on a message's first frame marks it compressed; RSV1
  on a control or continuation frame is a protocol error. The message is inflated as its
  payload arrives, never past ``max_size`` bytes: a deflate bomb ends with 1009 once the
  limit is passed, after at most the limit was produced. The inflater exists from a
  compressed message's first frame to its last.
- **Writing** (section 7.2.1, :class:`Compressor`): a published message's frame, made
  once, is compressed once per window size in use (browsers all use the default, 15)
  at the end of the loop iteration, by one zlib stream per window size that is fully
  flushed after each message, so each compressed message stands alone
  (``server_no_context_takeover``). A message under ``threshold`` bytes, or one deflate
  would not shrink, goes uncompressed (RSV1 clear; RFC 7692 section 6 lets a sender
  compress any message or not).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Final

from wsproto.extensions import Extension
from wsproto.frame_protocol import (
    CloseReason,
    FrameDecoder,
    FrameProtocol,
    Opcode,
    ParseFailed,
    RsvBits,
)

__all__ = [
    "EXTENSION",
    "Agreement",
    "Compressor",
    "DeflateError",
    "Inflate",
    "deflated_bound",
    "negotiate",
]

EXTENSION: Final = "permessage-deflate"
_TAIL: Final = b"\x00\x00\xff\xff"  # what a sender removes from a message's end (7.2.1)
_NO_RSV: Final = RsvBits(False, False, False)
_RSV1: Final = RsvBits(True, False, False)
MIN_WINDOW_BITS: Final = 9  # zlib's smallest raw deflate window
MAX_WINDOW_BITS: Final = 15


# -- negotiation (RFC 7692 section 7.1) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Agreement:
    """An accepted offer: the window ringcast compresses this client's messages with,
    and the ``Sec-WebSocket-Extensions`` value of the 101."""

    window_bits: int
    response: str


# RFC 6455 section 9.1: extension = token *( ";" param ), param = token [ "=" value ],
# where a value is a token or a quoted-string (a window size is digits either way).
_TOKEN: Final = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM: Final = re.compile(
    rf"\s*({_TOKEN})\s*(?:=\s*(?:({_TOKEN})|\"([^\"\\]*)\"))?\s*")
_BITS: Final = re.compile(r"[1-9][0-9]?")


def negotiate(offers: str) -> Agreement | None:
    """The agreement for the first permessage-deflate offer in ``offers`` (the
    ``Sec-WebSocket-Extensions`` values of a handshake, joined by commas) that ringcast
    can serve; None to decline them all (the 101 then names no extension)."""
    for offer in offers.split(","):
        name, _, params = offer.partition(";")
        if name.strip().lower() != EXTENSION:
            continue
        agreement = _accept(params)
        if agreement is not None:
            return agreement
    return None


def _accept(params: str) -> Agreement | None:
    """An offer's parameters (``a; b=1``) accepted, or None (declined)."""
    seen: dict[str, str | None] = {}
    for raw in params.split(";") if params.strip() else ():
        m = _PARAM.fullmatch(raw)
        if m is None:
            return None
        key = m.group(1).lower()
        value = m.group(2) if m.group(2) is not None else m.group(3)
        if key in seen:
            return None  # a parameter twice
        seen[key] = value
    window = MAX_WINDOW_BITS
    for key, value in seen.items():
        if key in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                return None
        elif key == "server_max_window_bits":
            bits = _window_bits(value)
            if bits is None or bits < MIN_WINDOW_BITS:
                return None  # invalid, or 8: not one zlib can compress with
            window = bits
        elif key == "client_max_window_bits":
            if value is not None and _window_bits(value) is None:
                return None
        else:
            return None  # unknown to RFC 7692
    response = f"{EXTENSION}; server_no_context_takeover; client_no_context_takeover"
    if "server_max_window_bits" in seen:
        response += f"; server_max_window_bits={window}"
    return Agreement(window, response)


def _window_bits(value: str | None) -> int | None:
    """8 to 15 (RFC 7692 section 7.1.2), without leading zeros; None otherwise."""
    if value is None or not _BITS.fullmatch(value):
        return None
    bits = int(value)
    return bits if 8 <= bits <= MAX_WINDOW_BITS else None


# -- reading (RFC 7692 section 7.2.2) -------------------------------------------------------


class DeflateError(ParseFailed):
    """A compressed message that does not inflate (1007), or that inflates past the
    limit (1009): wsproto's ParseFailed, with a reason of its own."""


def deflated_bound(size: int) -> int:
    """The most bytes deflate can make of ``size`` bytes (stored blocks, zlib's
    ``deflateBound``, rounded up): a compressed message longer than this on the wire
    cannot inflate to ``size`` or less."""
    return size + (size >> 10) + 64


class Inflate(Extension):
    """wsproto's hooks for a client's compressed messages: each inflated on its own (the
    agreement says ``client_no_context_takeover``) into at most ``max_size`` bytes.

    ``max_size`` None: the server is closing and keeps nothing; a compressed message's
    payload is then dropped unread (nothing checks a message that is thrown away).
    """

    name = EXTENSION

    def __init__(self, max_size: int | None) -> None:
        self.max_size = max_size
        self._inflater: zlib._Decompress | None = None  # while a compressed message lasts
        self._size = 0  # inflated bytes of that message so far
        self._data = False  # the frame being read is a data frame

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool:
        return False  # a server offers nothing

    def frame_inbound_header(self, proto: FrameDecoder | FrameProtocol, opcode: Opcode,
                             rsv: RsvBits, payload_length: int) -> CloseReason | RsvBits:
        if opcode.iscontrol():  # may come between a message's frames: leave it be
            self._data = False
            return CloseReason.PROTOCOL_ERROR if rsv.rsv1 else _NO_RSV
        self._data = True
        if opcode is Opcode.CONTINUATION:
            return CloseReason.PROTOCOL_ERROR if rsv.rsv1 else _RSV1
        # A message's first frame: RSV1 says whether it is compressed.
        self._inflater = zlib.decompressobj(-MAX_WINDOW_BITS) if rsv.rsv1 else None
        self._size = 0
        return _RSV1

    def frame_inbound_payload_data(self, proto: FrameDecoder | FrameProtocol,
                                   data: bytes) -> bytes:
        if not self._data or self._inflater is None:
            return data
        return self._inflate(data)

    def frame_inbound_complete(self, proto: FrameDecoder | FrameProtocol,
                               fin: bool) -> bytes | None:
        if not self._data or self._inflater is None or not fin:
            return None
        out = self._inflate(_TAIL)
        self._inflater = None
        return out

    def _inflate(self, data: bytes) -> bytes:
        """Raises DeflateError (wsproto lets it through as the ParseFailed it is)."""
        inflater = self._inflater
        assert inflater is not None
        if self.max_size is None:
            return b""
        room = self.max_size - self._size
        try:
            # At most one byte past the limit: enough to know it was passed.
            out = inflater.decompress(data, room + 1)
        except zlib.error as exc:
            msg = f"compressed message does not inflate ({exc})"
            raise DeflateError(msg, CloseReason.INVALID_FRAME_PAYLOAD_DATA) from None
        if len(out) > room:
            msg = f"message inflates past {self.max_size} bytes, the most allowed"
            raise DeflateError(msg, CloseReason.MESSAGE_TOO_BIG)
        self._size += len(out)
        return out


# -- writing (RFC 7692 section 7.2.1) -------------------------------------------------------


class _Compressed(Extension):
    """Marks a data frame compressed (RSV1) when wsproto writes it; the payload it is
    given is compressed already."""

    name = EXTENSION

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool:
        return False

    def frame_outbound(self, proto: FrameDecoder | FrameProtocol, opcode: Opcode,
                       rsv: RsvBits, data: bytes, fin: bool) -> tuple[RsvBits, bytes]:
        return _RSV1, data


_WRITER: Final = FrameProtocol(client=False, extensions=[_Compressed()])


def _payload(frame: bytes) -> tuple[Opcode, bytes]:
    """The opcode and payload of one final, unmasked frame as ``frames.data_frame``
    writes it (RFC 6455 section 5.2)."""
    short = frame[1] & 0x7F
    start = 2 if short < 126 else 4 if short == 126 else 10
    return Opcode(frame[0] & 0x0F), frame[start:]


class Compressor:
    """Compresses published frames for subscribers that agreed on permessage-deflate.

    One zlib stream per window size, full-flushed after every message, so each message
    is compressed on its own (its agreement's ``server_no_context_takeover``) without the
    cost of a new stream (about 256 KiB to set up) per message. ``level`` is zlib's (1
    fastest, 9 smallest); messages under ``threshold`` bytes are not compressed. Counts
    what it did in ``compressed``, ``bytes_in`` and ``bytes_out`` (payload bytes of the
    messages it compressed, before and after).
    """

    def __init__(self, level: int, threshold: int) -> None:
        self.level = level
        self.threshold = threshold
        self._streams: dict[int, zlib._Compress] = {}
        self.compressed = 0
        self.bytes_in = 0
        self.bytes_out = 0

    def configure(self, level: int, threshold: int) -> None:
        """Compress with ``level`` and ``threshold`` from now on (a reload)."""
        if level != self.level:
            self._streams.clear()
            self.level = level
        self.threshold = threshold

    def frame(self, frame: bytes, window_bits: int) -> bytes:
        """``frame`` (one data frame, as ``frames.data_frame`` writes it) for a subscriber
        that compresses with ``window_bits``: compressed, or itself when it is short or
        deflate would not shrink it."""
        opcode, payload = _payload(frame)
        if len(payload) < self.threshold:
            return frame
        stream = self._streams.get(window_bits)
        if stream is None:
            stream = self._streams[window_bits] = zlib.compressobj(
                self.level, zlib.DEFLATED, -window_bits)
        data = stream.compress(payload) + stream.flush(zlib.Z_FULL_FLUSH)
        data = data[:-len(_TAIL)]  # a full flush ends with the tail (7.2.1)
        if len(data) >= len(payload):
            return frame
        self.compressed += 1
        self.bytes_in += len(payload)
        self.bytes_out += len(data)
        return bytes(_WRITER._serialize_frame(opcode, data))
