"""Reading client frames, RFC 6455 sections 5 to 8: a small sans-I/O parser.

wsproto's :class:`~wsproto.connection.Connection` costs about 1.5 KB per connection
before a single frame arrives (an event deque, a frame decoder with its buffer, a message
decoder, a generator), which a fan-out server holding many idle subscribers cannot
afford. So wsproto only does the opening handshake, and after the 101 a
:class:`FrameReader` reads the client's frames. It holds state only while a frame or a
fragmented message is in progress; the WebSocket phase drops it when :attr:`idle`.

It enforces what wsproto enforced, in wsproto's terms (the close reasons below are its
messages), and fails with :exc:`FrameError`:

- 1002, section 5.2: reserved opcodes (3-7, 0xB-0xF), RSV bits (no extension is ever
  negotiated), a payload length not in its shortest encoding, a 64-bit length with the
  most significant bit set.
- 1002, section 5.3: an unmasked frame (a client must mask every frame).
- 1002, section 5.4: a CONTINUATION frame outside a fragmented message, or a TEXT or
  BINARY frame inside one.
- 1002, section 5.5: a fragmented control frame, or one with more than 125 bytes.
- 1002, sections 5.5.1 and 7.4: a close frame with a 1-byte payload, or a status code an
  endpoint may not send (below 1000, 1004-1006, 1014-2999, 1015, 5000 and up; 1012 and
  1013 pass, as in wsproto); 1007 for a reason that is not UTF-8.
- 1007, section 8.1: a text message that is not UTF-8, detected at the first invalid
  byte, even in the middle of a frame (the same incremental decoding as wsproto's, with
  only an unfinished character carried between pieces).
- 1009, section 10.4: a message whose announced length (the sum of its frames' payload
  lengths) exceeds the limit, decided on the frame header, before any of its payload
  is read.

The checks on one frame header run in that order (1002 before 1009). A data message's
:data:`START` event comes with the first piece of its payload, after that piece passed
the UTF-8 check (with the header, for an empty frame): when wsproto reported a message's
first frame, so a server's own checks on it (1008) still come after 1007.
"""

from __future__ import annotations

from codecs import utf_8_decode
from collections.abc import Iterator
from typing import Final

from .framing import BINARY, CLOSE, CONTINUATION, PONG, TEXT

__all__ = [
    "START",
    "FrameError",
    "FrameEvent",
    "FrameReader",
    "unmask",
]

START: Final = 0x10
"""Event kind (not an opcode): a data message begins (its first payload bytes, or its
first frame's header when that frame is empty, arrived and passed the checks)."""

FrameEvent = tuple[int, bytes]
"""``(kind, payload)``. ``kind`` is :data:`START` (payload empty), :data:`TEXT` or
:data:`BINARY` (a complete message: the unmasked payloads of its frames joined, text
valid UTF-8), :data:`PING`, :data:`PONG` or :data:`CLOSE` (the unmasked payload; a close
payload is empty or a valid status code and UTF-8 reason)."""

PROTOCOL_ERROR: Final = 1002
INVALID_DATA: Final = 1007
MESSAGE_TOO_BIG: Final = 1009

_MAX_CONTROL: Final = 125
_INT_MASK_MAX: Final = 1024  # above this, unmask() uses translate tables (faster there)
_XOR_TABLES: Final = [bytes(a ^ b for a in range(256)) for b in range(256)]
_START_EVENT: Final = (START, b"")
_OPCODE_NAMES: Final = {CONTINUATION: "CONTINUATION", TEXT: "TEXT", BINARY: "BINARY"}
_from_bytes = int.from_bytes


class FrameError(Exception):
    """The client broke RFC 6455 (or the size limit): fail the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def unmask(data: bytes, mask: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated (RFC 6455 section 5.3).

    Small payloads go through one big-integer XOR (websockets' pure-Python method);
    large ones through four ``bytes.translate`` calls, one per mask byte (wsproto's),
    which copy at memory speed where the integer conversions do not.
    """
    n = len(data)
    if n <= _INT_MASK_MAX:
        key = _from_bytes((mask * ((n >> 2) + 1))[:n], "little")
        return (_from_bytes(data, "little") ^ key).to_bytes(n, "little")
    out = bytearray(data)
    out[0::4] = out[0::4].translate(_XOR_TABLES[mask[0]])
    out[1::4] = out[1::4].translate(_XOR_TABLES[mask[1]])
    out[2::4] = out[2::4].translate(_XOR_TABLES[mask[2]])
    out[3::4] = out[3::4].translate(_XOR_TABLES[mask[3]])
    return bytes(out)


