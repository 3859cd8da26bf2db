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

Two shortcuts take the commonest cases in fewer steps still: :func:`read_upgrade` and
:func:`read_publish` decide data that is exactly one handshake or one publish, whose token
(if tokens are on) is in no header and no query, without a :class:`Plain`: one C call
(``hs_whole``) reads the head, takes the path prefix off, checks the channel name and a
publish's keep-alive and Content-Type, and Python adds the policy (origin, token,
compression). They answer nothing :func:`check_upgrade` and :func:`check_publish` would
not (property tests hold them to it).
"""

from __future__ import annotations

import re
import struct
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
from .credentials import SUBPROTOCOL_V1, Credentials, read_credentials
from .deflate import Agreement, negotiate
from .ringcast_v1 import V1_ACCESS
from .settings import ProtocolSettings

__all__ = [
    "EXTENSIONS_HEADER",
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
    "read_publish",
    "read_upgrade",
    "response",
    "unprefixed",
]

_KEY: Final = re.compile(rb"[A-Za-z0-9+/]{21}[AQgw]==")  # 16 bytes in base64
EXTENSIONS_HEADER: Final = b"Sec-WebSocket-Extensions"  # as the 101 names it
_WS_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_PUBLISH_PREFIX: Final = "/publish/"
_BATCH_PATH: Final = "/publish"
_NO_CREDENTIALS: Final = Credentials(None, None)
_PUBLISHING: Final = "publishing ('Authorization: Bearer <token>')"  # what needs a token


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
    def forwarded_for(self) -> list[bytes]:
        """The ``X-Forwarded-For`` value, if any (a plain head has each name once)."""
        value = self.fields.get(b"x-forwarded-for")
        return [] if value is None else [value]

    @property
    def upgrade_ready(self) -> bool:
        """Every check of a WebSocket handshake but policy (origin, channel, credentials)
        passed in the scanner (``HS_UPGRADE``)."""
        return bool(self.flags & lib.HS_UPGRADE)


# The head scanner's output, reused by every call (a worker reads one request at a time,
# and nothing here is re-entered). A head whose names and values do not fit is left to
# h11, like any other head past a limit.
_HEAD: Final = ffi.new("hs_head *")
# hs_head read in one call (eighteen uint32 then a uint64: no padding), not field by
# field through cffi (about 50 ns each).
_HEAD_FIELDS: Final = struct.Struct("=18IQ")
_HEAD_VIEW: Final = ffi.buffer(_HEAD)
assert _HEAD_FIELDS.size == ffi.sizeof("hs_head")
_BLOB_CAP: Final = 64 * 1024
_BLOB: Final = ffi.new("uint8_t[]", _BLOB_CAP)
_METHODS: Final = {lib.HS_GET: b"GET", lib.HS_POST: b"POST"}


def _scan(data: bytes, settings: ProtocolSettings) -> tuple[int, tuple[int, ...]] | None:
    """The plain head at the start of ``data`` read by the C scanner: its length and
    hs_head's fields in order; None when it is not plain, not all here, or over a limit.
    (The header blob is left in _BLOB, for read_plain.)"""
    end = lib.hs_scan(data, len(data), settings.max_request_line, settings.max_header_size,
                      settings.max_headers, _HEAD, _BLOB, _BLOB_CAP)
    return None if end <= 0 else (end, _HEAD_FIELDS.unpack_from(_HEAD_VIEW))


# hs_whole's reading of the settings, made again only when other settings come (a worker
# has one at a time; a reload makes new ones): the settings, their hs_policy, and the
# prefix's bytes the policy points at.
_policy: tuple[ProtocolSettings, object, object] | None = None


def _whole(data: bytes, settings: ProtocolSettings) -> tuple[int, tuple[int, ...]] | None:
    """:func:`_scan` for data that must be one whole handshake or publish, checked in C
    as far as the settings go without policy (``hs_whole`` in ``csrc/headscan_api.h``):
    the head's length and hs_head's fields, or None."""
    global _policy  # noqa: PLW0603 (a one-entry cache, see above)
    if _policy is None or _policy[0] is not settings:
        raw = settings.path_prefix.encode()  # ASCII (the configuration's pattern)
        prefix = ffi.new("uint8_t[]", raw or b"\0")
        policy = ffi.new("hs_policy *", {
            "max_line": settings.max_request_line, "max_section": settings.max_header_size,
            "max_headers": settings.max_headers, "max_channel": settings.max_channel_name,
            "max_body": settings.max_http_body, "prefix": prefix, "prefix_len": len(raw)})
        _policy = (settings, policy, prefix)
    end = lib.hs_whole(data, len(data), _policy[1], _HEAD, _BLOB, _BLOB_CAP)
    return None if end <= 0 else (end, _HEAD_FIELDS.unpack_from(_HEAD_VIEW))


def read_plain(data: bytes, settings: ProtocolSettings) -> Plain | None:
    """The plain request at the start of ``data``, or None (not all here yet, over a
    limit, or anything else this path leaves to h11).

    The head is read in C (``csrc/headscan.c``, one pass: about a tenth of the time of
    the regular expressions it replaced), with the rules of a plain head and the checks of
    a WebSocket handshake that need no policy; the body's length is checked here."""
    scanned = _scan(data, settings)
    if scanned is None:
        return None
    end, (method, toff, tlen, plen, _, blob_len, flags, key_off, origin_off, origin_len,
          conn_off, conn_len, type_off, type_len, _, _, _, _, size) = scanned
    if size > settings.max_http_body or len(data) - end < size:
        return None
    return Plain(
        _METHODS[method], data[toff : toff + tlen],
        unprefixed(data[toff : toff + plen].decode("ascii"), settings.path_prefix),
        body=data[end : end + size] if size else b"", end=end + size,
        headers=ffi.buffer(_BLOB, blob_len)[:], flags=flags,
        key=data[key_off : key_off + 24] if flags & lib.HS_UPGRADE else b"",
        origin=data[origin_off : origin_off + origin_len] if flags & lib.HS_ORIGIN else None,
        connection=data[conn_off : conn_off + conn_len] if flags & lib.HS_CONNECTION else None,
        content_type=data[type_off : type_off + type_len],
    )


