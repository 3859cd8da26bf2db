"""Clients for the end-to-end tests: raw sockets, HTTP and metrics, all with deadlines.

Nothing here sleeps hoping something happened: every wait is on a socket (or
on a condition polled against a deadline) and fails with what it waited for.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from http.client import HTTPConnection
from typing import Any, TypeVar

from tests.support.metrics import Metrics

# Re-exported: the tests wait with it alongside these clients.
from tests.support.waiting import wait_until as wait_until  # noqa: PLC0414

T = TypeVar("T")

HOST = "127.0.0.1"
TIMEOUT = 10.0

# Opcodes, RFC 6455 section 5.2.
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run a coroutine to completion on a fresh event loop, bounded in time."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


# -- HTTP ---------------------------------------------------------------------------


@dataclass
class HttpResponse:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    closed: bool  # the server closed the connection after the response

    def json(self) -> Any:
        return json.loads(self.body)


def http(port: int, method: str, path: str, body: bytes = b"", *,
         headers: dict[str, str] | None = None, timeout: float = TIMEOUT,
         source: str | None = None) -> HttpResponse:
    """One request on a fresh http.client connection (from address ``source`` if given);
    the response read in full."""
    conn = HTTPConnection(HOST, port, timeout=timeout,
                          source_address=None if source is None else (source, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        return HttpResponse(resp.status, resp.reason, hdrs, data, resp.will_close)
    finally:
        conn.close()


def raw_http(port: int, request: bytes, timeout: float = TIMEOUT) -> HttpResponse:
    """Send raw bytes, read until the server closes; fail if it does not within timeout."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(request)
        data = recv_until_eof(sock, timeout)
    return parse_http_response(data, closed=True)


def recv_until_eof(sock: socket.socket, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            got = b"".join(chunks)
            raise AssertionError(
                f"the server did not close the connection within {timeout}s; got {got!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def parse_http_response(data: bytes, closed: bool) -> HttpResponse:
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete HTTP response head in {data!r}"
    lines = head.decode("latin-1").split("\r\n")
    version, status, *reason = lines[0].split(" ", 2)
    assert version == "HTTP/1.1", lines[0]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return HttpResponse(int(status), reason[0] if reason else "", headers, body, closed)


def publish(port: int, channel: str, body: bytes | str, content_type: str | None = None,
            token: str | None = None) -> HttpResponse:
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = body.encode() if isinstance(body, str) else body
    return http(port, "POST", f"/publish/{channel}", data, headers=headers)


# -- metrics ------------------------------------------------------------------------

def metrics(port: int, source: str | None = None) -> Metrics:
    """GET /metrics (from ``source``, when given) and parse it; asserts a 200."""
    resp = http(port, "GET", "/metrics", source=source)
    assert resp.status == 200, resp
    return Metrics(resp.body.decode())


# -- raw WebSocket ------------------------------------------------------------------


def upgrade_request(path: str, key: str | None = None, extra: str = "") -> bytes:
    key = key or base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame (RFC 6455 section 5.2-5.3)."""
    mask = os.urandom(4)
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n <= 125:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n <= 0xFFFF:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


@dataclass
class Frame:
    fin: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        assert self.opcode == OP_CLOSE
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None


class RawWebSocket:
    """A hand-driven WebSocket client on a plain socket: sends what it is told, nothing else.

    It never answers pings and never reads unless asked, which is what the
    keepalive and slow-consumer tests need.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.eof = False
        self.reset = False

    @classmethod
    def connect(cls, port: int, path: str, rcvbuf: int | None = None,
                timeout: float = TIMEOUT) -> RawWebSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect((HOST, port))
        ws = cls(sock)
        sock.sendall(upgrade_request(path))
        head = ws._read_until(b"\r\n\r\n", timeout)
        assert head.startswith(b"HTTP/1.1 101 "), head
        return ws

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes) -> None:
        self.sock.sendall(client_frame(opcode, payload))

    def _fill(self, deadline: float) -> bool:
        """Read once; False at EOF or reset."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 20)
        except ConnectionResetError:
            self.eof = self.reset = True
            return False
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _read_until(self, marker: bytes, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while (i := self.buf.find(marker)) < 0:
            if not self._fill(deadline):
                raise AssertionError(f"connection closed before {marker!r}: {bytes(self.buf)!r}")
        head = bytes(self.buf[: i + len(marker)])
        del self.buf[: i + len(marker)]
        return head

    def _parse(self) -> Frame | None:
        buf = self.buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        assert not b1 & 0x80, "server frames must not be masked (RFC 6455 5.1)"
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                return None
            n = struct.unpack_from("!H", buf, 2)[0]
            pos = 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n = struct.unpack_from("!Q", buf, 2)[0]
            pos = 10
        if len(buf) < pos + n:
            return None
        frame = Frame(bool(b0 & 0x80), b0 & 0x0F, bytes(buf[pos : pos + n]))
        del buf[: pos + n]
        return frame

    def recv_frame(self, timeout: float = TIMEOUT) -> Frame | None:
        """The next frame, or None when the connection ended (EOF or reset)."""
        deadline = time.monotonic() + timeout
        while (frame := self._parse()) is None:
            try:
                if not self._fill(deadline):
                    return None
            except TimeoutError:
                raise AssertionError(f"no frame within {timeout}s") from None
        return frame

    def wait_eof(self, timeout: float = TIMEOUT) -> None:
        """Read (and discard) until the server ends the connection."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if not self._fill(deadline):
                    return
            except TimeoutError:
                raise AssertionError(f"the server did not close within {timeout}s") from None
