"""The ``ringcast.v1`` WebSocket client of a resume storm, over asyncio: the upgrade
(asking for the subprotocol), masked frames out (`mask_frame`, `command`), unmasked
frames in (`V1Socket`; no permessage-deflate), and the RST that ends a connection as a
failed network does (`V1Socket.reset`). What a connection does with its messages is its
subclass's (`ringcast.loadtest.resume_connections`).

Its own upgrade rather than `ringcast.loadtest.handshake`: this one must ask for
``ringcast.v1`` and refuse a 101 that does not select it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import json
import os
import socket
import struct
import time
from typing import Any

from ringcast.loadtest.handshake import MAX_HANDSHAKE, accept_key
from ringcast.loadtest.target import Target

__all__ = ["SUBPROTOCOL", "ConnectFailed", "V1Socket", "command", "mask_frame", "reason_of"]

SUBPROTOCOL = b"ringcast.v1"
_LINGER_RST = struct.pack("ii", 1, 0)
_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0, 1, 2, 8, 9, 10


def mask_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame (RFC 6455 section 5.2): masked, as a client's must be."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    if not n:
        return head + key
    # XOR of two big integers: one C loop instead of a Python one per byte.
    mask = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")
    return head + key + masked


def command(obj: dict[str, Any]) -> bytes:
    """A ringcast.v1 command: ``obj`` as one compact JSON text frame."""
    return mask_frame(_OP_TEXT, json.dumps(obj, separators=(",", ":")).encode())


class ConnectFailed(Exception):
    """A connection did not open; the message is the reason attempts are counted under."""


def reason_of(exc: BaseException) -> str:
    """What a failure is counted under: the errno's name for an OSError, else its text."""
    if isinstance(exc, OSError) and exc.errno:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return str(exc) or type(exc).__name__