def unprefixed(path: str, prefix: str) -> str:
    """``path`` without ``server.path_prefix`` (``/ws/news`` -> ``/news`` under ``/ws``); a
    path without the prefix is served as it is."""
    if prefix and path.startswith(prefix) and path[len(prefix):len(prefix) + 1] == "/":
        return path[len(prefix):]
    return path


def _origin_allowed(settings: ProtocolSettings, origin: bytes | None) -> bool:
    policy = settings.origins
    return policy.allows_any or origin is None or policy.allows(origin.decode("ascii"))


def _keeps_alive(connection: bytes | None) -> bool:
    """No ``Connection`` header but ``keep-alive`` (which h11 answers with nothing)."""
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

    channel: str | None
    """The channel of the path; None for a ``ringcast.v1`` client opening ``/``."""
    response: bytes
    access: Access
    deflate: Agreement | None
    """permessage-deflate as agreed (see :mod:`.deflate`); None: no compression."""
    grant: Grant | None = None
    """What its token allows (a ``ringcast.v1`` client's commands ask it)."""
    v1: bool = False
    """The client speaks ``ringcast.v1`` (see :mod:`.ringcast_v1`)."""


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
    if not _origin_allowed(settings, plain.origin):
        return None
    try:
        credentials = _credentials(settings, plain, websocket=True)
    except AuthError:
        return None
    offers = plain.fields.get(b"sec-websocket-extensions") \
        if plain.flags & lib.HS_EXTENSIONS else None
    return _subscriber(settings, plain.path, key, credentials, offers=offers,
                       unix_now=unix_now)


# Where a token may be besides a subprotocol (see .credentials).
_TOKEN_PLACES: Final = lib.HS_AUTHORIZATION | lib.HS_QUERY


