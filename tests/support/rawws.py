"""WebSocket bytes by hand, for every suite: frames (any frame, valid or not), the opening
handshake, close payloads, and reading frames out of a byte stream.

A client library refuses to say most of what the tests must say (an unmasked frame, RSV
bits without an extension, a reserved opcode, a length that lies or does not use the
shortest encoding), so the suites build their bytes here, and only here:

- `frame` builds one frame. By default it is what RFC 6455 section 5 asks of a client
  (final, masked with a random key, shortest length encoding); every field can be set to
  anything the header can carry. ``masked=False`` makes a server frame.
- `handshake_request` is a client's opening handshake (section 4.1), any header replaced
  or dropped; `accept_key` is the ``Sec-WebSocket-Accept`` a server must answer, and
  `header` finds it in a response head.
- `close_payload` is a close frame's payload: a code and a reason, valid or not.
- `parse_frames` takes the complete frames off the front of a buffer, unmasking the
  masked ones; `Frame` is what it returns.
- `RawWebSocket` is a blocking client on a plain socket that sends what it is told and
  reads only when asked (it never answers a ping by itself).

The fault suite builds frames in loops of tens of thousands: `frame` and `mask` stay plain
functions with integer arithmetic, no per-byte Python loop.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import time
from types import TracebackType
from typing import NamedTuple, Self

HOST = "127.0.0.1"
TIMEOUT = 10.0

# Opcodes, RFC 6455 section 5.2 (3-7 and 0xB-0xF are reserved).
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# RSV bits as `frame`'s ``rsv`` takes them: RSV1 (permessage-deflate's), RSV2, RSV3.
RSV1, RSV2, RSV3 = 4, 2, 1

# Length encodings as `frame`'s ``encoding`` takes them: the bits of the length field.
LENGTH_7, LENGTH_16, LENGTH_64 = 7, 16, 64

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# The sample nonce of RFC 6455 section 1.3 and the answer the section gives for it.
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


# -- frames --------------------------------------------------------------------------


def mask(data: bytes, key: bytes) -> bytes:
    """``data`` XORed with the 4-byte ``key`` repeated (section 5.3); its own inverse."""
    n = len(data)
    if not n or key == b"\0\0\0\0":
        return data
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
          masked: bool = True, key: bytes | None = None, length: int | None = None,
          encoding: int | None = None) -> bytes:
    """One frame: its header, then ``payload`` (masked unless ``masked=False``).

    ``opcode`` may be any of 0-15, ``rsv`` any of 0-7 (`RSV1` | `RSV2` | `RSV3`).
    ``key`` is the masking key (4 bytes; random by default). ``length`` announces another
    payload length than ``len(payload)``, to lie; ``encoding`` forces the length field
    (`LENGTH_7`, `LENGTH_16` or `LENGTH_64`) where the shortest one is the rule.
    """
    n = len(payload) if length is None else length
    if encoding is None:
        encoding = LENGTH_7 if n <= 125 else LENGTH_16 if n <= 0xFFFF else LENGTH_64
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if masked else 0
    if encoding == LENGTH_7:
        header = struct.pack("!BB", first, mask_bit | n)
    elif encoding == LENGTH_16:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not masked:
        return header + payload
    if key is None:
        key = os.urandom(4)
    return header + key + mask(payload, key)


def close_payload(code: int, reason: bytes | str = b"") -> bytes:
    """The payload of a close frame (section 5.5.1): the code, then the reason (a str is
    encoded as UTF-8, bytes are sent as they are, valid or not)."""
    return struct.pack("!H", code) + (reason.encode() if isinstance(reason, str) else reason)


class Frame(NamedTuple):
    """A frame read by `parse_frames`, its payload unmasked."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0
    masked: bool = False

    @property
    def close_code(self) -> int:
        """The status code of a close frame; 1005 when it carries none (section 7.1.5)."""
        assert self.opcode == OP_CLOSE, self
        return struct.unpack_from("!H", self.payload)[0] if len(self.payload) >= 2 else 1005

    @property
    def close_reason(self) -> bytes:
        """The reason of a close frame, as sent (not decoded)."""
        assert self.opcode == OP_CLOSE, self
        return self.payload[2:]


# Frame(...) without NamedTuple's generated __new__: the fault suite parses frames by the
# hundred thousand.
_new_frame = tuple.__new__


def parse_frames(buf: bytearray) -> list[Frame]:
    """The complete frames at the start of ``buf``, removed from it; an unfinished frame
    stays for the next call. Reads whatever the header says: checking it is the caller's
    business (a server frame is unmasked, has no RSV bit without an extension...)."""
    frames: list[Frame] = []
    pos, end = 0, len(buf)
    while end - pos >= 2:
        b0, b1 = buf[pos], buf[pos + 1]
        n = b1 & 0x7F
        start = pos + 2
        if n == 126:
            if end - pos < 4:
                break
            n = (buf[pos + 2] << 8) | buf[pos + 3]
            start = pos + 4
        elif n == 127:
            if end - pos < 10:
                break
            n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            start = pos + 10
        if b1 & 0x80:
            if end - start < 4 + n:
                break
            payload = mask(bytes(buf[start + 4 : start + 4 + n]), bytes(buf[start : start + 4]))
            start += 4
        else:
            if end - start < n:
                break
            payload = bytes(buf[start : start + n])
        frames.append(_new_frame(Frame, (b0 & 0x0F, payload, b0 >= 0x80, (b0 >> 4) & 7,
                                         b1 >= 0x80)))
        pos = start + n
    del buf[:pos]
    return frames


