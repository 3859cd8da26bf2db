"""The fast path of the HTTP phase: plain requests, read and checked in one pass.

A fan-out server's worst minute is a connection storm: after a deploy or a network blip
every client reconnects at once. h11 and wsproto check a request thoroughly, and that
costs about 450 µs of Python per handshake (three ``h11.Connection`` objects, header
normalisation, the request rebuilt for wsproto). Almost every request of a storm is the
same plain, well-formed upgrade, and most publishes the same plain ``POST``. This module
recognises such requests in one pass over the bytes and decides them; anything it does not
fully understand, and anything that would be refused, gets ``None`` and goes through h11
and wsproto exactly as before, so every refusal stays as specific as it was.
``tests/unit/protocol/test_fast_path.py`` checks, for generated requests, that a session
answers byte for byte the same with the fast path as without it.

"Plain" is a strict subset of RFC 9112's grammar, so that what passes here h11 accepts
too, with the same meaning:

- the whole head is here, ending in an empty line, every line ending in CRLF, within the
  head limits (request line, header section, header count);
- the request line is ``GET`` or ``POST``, a target of visible ASCII starting with ``/``,
  and ``HTTP/1.1``;
- every header line is ``token ":" OWS value OWS``, the value visible ASCII with spaces and
  tabs inside (no obs-fold, no obs-text, no control character);
- no header name comes twice; there is no ``Transfer-Encoding`` and no ``Expect``, there
  is a ``Host``, a ``Content-Length`` is digits, and the whole body is here.

Then, per route, what it takes to be served here (everything else goes to h11):

- a WebSocket handshake: ``GET`` without a body; one ``Upgrade`` that is ``websocket``,
  one ``Connection`` listing ``upgrade``, one ``Sec-WebSocket-Version: 13``, one valid
  ``Sec-WebSocket-Key``, a host name IDNA can read (wsproto's checks); the origin, the
  channel name and the credentials all accepted;
- ``POST /publish/<channel>``: the origin, the token, the channel name and what the token
  allows all accepted, a text body that is UTF-8, no ``Connection`` header but
  ``keep-alive``; ``POST /publish`` likewise, a batch :mod:`.batch` accepts;
- ``GET /healthz`` and ``GET /metrics`` (when enabled): no body, no ``Connection`` header
  but ``keep-alive``.

The answers are written here too, byte for byte what h11 and wsproto write.
"""

from __future__ import annotations

import re
from binascii import b2a_base64
from dataclasses import dataclass
from hashlib import sha1
from http import HTTPStatus
from typing import Final

from ringcast.errors import ChannelNameError

from ._headscan import ffi, lib
from .auth import Access, AuthError, Grant
from .batch import BatchError, Message, read_batch
from .channels import validate_channel
from .credentials import Credentials, read_credentials
from .settings import ProtocolSettings

__all__ = [
    "Plain",
    "PlainPublish",
    "PlainUpgrade",
    "accept_response",
    "check_batch",
    "check_publish",
    "check_query",
    "check_upgrade",
    "is_text",
    "read_plain",
    "response",
]

_KEY: Final = re.compile(rb"[A-Za-z0-9+/]{21}[AQgw]==")  # 16 bytes in base64
_WS_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_PUBLISH_PREFIX: Final = "/publish/"
_BATCH_PATH: Final = "/publish"
_NO_CREDENTIALS: Final = Credentials(None, None)


class Plain:
    """A complete plain request. ``fields`` (its headers, names in lower case as h11 gives
    them, each once) is made when first asked for: a common request never needs it."""

    __slots__ = ("_fields", "_headers", "body", "connection", "content_type", "end", "flags",
                 "key", "method", "origin", "path", "target")

    def __init__(self, method: bytes, target: bytes, path: str, *, body: bytes, end: int,
                 headers: bytes, flags: int, key: bytes, origin: bytes | None,
                 connection: bytes | None, content_type: bytes) -> None:
        self.method = method
        """``b"GET"`` or ``b"POST"``."""
        self.target = target
        self.path = path
        """The target without its query."""
        self.body = body
        self.end = end
        """Bytes of the data it took: what follows is the next request, or frames."""
        self.flags = flags
        """What the head scanner found (``HS_*`` in ``csrc/headscan_api.h``)."""
        self.key = key
        """``HS_UPGRADE``: the Sec-WebSocket-Key."""
        self.origin = origin
        """The Origin header's value, if any."""
        self.connection = connection
        """The Connection header's value, if any."""
        self.content_type = content_type
        """The Content-Type header's value (empty if none)."""
        self._headers = headers
        self._fields: dict[bytes, bytes] | None = None

    @property
    def fields(self) -> dict[bytes, bytes]:
        fields = self._fields
        if fields is None:
            it = iter(self._headers.split(b"\0"))
            # The split ends with b"" after the last NUL: zip stops there.
            fields = self._fields = dict(zip(it, it, strict=False))
        return fields

    @property
    def upgrade_ready(self) -> bool:
        """Every check of a WebSocket handshake but policy (origin, channel, credentials)
        passed in the scanner (``HS_UPGRADE``)."""
        return bool(self.flags & lib.HS_UPGRADE)


