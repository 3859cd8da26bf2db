"""The opening handshake of one load connection (RFC 6455 section 4.1).

`Handshake.request` is the upgrade request to send; `Handshake.receive` takes
the server's bytes until the answer is complete. This module checks what makes
the answer a WebSocket: a 101 with ``Upgrade: websocket``, ``Connection:
upgrade``, the right ``Sec-WebSocket-Accept`` and no extension we did not ask
for.

With ``compression`` the request offers ``permessage-deflate; client_max_window_bits``
(what browsers send) and the answer must accept it (RFC 7692 section 7): its parameters
are read into `Deflate` (`parse_deflate_answer`); an answer without the extension fails
the connection with `DECLINED`, one that is malformed or names anything else with its
reason. Without ``compression`` the request is what it always was, byte for byte.

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
import re
from collections.abc import Sequence
from dataclasses import dataclass

import h11

from ringcast.loadtest.target import Target

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HANDSHAKE = 16 * 1024
"""Bytes an answer's head may take."""
DEFLATE_OFFER = b"permessage-deflate; client_max_window_bits"
"""The ``Sec-WebSocket-Extensions`` offer of ``--compression``, as browsers make it."""
DECLINED = "the server declined permessage-deflate"
"""The failure of a connection whose 101 does not accept the offer."""

# RFC 6455 section 9.1: param = token [ "=" (token | quoted-string) ], with optional
# whitespace around; a quoted value must be a token once unquoted (RFC 7692 section 7.1).
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(rb"[ \t]*(" + _TOKEN + rb")[ \t]*(?:=[ \t]*(?:(" + _TOKEN + rb")|\"("
                    + _TOKEN + rb")\")[ \t]*)?")
_BITS = re.compile(rb"8|9|1[0-5]")     # 8 to 15, no leading zero (RFC 7692 section 7.1.2)


class HandshakeFailed(Exception):
    """The server did not open a WebSocket. The message is the reason failed
    connections are counted under, so it names a kind of failure, not one connection."""


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


@dataclass(frozen=True, slots=True)
class Deflate:
    """What a server's 101 agreed to for permessage-deflate (RFC 7692 section 7.1).
    The window sizes are None where the answer does not name them."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    client_max_window_bits: int | None = None

    @property
    def inflate_window(self) -> int:
        """The window the server compresses with: what it said, else 15."""
        return self.server_max_window_bits or 15

    def describe(self) -> str:
        """The parameters as the report shows them (``(no parameters)`` when none)."""
        parts = [name for name in ("server_no_context_takeover", "client_no_context_takeover")
                 if getattr(self, name)]
        parts += [f"{name}={getattr(self, name)}"
                  for name in ("server_max_window_bits", "client_max_window_bits")
                  if getattr(self, name) is not None]
        return "; ".join(parts) or "(no parameters)"


def parse_deflate_answer(values: Sequence[bytes]) -> Deflate | None:
    """The ``Sec-WebSocket-Extensions`` values of a 101 that answered `DEFLATE_OFFER`:
    the agreement, or None when they name no extension (the server declined). Raises
    `HandshakeFailed` for anything RFC 7692 section 7.1 does not allow in the answer to
    this offer: another extension, more than one, an unknown, repeated or malformed
    parameter, a window size outside 8-15."""
    elements = [e for v in values for e in v.split(b",") if e.strip(b" \t")]
    if not elements:
        return None
    if len(elements) > 1:
        raise HandshakeFailed("bad permessage-deflate answer (more than one extension)")
    name, *params = elements[0].split(b";")
    if name.strip(b" \t").lower() != b"permessage-deflate":
        raise HandshakeFailed("extension not asked for")
    seen: dict[str, bytes | None] = {}
    for raw in params:
        m = _PARAM.fullmatch(raw)
        if m is None:
            raise HandshakeFailed("bad permessage-deflate answer (malformed parameter)")
        key = m.group(1).lower().decode()
        if key in seen:
            raise HandshakeFailed(f"bad permessage-deflate answer ({key} twice)")
        seen[key] = m.group(2) if m.group(2) is not None else m.group(3)
    bits: dict[str, int] = {}
    for key, value in seen.items():
        if key in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                raise HandshakeFailed(f"bad permessage-deflate answer ({key} with a value)")
        elif key in ("server_max_window_bits", "client_max_window_bits"):
            # The answer must give the client's window a value (section 7.1.2.2).
            if value is None or not _BITS.fullmatch(value):
                raise HandshakeFailed(f"bad permessage-deflate answer ({key} not 8-15)")
            bits[key] = int(value)
        else:
            raise HandshakeFailed(f"bad permessage-deflate answer (unknown parameter {key})")
    return Deflate(server_no_context_takeover="server_no_context_takeover" in seen,
                   client_no_context_takeover="client_no_context_takeover" in seen,
                   server_max_window_bits=bits.get("server_max_window_bits"),
                   client_max_window_bits=bits.get("client_max_window_bits"))


class Handshake:
    """The client side of one connection's upgrade. ``compression``: offer
    permessage-deflate and require it; once open, `deflate` is what was agreed."""

    __slots__ = ("_compression", "_head", "_http", "_target", "deflate", "key", "request")

    def __init__(self, target: Target, *, compression: bool = False) -> None:
        self.key = base64.b64encode(os.urandom(16))
        self._target = target
        self._compression = compression
        offer = b"Sec-WebSocket-Extensions: %s\r\n" % DEFLATE_OFFER if compression else b""
        self.request = (
            b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s"
            b"User-Agent: ringcast-loadtest\r\n\r\n"
        ) % (target.path.encode(), target.host_header.encode(), self.key, offer)
        self._head = b""  # the answer so far, until h11 takes over
        self._http: h11.Connection | None = None
        self.deflate: Deflate | None = None

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
        headers = [
            ("Host", self._target.host_header), ("Upgrade", "websocket"),
            ("Connection", "Upgrade"), ("Sec-WebSocket-Key", self.key.decode()),
            ("Sec-WebSocket-Version", "13"),
        ]
        if self._compression:
            headers.append(("Sec-WebSocket-Extensions", DEFLATE_OFFER.decode()))
        http.send(h11.Request(method="GET", target=self._target.path,
                              headers=[*headers, ("User-Agent", "ringcast-loadtest")]))
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
        if not self._compression:
            if _tokens(headers, b"sec-websocket-extensions"):
                raise HandshakeFailed("extension not asked for")
            return
        deflate = parse_deflate_answer(
            [v for n, v in headers if n == b"sec-websocket-extensions"])
        if deflate is None:
            raise HandshakeFailed(DECLINED)
        self.deflate = deflate


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