# -- the opening handshake -----------------------------------------------------------


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server answers to ``key`` (section 4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def header(head: bytes, name: str) -> str | None:
    """The value of header ``name`` (any case) in an HTTP response head, or None; fails if
    the head has it more than once."""
    prefix = name.lower().encode() + b":"
    values = [line[len(prefix):].strip().decode("latin-1")
              for line in head.split(b"\r\n")[1:] if line.lower().startswith(prefix)]
    assert len(values) <= 1, f"{name} {len(values)} times in {head!r}"
    return values[0] if values else None


def new_key() -> str:
    """A fresh random ``Sec-WebSocket-Key`` (16 random bytes, base64)."""
    return base64.b64encode(os.urandom(16)).decode()


def handshake_request(target: str = "/", **header_changes: str | None) -> bytes:
    """A client's opening handshake for ``target`` (section 4.1) to `HOST` with `KEY`.

    ``header_changes`` replace headers or add new ones after them, named with underscores
    for dashes (``Sec_WebSocket_Key="..."``, ``Origin="..."``); None drops a header.
    """
    headers: dict[str, str | None] = {
        "Host": HOST,
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    for name, value in header_changes.items():
        headers[name.replace("_", "-")] = value
    lines = [f"GET {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers.items() if value is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# -- a blocking client ---------------------------------------------------------------


class RawWebSocket:
    """A hand-driven WebSocket client on a plain blocking socket.

    It sends exactly what it is told and reads only when asked: it never answers a ping
    or a close by itself, which is what keepalive, close and slow-consumer tests need.
    Every read has a deadline; running out of time is an AssertionError saying what was
    awaited. Frames from the server must be unmasked and carry no RSV bit, but RSV1 when
    the 101 agreed on permessage-deflate (``deflate``; the frame's payload is then left
    compressed): anything else fails the read.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deflate = False  # the 101 agreed on permessage-deflate (RFC 7692)
        self.buf = bytearray()
        self.eof = False    # the server ended the connection (FIN or RST)
        self.reset = False  # ... with a RST
        self._frames: list[Frame] = []

    @classmethod
    def connect(cls, port: int, target: str, *, rcvbuf: int | None = None,
                source: str | None = None, timeout: float = TIMEOUT,
                **header_changes: str | None) -> Self:
        """A client whose handshake the server answered 101 with the right accept key.

        ``rcvbuf``: SO_RCVBUF, set before connecting; ``source``: the address to connect
        from; ``header_changes``: as for `handshake_request`.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ws = cls(sock)
        try:
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if source is not None:
                sock.bind((source, 0))
            sock.settimeout(timeout)
            sock.connect((HOST, port))
            sock.sendall(handshake_request(target, **header_changes))
            head = ws.read_head(timeout)
            assert head.startswith(b"HTTP/1.1 101 "), head
            key = header_changes.get("Sec_WebSocket_Key", KEY) or ""
            assert header(head, "Sec-WebSocket-Accept") == accept_key(key), head
            agreed = header(head, "Sec-WebSocket-Extensions")
            ws.deflate = agreed is not None and agreed.startswith("permessage-deflate")
        except BaseException:
            ws.close()
            raise
        return ws

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b"", *, fin: bool = True,
                   rsv: int = 0, masked: bool = True) -> None:
        """`frame` built and sent."""
        self.sock.sendall(frame(opcode, payload, fin=fin, rsv=rsv, masked=masked))

    def read_head(self, timeout: float = TIMEOUT) -> bytes:
        """The HTTP response head, up to and including its blank line."""
        deadline = time.monotonic() + timeout
        while (i := self.buf.find(b"\r\n\r\n")) < 0:
            if not self._fill(deadline, "a response head"):
                raise AssertionError(f"connection ended before a response head: "
                                     f"{bytes(self.buf)!r}")
        head = bytes(self.buf[: i + 4])
        del self.buf[: i + 4]
        return head

    def recv_frame(self, timeout: float = TIMEOUT) -> Frame | None:
        """The next frame, or None once the server ended the connection."""
        deadline = time.monotonic() + timeout
        while not self._frames:
            for got in parse_frames(self.buf):
                assert not got.masked, f"a masked server frame (RFC 6455 5.1): {got}"
                assert not got.rsv or (self.deflate and got.rsv == RSV1), \
                    f"RSV bits without an extension (RFC 6455 5.2): {got}"
                self._frames.append(got)
            if not self._frames and not self._fill(deadline, "a frame"):
                return None
        return self._frames.pop(0)

    def wait_eof(self, timeout: float = TIMEOUT) -> None:
        """Read until the server ends the connection (what came is left in ``buf``)."""
        deadline = time.monotonic() + timeout
        while self._fill(deadline, "the server to end the connection"):
            pass

    def _fill(self, deadline: float, what: str) -> bool:
        """Read once into ``buf``; False at EOF or reset, AssertionError at ``deadline``."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {what}; unread: {bytes(self.buf)!r}")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 20)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; unread: "
                                 f"{bytes(self.buf)!r}") from None
        except ConnectionResetError:
            self.eof = self.reset = True
            return False
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True