# The head scanner's output, reused by every call (a worker reads one request at a time,
# and nothing here is re-entered). A head whose names and values do not fit is left to
# h11, like any other head past a limit.
_HEAD: Final = ffi.new("hs_head *")
_BLOB_CAP: Final = 64 * 1024
_BLOB: Final = ffi.new("uint8_t[]", _BLOB_CAP)
_METHODS: Final = {lib.HS_GET: b"GET", lib.HS_POST: b"POST"}


def read_plain(data: bytes, settings: ProtocolSettings) -> Plain | None:
    """The plain request at the start of ``data``, or None (not all here yet, over a
    limit, or anything else this path leaves to h11).

    The head is read in C (``csrc/headscan.c``, one pass: about a tenth of the time of
    the regular expressions it replaced), with the rules of a plain head and the checks of
    a WebSocket handshake that need no policy; the body's length is checked here."""
    head = _HEAD
    end = lib.hs_scan(data, len(data), settings.max_request_line, settings.max_header_size,
                      settings.max_headers, head, _BLOB, _BLOB_CAP)
    if end <= 0:
        return None
    size = head.content_length
    if size > settings.max_http_body or len(data) - end < size:
        return None
    flags = head.flags
    toff = head.target_off
    return Plain(
        _METHODS[head.method], data[toff : toff + head.target_len],
        data[toff : toff + head.path_len].decode("ascii"),
        body=data[end : end + size] if size else b"", end=end + size,
        headers=ffi.buffer(_BLOB, head.blob_len)[:], flags=flags,
        key=data[head.key_off : head.key_off + 24] if flags & lib.HS_UPGRADE else b"",
        origin=(data[head.origin_off : head.origin_off + head.origin_len]
                if flags & lib.HS_ORIGIN else None),
        connection=(data[head.conn_off : head.conn_off + head.conn_len]
                    if flags & lib.HS_CONNECTION else None),
        content_type=data[head.type_off : head.type_off + head.type_len],
    )


def _origin_allowed(settings: ProtocolSettings, plain: Plain) -> bool:
    policy = settings.origins
    origin = plain.origin
    return policy.allows_any or origin is None or policy.allows(origin.decode("ascii"))


def _keeps_alive(plain: Plain) -> bool:
    """No ``Connection`` header but ``keep-alive`` (which h11 answers with nothing)."""
    connection = plain.connection
    return connection is None or connection.lower() == b"keep-alive"


def _credentials(settings: ProtocolSettings, plain: Plain, websocket: bool) -> Credentials:
    """What :func:`~.credentials.read_credentials` finds, without its walk through the
    headers when no token can matter and no subprotocol was offered."""
    auth = settings.authenticator
    if not auth.enabled and (not websocket or not plain.flags & lib.HS_PROTOCOL):
        return _NO_CREDENTIALS
    return read_credentials(plain.fields.items(), plain.target, websocket=websocket,
                            tokens=auth.enabled)


# -- the WebSocket handshake -------------------------------------------------------------


@dataclass(slots=True)  # a value; not frozen: see .actions
class PlainUpgrade:
    """A handshake to accept: the answer to send and what the client may do."""

    channel: str
    response: bytes
    access: Access


