"""Server-side WebSocket frame encoding (RFC 6455 section 5.2), for the fan-out path.

A server's frames are unmasked, so one encoded message is the same bytes for every
subscriber: the runtime frames a published message once and hands that buffer to every
send. That is why this module exists beside wsproto, whose serializer works per
connection and copies the payload twice.

Every frame is a single FIN frame with RSV bits clear (no extension is ever negotiated).
The output is byte-for-byte what ``wsproto.frame_protocol.FrameProtocol(client=False,
extensions=[])`` produces; ``tests/unit/protocol/test_framing.py`` checks that.

The header uses the shortest length encoding, as section 5.2 requires: 7 bits up to 125,
then 16 bits up to 65535, then 64 bits.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

__all__ = [
    "BINARY",
    "CLOSE",
    "CONTINUATION",
    "PING",
    "PONG",
    "TEXT",
    "encode_frame",
    "encode_frames",
    "frame_header",
]

# Opcodes, RFC 6455 section 5.2 (section 11.8 is the registry).
CONTINUATION: Final = 0x0
TEXT: Final = 0x1
BINARY: Final = 0x2
CLOSE: Final = 0x8
PING: Final = 0x9
PONG: Final = 0xA

_FIN: Final = 0x80
_MAX_CONTROL_PAYLOAD: Final = 125
_pack_short = struct.Struct("!BB").pack
_pack_medium = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack


def frame_header(opcode: int, length: int) -> bytes:
    """Return the 2, 4 or 10 header bytes of an unmasked FIN frame carrying ``length`` bytes.

    Useful to send header and payload as two iovecs without joining them. Raises
    :exc:`ValueError` for an opcode outside 0-15, a control frame (opcode 8-15) longer
    than 125 bytes, or a negative length.
    """
    if not 0 <= opcode <= 0xF:
        msg = f"opcode is {opcode}, expected 0 to 15"
        raise ValueError(msg)
    if length <= _MAX_CONTROL_PAYLOAD:
        if length < 0:
            msg = f"payload length is {length}, expected at least 0"
            raise ValueError(msg)
        return _pack_short(_FIN | opcode, length)
    if opcode & 0x8:
        msg = f"control frame payload is {length} bytes, at most 125 allowed"
        raise ValueError(msg)
    if length <= 0xFFFF:
        return _pack_medium(_FIN | opcode, 126, length)
    return _pack_long(_FIN | opcode, 127, length)


def encode_frame(opcode: int, payload: bytes | bytearray | memoryview) -> bytes:
    """Return one complete unmasked FIN frame: header then ``payload``.

    ``opcode`` is :data:`TEXT` or :data:`BINARY` for messages (a text payload must
    already be UTF-8; it is not checked here). Raises :exc:`ValueError` as
    :func:`frame_header` does.
    """
    return frame_header(opcode, len(payload)) + payload


def encode_frames(frames: Iterable[tuple[int, bytes | bytearray | memoryview]]) -> bytes:
    """Return several frames, each ``(opcode, payload)``, encoded back to back in one buffer.

    The result equals joining :func:`encode_frame` of each, built with a single join so
    a batch of messages costs one copy of the payloads.
    """
    parts: list[bytes | bytearray | memoryview] = []
    append = parts.append
    for opcode, payload in frames:
        append(frame_header(opcode, len(payload)))
        append(payload)
    return b"".join(parts)