def read_upgrade(
    data: bytes, settings: ProtocolSettings, unix_now: float | None
) -> PlainUpgrade | None:
    """Accept ``data`` if it is one whole plain handshake (nothing before or after it)
    whose credentials, if any can matter, are read from no header: a connection
    storm's common case, decided in one C call and no :class:`Plain`. None for anything
    else: the caller then reads ``data`` the usual way (:func:`read_plain`), so this
    only ever answers what :func:`check_upgrade` would."""
    scanned = _whole(data, settings)
    if scanned is None:
        return None
    (method, _, _, _, _, _, flags, key_off, origin_off, origin_len, _, _, _, _, ext_off,
     ext_len, channel_off, channel_len, _) = scanned[1]
    if method != lib.HS_GET or flags & lib.HS_PROTOCOL or (
            flags & _TOKEN_PLACES and settings.authenticator.enabled):
        return None  # a publish, or a handshake whose credentials need its headers
    if flags & lib.HS_ORIGIN and not _origin_allowed(
            settings, data[origin_off : origin_off + origin_len]):
        return None
    offers = data[ext_off : ext_off + ext_len] if flags & lib.HS_EXTENSIONS else None
    return _subscribed(settings, data[channel_off : channel_off + channel_len].decode("ascii"),
                       data[key_off : key_off + 24], _NO_CREDENTIALS, offers=offers,
                       unix_now=unix_now)


def _subscriber(
    settings: ProtocolSettings, path: str, key: bytes, credentials: Credentials, *,
    offers: bytes | None, unix_now: float | None,
) -> PlainUpgrade | None:
    """A handshake's policy (its origin allowed already): the channel name, then
    :func:`_subscribed`'s; None to leave a refusal to the slow path (a ``ringcast.v1``
    client's too: it is answered apart, after a 101)."""
    try:
        channel = None if credentials.subprotocol == SUBPROTOCOL_V1 and path == "/" else \
            validate_channel(path[1:], settings.max_channel_name)
    except ChannelNameError:
        return None
    return _subscribed(settings, channel, key, credentials, offers=offers, unix_now=unix_now)


def _subscribed(
    settings: ProtocolSettings, channel: str | None, key: bytes, credentials: Credentials, *,
    offers: bytes | None, unix_now: float | None,
) -> PlainUpgrade | None:
    """A handshake's policy once its channel name is valid (None: a ``ringcast.v1``
    client opening ``/``): the token and what it allows, and the compression agreed for
    ``offers`` (the Sec-WebSocket-Extensions value, if any); None to leave a refusal to
    the slow path."""
    v1 = credentials.subprotocol == SUBPROTOCOL_V1
    try:
        auth = settings.authenticator
        grant = auth.authenticate(credentials.token, unix_now, required=auth.require_subscribe,
                                  action="subscribing")
        access = V1_ACCESS if channel is None else auth.subscriber_access(grant, channel)
    except AuthError:
        return None
    if v1:
        access = V1_ACCESS  # what it may publish is decided per command
    deflate = None
    if offers is not None and settings.compression:
        deflate = negotiate(offers.decode("ascii"))
    response = accept_response(key, credentials.subprotocol,
                               None if deflate is None else deflate.response)
    return PlainUpgrade(channel, response, access, deflate, grant, v1)


def accept_response(key: bytes, subprotocol: str | None, extensions: str | None = None) -> bytes:
    """The 101 wsproto writes for ``key``, selecting ``subprotocol`` if not None, with
    ``extensions`` as its Sec-WebSocket-Extensions (given to wsproto as an extra
    header) if not None."""
    accept = b2a_base64(sha1(key + _WS_GUID).digest(), newline=False)
    head = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade"
            b"\r\nSec-WebSocket-Accept: " + accept + b"\r\n")
    if subprotocol is not None:
        head += b"Sec-WebSocket-Protocol: " + subprotocol.encode("ascii") + b"\r\n"
    if extensions is not None:
        head += EXTENSIONS_HEADER + b": " + extensions.encode("ascii") + b"\r\n"
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
                             action=_PUBLISHING)