def check_upgrade(
    settings: ProtocolSettings, plain: Plain, unix_now: float | None
) -> PlainUpgrade | None:
    """Accept a plain handshake, or None to leave it to h11 and wsproto (which answer a
    refusal); the checks of the slow path, all of them."""
    if plain.upgrade_ready:
        key = plain.key
    else:
        fields = plain.fields
        if plain.method != b"GET" or plain.body:
            return None
        upgrade = fields.get(b"upgrade", b"")
        connection = fields.get(b"connection", b"")
        key = fields.get(b"sec-websocket-key", b"")
        if (upgrade.lower() != b"websocket" or fields.get(b"sec-websocket-version") != b"13"
                or not _KEY.fullmatch(key)):
            return None
        if not any(token.strip().lower() == b"upgrade" for token in connection.split(b",")):
            return None
        host = fields[b"host"]
        if b"xn--" in host.lower():  # the only ASCII names IDNA may refuse (wsproto asks it)
            try:
                host.decode("idna")
            except UnicodeError:
                return None
    if not _origin_allowed(settings, plain):
        return None
    try:
        channel = validate_channel(plain.path[1:], settings.max_channel_name)
        auth = settings.authenticator
        credentials = _credentials(settings, plain, websocket=True)
        grant = auth.authenticate(credentials.token, unix_now, required=auth.require_subscribe,
                                  action="subscribing")
        access = auth.subscriber_access(grant, channel)
    except (ChannelNameError, AuthError):
        return None
    return PlainUpgrade(channel, accept_response(key, credentials.subprotocol), access)


def accept_response(key: bytes, subprotocol: str | None) -> bytes:
    """The 101 wsproto writes for ``key``, selecting ``subprotocol`` if not None."""
    accept = b2a_base64(sha1(key + _WS_GUID).digest(), newline=False)
    head = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade"
            b"\r\nSec-WebSocket-Accept: " + accept + b"\r\n")
    if subprotocol is not None:
        head += b"Sec-WebSocket-Protocol: " + subprotocol.encode("ascii") + b"\r\n"
    return head + b"\r\n"


# -- the HTTP API ---------------------------------------------------------------------------


@dataclass(slots=True)  # a value; not frozen: see .actions
class PlainPublish:
    """A publish to accept."""

    channel: str
    text: bool


def is_text(content_type: bytes) -> bool:
    """Is a body of this Content-Type published as a text message (``text/*`` or
    ``application/json``, parameters ignored)?"""
    media_type = content_type.partition(b";")[0].strip().lower()
    return media_type.startswith(b"text/") or media_type == b"application/json"


def _publisher(settings: ProtocolSettings, plain: Plain, unix_now: float | None) -> Grant | None:
    """The grant of a plain publish request's token; raises AuthError when it may not
    publish at all."""
    auth = settings.authenticator
    credentials = _credentials(settings, plain, websocket=False)
    return auth.authenticate(credentials.token, unix_now, required=auth.publish_configured,
                             action="publishing ('Authorization: Bearer <token>')")


def check_publish(
    settings: ProtocolSettings, plain: Plain, unix_now: float | None
) -> PlainPublish | None:
    """Accept a plain ``POST /publish/<channel>``, or None to leave it to h11."""
    if (plain.method != b"POST" or not settings.http_enabled
            or not plain.path.startswith(_PUBLISH_PREFIX) or not _keeps_alive(plain)
            or not _origin_allowed(settings, plain)):
        return None
    try:
        grant = _publisher(settings, plain, unix_now)
        channel = validate_channel(plain.path[len(_PUBLISH_PREFIX):], settings.max_channel_name)
        settings.authenticator.check_http_publish(grant, channel)
    except (ChannelNameError, AuthError):
        return None
    text = is_text(plain.content_type)
    if text and not plain.body.isascii():
        try:
            plain.body.decode()
        except UnicodeDecodeError:
            return None
    return PlainPublish(channel, text)


def check_batch(
    settings: ProtocolSettings, plain: Plain, unix_now: float | None
) -> list[Message] | None:
    """The messages of a plain ``POST /publish`` batch, or None to leave it to h11."""
    if (plain.method != b"POST" or not settings.http_enabled or plain.path != _BATCH_PATH
            or not _keeps_alive(plain) or not _origin_allowed(settings, plain)):
        return None
    try:
        return read_batch(plain.body, settings, _publisher(settings, plain, unix_now))
    except (AuthError, BatchError):
        return None


def check_query(settings: ProtocolSettings, plain: Plain) -> str | None:
    """The path of a plain ``GET /healthz`` or ``/metrics``, or None."""
    path = plain.path
    if (plain.method != b"GET" or plain.body or not _keeps_alive(plain)
            or not (path == "/healthz" or (path == "/metrics" and settings.metrics_enabled))):
        return None
    return path


def response(status: int, content_type: bytes, body: bytes, keep_alive: bool) -> bytes:
    """An answer as h11 writes it for the HTTP phase's headers."""
    try:
        phrase = HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    head = b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n" % (
        status, phrase, content_type, len(body))
    if not keep_alive:
        head += b"connection: close\r\n"
    return head + b"\r\n" + body