def close_code(payload: bytes) -> int:
    """The status code of a validated close payload, 1005 ("no status") when empty."""
    return _from_bytes(payload[:2], "big") if payload else 1005


def _check_close(payload: bytes) -> None:
    """RFC 6455 sections 5.5.1 and 7.4 on a close frame's payload, as wsproto checks it."""
    if not payload:
        return
    if len(payload) == 1:
        raise FrameError(PROTOCOL_ERROR, "CLOSE with 1 byte payload")
    code = _from_bytes(payload[:2], "big")
    if code < 1000 or code > 4999:
        raise FrameError(PROTOCOL_ERROR, "CLOSE with invalid code")
    if code in (1005, 1006, 1015):
        raise FrameError(PROTOCOL_ERROR, "remote CLOSE with local-only reason")
    if code < 3000 and not (code <= 1003 or 1007 <= code <= 1013):
        raise FrameError(PROTOCOL_ERROR, "CLOSE with unknown reserved code")
    try:
        payload[2:].decode()
    except UnicodeDecodeError as exc:
        raise FrameError(INVALID_DATA, f"Error decoding CLOSE reason: {exc}") from None


class FrameReader:
    """The client-to-server frame parser of one connection.

    :meth:`feed` takes the bytes as they arrive, in pieces of any size, and yields
    :data:`FrameEvent` tuples in order. Data payloads are unmasked and checked as they
    arrive, and joined once, when the message is complete. After a close frame nothing
    more is read.

    A fresh reader and an :attr:`idle` one are the same: the owner may drop an idle
    reader and make a new one for the next bytes. A reader that raised, or whose
    :meth:`feed` was not iterated to the end, must not be fed again.
    """

    __slots__ = (
        "_control",
        "_fin",
        "_head",
        "_left",
        "_mask",
        "_message",
        "_opcode",
        "_parts",
        "_size",
        "_tail",
    )

    def __init__(self) -> None:
        self._head = b""  # the start of a frame header split across pieces
        # The frame whose payload is being read (-1 between frames): its opcode until the
        # first piece of a message arrives, then CONTINUATION.
        self._opcode = -1
        self._fin = False  # ... and its FIN bit
        self._left = 0  # ... and how many of its payload bytes are still to come
        self._mask = b""  # ... and its masking key, rotated to the next payload byte
        self._control = b""  # the masked payload of a control frame so far
        self._message = 0  # TEXT or BINARY while a data message is in progress, else 0
        self._size = 0  # the announced length of that message so far
        self._parts: list[bytes] | None = None  # its unmasked payload so far, if kept
        self._tail = b""  # an unfinished UTF-8 character at the end of its text so far

    @property
    def idle(self) -> bool:
        """No frame or message is in progress: nothing is held but the object."""
        return self._opcode < 0 and not self._message and not self._head

    def drop_message(self) -> None:
        """Forget the payload of the message in progress (the server is closing); its
        frames are still read, checked and then discarded."""
        self._parts = None

    def feed(self, data: bytes, limit: int, *, keep: bool = True) -> Iterator[FrameEvent]:
        """Read ``data``, the next bytes from the client; yield what they complete.

        ``limit`` is the largest message allowed, in bytes. With ``keep=False`` (the
        server is closing), data messages are checked but neither kept nor limited and
        yield nothing. Raises :exc:`FrameError` when the client broke a rule, after
        yielding what came before.
        """
        if self._head:
            data = self._head + data
            self._head = b""
        pos = 0
        end = len(data)
        opcode = self._opcode
        fin = self._fin
        left = self._left
        mask = self._mask
        while True:
            if opcode < 0:  # a frame header, section 5.2
                if end - pos < 2:
                    self._head = data[pos:]
                    break
                first = data[pos]
                second = data[pos + 1]
                opcode = first & 0x0F
                fin = first >= 0x80
                length = second & 0x7F
                if opcode & 0x08:
                    if opcode > PONG:
                        raise FrameError(PROTOCOL_ERROR, f"Invalid opcode {opcode:#x}")
                    if not fin:
                        raise FrameError(
                            PROTOCOL_ERROR, "Invalid attempt to fragment control frame"
                        )
                    if length > _MAX_CONTROL:
                        raise FrameError(PROTOCOL_ERROR, "Control frame with payload len > 125")
                elif opcode > BINARY:
                    raise FrameError(PROTOCOL_ERROR, f"Invalid opcode {opcode:#x}")
                start = pos + 2
                if length == 126:
                    if end - start < 2:
                        self._head = data[pos:]
                        opcode = -1
                        break
                    length = _from_bytes(data[start : start + 2], "big")
                    if length <= _MAX_CONTROL:
                        raise FrameError(
                            PROTOCOL_ERROR,
                            "Payload length used 2 bytes when 1 would have sufficed",
                        )
                    start += 2
                elif length == 127:
                    if end - start < 8:
                        self._head = data[pos:]
                        opcode = -1
                        break
                    length = _from_bytes(data[start : start + 8], "big")
                    if length <= 0xFFFF:
                        raise FrameError(
                            PROTOCOL_ERROR,
                            "Payload length used 8 bytes when 2 would have sufficed",
                        )
                    if length >> 63:
                        raise FrameError(PROTOCOL_ERROR, "8-byte payload length with non-zero MSB")
                    start += 8
                if first & 0x70:
                    raise FrameError(PROTOCOL_ERROR, "Reserved bit set unexpectedly")
                if not second & 0x80:
                    raise FrameError(PROTOCOL_ERROR, "server received unexpected unmasked frame")
                if end - start < 4:
                    self._head = data[pos:]
                    opcode = -1
                    break
                pos = start + 4
                mask = data[start:pos]
                left = length
                if not opcode & 0x08:  # a data frame: section 5.4, then the size limit
                    if opcode == CONTINUATION:
                        if not self._message:
                            raise FrameError(PROTOCOL_ERROR, "unexpected CONTINUATION")
                        size = self._size + length
                    else:
                        if self._message:
                            name = _OPCODE_NAMES[opcode]
                            raise FrameError(
                                PROTOCOL_ERROR,
                                f"expected CONTINUATION, got <Opcode.{name}: {opcode}>",
                            )
                        self._message = opcode
                        size = length
                    if keep and size > limit:
                        raise FrameError(
                            MESSAGE_TOO_BIG,
                            f"message is at least {size} bytes, at most {limit} allowed",
                        )
                    self._size = size

            if opcode & 0x08:  # a control frame: all of its payload at once, section 5.5
                if end - pos < left:
                    self._control += data[pos:]
                    left -= end - pos
                    break
                payload = data[pos : pos + left]
                pos += left
                if self._control:
                    payload = self._control + payload
                    self._control = b""
                payload = unmask(payload, mask)
                if opcode == CLOSE:
                    _check_close(payload)
                    yield (CLOSE, payload)
                    return  # nothing after a close frame is read
                yield (opcode, payload)
                opcode = -1
                continue

            # The payload of a data frame, as much of it as there is.
            take = left if left <= end - pos else end - pos
            if take:
                chunk = unmask(data[pos : pos + take], mask)
                pos += take
                left -= take
                if left and take & 3:
                    mask = mask[take & 3 :] + mask[: take & 3]
            elif left:
                break  # the header alone so far
            else:
                chunk = b""
            done = fin and not left  # the message is complete
            if self._message == TEXT:
                self._check_text(chunk, done)
            if opcode:  # the first piece of the first frame (an empty frame: its header)
                if keep:
                    yield _START_EVENT
                opcode = CONTINUATION
            if done:
                message = self._message
                parts = self._parts
                self._message = 0
                self._size = 0
                self._parts = None
                opcode = -1
                if keep:
                    if parts is not None:
                        parts.append(chunk)
                        chunk = b"".join(parts)
                    yield (message, chunk)
                continue
            if keep and take:
                if self._parts is None:
                    self._parts = [chunk]
                else:
                    self._parts.append(chunk)
            if left:
                break
            opcode = -1  # a frame of an unfinished message is complete
        self._opcode = opcode
        self._fin = fin
        self._left = left
        self._mask = mask

    def _check_text(self, chunk: bytes, final: bool) -> None:
        """Validate the next piece of a text message, carrying an unfinished character."""
        tail = self._tail
        if tail:
            chunk = tail + chunk
        elif chunk.isascii():
            return
        try:
            consumed = utf_8_decode(chunk, "strict", final)[1]
        except UnicodeDecodeError as exc:
            raise FrameError(INVALID_DATA, str(exc)) from None
        self._tail = chunk[consumed:]
