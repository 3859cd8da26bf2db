"""Enforcing the message size limit from frame headers, before any payload arrives.

wsproto hands a data frame's payload over piece by piece as it arrives and never looks
at the length the header announces. Left alone, a client announcing a 2**62-byte frame
would be read until the limit is crossed, one receive at a time. Like python-websockets
(which checks the length field against ``max_size`` before reading the payload), ringcast
decides on the header: a frame whose announced length takes its message over the limit
fails the connection with 1009 at once.

:class:`MessageSizeGuard` walks the same inbound byte stream as wsproto, but only frame
headers: payloads are skipped by arithmetic, so the cost is a few operations per frame,
never per byte. It does not validate anything else (reserved opcodes, masks, length
encodings); wsproto reports those, since the guard only ever lets wsproto see the bytes
before the offending frame.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MessageSizeGuard"]

_MAX_HEADER: Final = 14  # 2 + 8 (64-bit length) + 4 (mask)


class MessageSizeGuard:
    """Find the first frame header that takes a WebSocket message over ``limit`` bytes.

    The size of a message is the sum of the announced payload lengths of its data frames
    (the first TEXT/BINARY frame and its CONTINUATION frames); control frames, which may
    be interleaved, do not count. Once :meth:`feed` has reported a frame, the guard has
    done its job and must not be fed again.
    """

    __slots__ = ("_header", "_limit", "_size", "_skip")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._header = b""  # the start of a frame header split across receives
        self._skip = 0  # payload bytes of the current frame still to come
        self._size = 0  # announced bytes of the current message so far

    @property
    def size(self) -> int:
        """Announced bytes of the current (or the offending) message so far."""
        return self._size

    def feed(self, data: bytes) -> int | None:
        """Take the next bytes of the stream; return where the offending frame starts.

        The result is the offset in ``data`` of the first byte of the frame header that
        crossed the limit (0 when that header started in an earlier ``data``), or
        ``None`` when every frame seen so far is within the limit.
        """
        pos = 0
        end = len(data)
        while True:
            if self._skip:
                if end - pos <= self._skip:
                    self._skip -= end - pos
                    return None
                pos += self._skip
                self._skip = 0
            if pos == end:
                return None
            carried = len(self._header)
            header = data[pos : pos + _MAX_HEADER]
            if carried:
                header = self._header + header
            if len(header) < 2:
                self._header = header
                return None
            second = header[1]
            length = second & 0x7F
            needed = 2 + (4 if second & 0x80 else 0)
            if length == 126:
                needed += 2
            elif length == 127:
                needed += 8
            if len(header) < needed:
                self._header = header
                return None
            if length == 126:
                length = int.from_bytes(header[2:4], "big")
            elif length == 127:
                length = int.from_bytes(header[2:10], "big")
            opcode = header[0] & 0x0F
            if not opcode & 0x08:  # a data frame: TEXT, BINARY or CONTINUATION
                self._size = self._size + length if opcode == 0 else length
                if self._size > self._limit:
                    return max(pos - carried, 0)
            self._header = b""
            pos += needed - carried
            self._skip = length