def check_publish(
    settings: ProtocolSettings, plain: Plain, unix_now: float | None
) -> PlainPublish | None:
    """Accept a plain ``POST /publish/<channel>``, or None to leave it to h11."""
    if (plain.method != b"POST" or not settings.http_enabled
            or not plain.path.startswith(_PUBLISH_PREFIX) or not _keeps_alive(plain.connection)
            or not _origin_allowed(settings, plain.origin)):
        return None
    try:
        grant = _publisher(settings, plain, unix_now)
    except AuthError:
        return None
    return _publication(settings, plain.path, plain.body, plain.content_type, grant)


def read_publish(data: bytes, settings: ProtocolSettings) -> tuple[PlainPublish, bytes] | None:
    """:func:`read_upgrade`'s twin for a publish: accept ``data`` if it is one whole plain
    ``POST /publish/<channel>`` to a server that needs no token for publishing, carrying
    none it would read; its publication and body. None for anything else (then read the
    usual way, which reads the token, or answers 401 for a missing one)."""
    auth = settings.authenticator
    # With no token in the request, only a server that needs none for publishing accepts
    # it (the others answer 401, on the usual path).
    if not settings.http_enabled or auth.publish_configured:
        return None
    scanned = _whole(data, settings)
    if scanned is None:
        return None
    end, (method, _, _, _, _, _, flags, _, origin_off, origin_len, _, _, _, _, _, _,
          channel_off, channel_len, _) = scanned
    if (method != lib.HS_POST or (flags & _TOKEN_PLACES and auth.enabled)
            or (flags & lib.HS_ORIGIN
                and not _origin_allowed(settings, data[origin_off : origin_off + origin_len]))):
        return None
    body = data[end:]
    text = bool(flags & lib.HS_TEXT)
    if text and not _utf8(body):
        return None
    return PlainPublish(data[channel_off : channel_off + channel_len].decode("ascii"),
                        text), body


def _publication(
    settings: ProtocolSettings, path: str, body: bytes, content_type: bytes, grant: Grant | None
) -> PlainPublish | None:
    """A publish's policy (its origin and token read already): the channel name, what the
    token allows, a text body's UTF-8; None to leave a refusal to the slow path."""
    try:
        channel = validate_channel(path[len(_PUBLISH_PREFIX):], settings.max_channel_name)
        settings.authenticator.check_http_publish(grant, channel)
    except (ChannelNameError, AuthError):
        return None
    text = is_text(content_type)
    if text and not _utf8(body):
        return None
    return PlainPublish(channel, text)


def _utf8(body: bytes) -> bool:
    """A text message's body must be UTF-8 (RFC 6455 section 8.1)."""
    if body.isascii():
        return True
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True


def check_batch(
    settings: ProtocolSettings, plain: Plain, unix_now: float | None
) -> list[Message] | None:
    """The messages of a plain ``POST /publish`` batch, or None to leave it to h11."""
    if (plain.method != b"POST" or not settings.http_enabled or plain.path != _BATCH_PATH
            or not _keeps_alive(plain.connection) or not _origin_allowed(settings, plain.origin)):
        return None
    try:
        return read_batch(plain.body, settings, _publisher(settings, plain, unix_now))
    except (AuthError, BatchError):
        return None


def check_query(settings: ProtocolSettings, plain: Plain) -> str | None:
    """The path of a plain ``GET /healthz`` or ``/metrics``, or None."""
    path = plain.path
    if (plain.method != b"GET" or plain.body or not _keeps_alive(plain.connection)
            or not (path == "/healthz" or (path == "/metrics" and settings.metrics_enabled))):
        return None
    return path


def response(status: int, content_type: bytes, body: bytes, keep_alive: bool) -> bytes:
    """An answer as h11 writes it for the HTTP phase's headers."""
    head = _STATUS_LINES.get(status) or _status_line(status)
    head += b"content-type: %s\r\ncontent-length: %d\r\n" % (content_type, len(body))
    if not keep_alive:
        head += b"connection: close\r\n"
    return head + b"\r\n" + body


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


# The common answers' first lines, made once.
_STATUS_LINES: Final = {status: _status_line(status) for status in (200, 400, 503)}
