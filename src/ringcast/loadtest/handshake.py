"""The opening handshake of one load connection (RFC 6455 section 4.1).

`Handshake.request` is the upgrade request to send; `Handshake.receive` takes
the server's bytes until the answer is complete. This module checks what makes
the answer a WebSocket: a 101 with ``Upgrade: websocket``, ``Connection:
upgrade``, the right ``Sec-WebSocket-Accept`` and no extension we did not ask
for.

A connection storm is what the load tester must drive faster than the server
takes it, so the common answer is read here directly: a complete ``HTTP/1.1
101`` head of plain ``Name: value`` lines. Anything else (a refusal, other
framing, any header layout a server may use) is read by h11, which the
connection then makes; ``tests/loadtest/test_handshake.py`` checks both read
the same answers alike.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence

import h11

from ringcast.loadtest.target import Target

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HANDSHAKE = 16 * 1024
"""Bytes an answer's head may take."""


class HandshakeFailed(Exception):
    """The server did not open a WebSocket. The message is the reason failed
    connections are counted under, so it names a kind of failure, not one connection."""


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


class Handshake:
    """The client side of one connection's upgrade."""

    __slots__ = ("_head", "_http", "_target", "key", "request")

    def __init__(self, target: Target) -> None:
        self.key = base64.b64encode(os.urandom(16))
        self._target = target
        self.request = (
            b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
            b"User-Agent: ringcast-loadtest\r\n\r\n"
        ) % (target.path.encode(), target.host_header.encode(), self.key)
        self._head = b""  # the answer so far, until h11 takes over
        self._http: h11.Connection | None = None

    def receive(self, data: bytes) -> bytes | None:
        """Feed bytes of the answer. None: incomplete so far. Once the server switched
        to WebSocket: the bytes that came after the answer (frames already sent).
        Raises `HandshakeFailed` when the answer is anything else."""
        if self._http is None:
            head = self._head + data
            end = head.find(b"\r\n\r\n")
            if end < 0 and len(head) <= MAX_HANDSHAKE and head.count(b"\n") == head.count(b"\r\n"):
                self._head = head  # only CRLF so far: the rest may still come
                return None
            if end >= 0 and head.startswith(b"HTTP/1.1 101 "):
                headers = _plain_headers(head[head.find(b"\r\n") + 2 : end + 2])
                if headers is not None:
                    self._check(headers)
                    return head[end + 4 :]
            self._http = self._h11()
            data = head
        return self._receive_h11(data)

    def _h11(self) -> h11.Connection:
        """h11 for an answer the direct reading leaves to it, told of the request sent."""
        http = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HANDSHAKE)
        http.send(h11.Request(method="GET", target=self._target.path, headers=[
            ("Host", self._target.host_header), ("Upgrade", "websocket"),
            ("Connection", "Upgrade"), ("Sec-WebSocket-Key", self.key.decode()),
            ("Sec-WebSocket-Version", "13"), ("User-Agent", "ringcast-loadtest"),
        ]))
        http.send(h11.EndOfMessage())
        return http

    def _receive_h11(self, data: bytes) -> bytes | None:
        assert self._http is not None
        self._http.receive_data(data)
        while True:
            try:
                event = self._http.next_event()
            except h11.RemoteProtocolError as exc:
                raise HandshakeFailed(f"invalid HTTP answer ({exc})") from None
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                self._check(event.headers)
                return self._http.trailing_data[0]
            if isinstance(event, h11.Response):
                raise HandshakeFailed(f"HTTP {event.status_code}")
            if not isinstance(event, h11.InformationalResponse):   # 100 Continue goes on
                raise HandshakeFailed(f"unexpected {type(event).__name__} from the server")

    def _check(self, headers: Sequence[tuple[bytes, bytes]]) -> None:
        if (_tokens(headers, b"upgrade") != {b"websocket"}
                or b"upgrade" not in _tokens(headers, b"connection")):
            raise HandshakeFailed("101 without Upgrade: websocket")
        if [v for n, v in headers if n == b"sec-websocket-accept"] != [accept_key(self.key)]:
            raise HandshakeFailed("bad Sec-WebSocket-Accept")
        if _tokens(headers, b"sec-websocket-extensions"):
            raise HandshakeFailed("extension not asked for")


def _plain_headers(section: bytes) -> list[tuple[bytes, bytes]] | None:
    """``Name: value`` lines, each ending in CRLF, names lowercased; None for anything
    else (left to h11)."""
    headers = []
    for line in section.split(b"\r\n")[:-1]:
        name, colon, value = line.partition(b":")
        if not colon or not name or not name.isascii() or b" " in name or b"\t" in name:
            return None
        headers.append((name.lower(), value.strip(b" \t")))
    return headers


def _tokens(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> set[bytes]:
    """The comma-separated tokens of every ``name`` header, lowercased (h11 lowercases
    header names, not values)."""
    return {token.strip().lower() for n, value in headers if n == name
            for token in value.split(b",") if token.strip()}