class V1Socket(asyncio.Protocol):
    """One ``ringcast.v1`` WebSocket: the upgrade, then frames. `opened` resolves at the
    101 (or fails with `ConnectFailed`); a subclass takes each text message (`on_text`) and
    the end (`on_end`). Pings are answered; a close from the server is echoed and noted."""

    def __init__(self, target: Target, path: str) -> None:
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A connect given up on (timed out, cancelled) may fail after nobody awaits it:
        # retrieve every failure, so that asyncio does not log it as never retrieved.
        self.opened.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.transport: asyncio.Transport | None = None
        key = base64.b64encode(os.urandom(16))
        self._accept = accept_key(key)
        self._request = (
            b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Protocol: %s\r\nUser-Agent: ringcast-loadtest\r\n\r\n"
        ) % (path.encode(), target.host_header.encode(), key, SUBPROTOCOL)
        self._head = b""
        self._open = False
        self._dead = False                  # reset by us, or ended: ignore what follows
        self._buf = b""                     # an incomplete frame
        self._frag: list[bytes] | None = None
        self._frag_op = 0
        self.end_reason: str | None = None  # why the server ended it, when it did

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = self.end_reason or (reason_of(exc) if exc else "closed by the server")
        if not self.opened.done():
            self.opened.set_exception(ConnectFailed(f"{reason} during the handshake"))
        self._dead = True
        self.on_end(reason)

    def data_received(self, data: bytes) -> None:
        if self._dead:
            return
        if not self._open:
            data = self._handshake(data)
            if not data:
                return
        buf = self._buf + data if self._buf else data
        pos = self.frames(buf, time.monotonic())
        self._buf = buf[pos:] if pos < len(buf) and not self._dead else b""

    def frames(self, buf: bytes, now: float) -> int:
        """Take the whole frames at the start of ``buf``; return where the rest (an
        incomplete frame) starts."""
        pos = 0
        while not self._dead:
            end = self.frame_at(buf, pos, now)
            if end < 0:
                break
            pos = end
        return pos

    def frame_at(self, buf: bytes, pos: int, now: float) -> int:
        """Take the frame at ``pos``, of any kind: the position after it, -1 while it is
        incomplete (or the connection was just reset for it)."""
        n = len(buf)
        if n - pos < 2:
            return -1
        b0, b1 = buf[pos], buf[pos + 1]
        if b1 & 0x80 or b0 & 0x70:
            self.protocol_error("masked server frame" if b1 & 0x80 else "reserved bits set")
            return -1
        length, start = b1, pos + 2
        if length >= 126:                   # a 2- or 8-byte length follows
            start += 2 if length == 126 else 8
            if n < start:
                return -1
            length = int.from_bytes(buf[pos + 2 : start], "big")
            if length > 1 << 30:
                self.protocol_error("frame over 1 GiB")
                return -1
        end = start + length
        if end > n:
            return -1
        if b0 == 0x81 and self._frag is None:      # a whole text message
            self.on_text(buf[start:end], now)
        else:
            self._frame(b0 & 0x0F, bool(b0 & 0x80), buf[start:end], now)
        return end

    def _handshake(self, data: bytes) -> bytes:
        """Take the answer's bytes: what follows a valid 101 (b"" until then)."""
        head = self._head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > MAX_HANDSHAKE:
                self._fail("answer head too long")
            self._head = head
            return b""
        self._head = b""
        lines = head[:end].split(b"\r\n")
        status = lines[0].split(b" ", 2)
        if len(status) < 2 or not status[0].startswith(b"HTTP/1."):
            self._fail("not an HTTP answer")
            return b""
        if status[1] != b"101":
            self._fail(f"HTTP {status[1].decode(errors='replace')}")
            return b""
        headers: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())

        def tokens(name: bytes) -> set[bytes]:
            return {t.strip().lower() for v in headers.get(name, []) for t in v.split(b",")}

        if tokens(b"upgrade") != {b"websocket"} or b"upgrade" not in tokens(b"connection"):
            self._fail("101 without Upgrade: websocket")
        elif headers.get(b"sec-websocket-accept") != [self._accept]:
            self._fail("bad Sec-WebSocket-Accept")
        elif tokens(b"sec-websocket-extensions") - {b""}:
            self._fail("extension not asked for")
        elif headers.get(b"sec-websocket-protocol") != [SUBPROTOCOL]:
            self._fail("ringcast.v1 not selected (the server does not speak it)")
        else:
            self._open = True
            if not self.opened.done():
                self.opened.set_result(None)
            return head[end + 4 :]
        return b""

    def _fail(self, reason: str) -> None:
        self.end_reason = reason
        if not self.opened.done():
            self.opened.set_exception(ConnectFailed(reason))
        self.reset()

    def _frame(self, op: int, fin: bool, payload: bytes, now: float) -> None:
        """Every frame but a whole text message."""
        if op == _OP_PING:
            self.send(mask_frame(_OP_PONG, payload))
        elif op == _OP_PONG:
            pass
        elif op == _OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            text = payload[2:].decode(errors="replace")
            self.end_reason = f"close {code}" + (f" ({text})" if text else "")
            self.send(mask_frame(_OP_CLOSE, payload[:2]))
            self._dead = True
            if self.transport is not None:
                self.transport.close()
        elif op in (_OP_TEXT, _OP_BINARY):
            if self._frag is not None:
                self.protocol_error("data frame inside a fragmented message")
            elif fin:
                self.protocol_error("binary message (ringcast.v1 sends text)")
            else:
                self._frag, self._frag_op = [payload], op
        elif op == _OP_CONT:
            if self._frag is None:
                self.protocol_error("continuation frame without a message")
                return
            self._frag.append(payload)
            if fin:
                message, self._frag = b"".join(self._frag), None
                if self._frag_op == _OP_TEXT:
                    self.on_text(message, now)
                else:
                    self.protocol_error("binary message (ringcast.v1 sends text)")
        else:
            self.protocol_error("reserved opcode")

    def send(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def reset(self) -> None:
        """End the connection as a network failure does: an RST, no close frame."""
        self._dead = True
        t = self.transport
        if t is None:
            return
        sock = t.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        t.abort()

    def protocol_error(self, what: str) -> None:
        """A frame no server may send: counted by the subclass, then the connection reset."""
        self.end_reason = f"protocol error: {what}"
        self.reset()

    def on_text(self, payload: bytes, now: float) -> None:
        raise NotImplementedError

    def on_end(self, reason: str) -> None:
        raise NotImplementedError

