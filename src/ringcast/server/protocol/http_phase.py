"""The HTTP side of a connection: requests until one upgrades to WebSocket or it closes.

h11 parses the requests; this module routes them:

=====================  ==========================================================
``GET /<channel>``     with ``Upgrade: websocket``: the WebSocket opening handshake
                       (RFC 6455 section 4.2), validated by wsproto; 101, then the
                       session switches to :mod:`.websocket_phase`.
``POST /publish/<ch>`` only when ``http_enabled``; the whole body becomes an
                       :class:`HttpPublish`, answered by the runtime.
``GET /healthz``       an :class:`HttpQuery`, answered by the runtime.
``GET /metrics``       likewise, only when ``metrics_enabled``.
=====================  ==========================================================

``HEAD`` is accepted wherever ``GET`` is (RFC 9110 section 9.3.2); the answer then
carries no body. Anything else is an error, and every error response carries
``Connection: close``, is preceded by a :class:`Refused` action naming the reason and is
followed by :class:`CloseConnection`: 400 malformed request, handshake, channel name or
credentials; 401 missing or invalid token (with ``WWW-Authenticate: Bearer``, RFC 6750);
403 origin not allowed, or a token that does not allow the channel; 404 unknown path; 405
wrong method (with ``Allow``); 413 body too large (by ``Content-Length`` before reading,
or counted as chunks arrive); 414 request line too long; 426 bad
``Sec-WebSocket-Version``; 431 header section too large or too many header lines (see
:mod:`.head_limits`).

Checks on a handshake, in order: HTTP/1.1, the ``Origin`` allow-list, the channel name,
the handshake headers (wsproto), then the token (last, so no signature is verified for a
request that fails anyway). On ``POST /publish``: the method, the origin, the token, the
channel name, what the token allows, the body size.

The fast path: a plain, well-formed request that arrives whole (see :mod:`.fast_path`)
is read and decided without h11 when it would be accepted; everything else, every
refusal included, is read by h11 (and a handshake checked by wsproto) as described
above. h11's connection object is made only for a request that needs it, and dropped
again once it holds nothing, so a plain handshake never makes one.

Requests are served one at a time. While the runtime computes an answer, later bytes
(pipelined requests) are held, at most one complete request's worth (the head limits
plus ``max_http_body``), and parsed once the answer is sent; more closes the connection
at once, without the answer. A successful answer keeps the connection alive when the
client allows it (h11 decides: ``Connection: close`` and HTTP/1.0 end it).

Timing: a complete request must arrive within ``handshake_timeout`` of the connection
opening or of the previous answer (an idle keep-alive connection counts too); when it
does not, :meth:`HttpPhase.tick` closes the connection without a response (a refusal,
``handshake_timeout``, unless an idle keep-alive connection simply ended). The clock stops
while the runtime owes an answer.
"""

from __future__ import annotations

import base64
import binascii

# wsproto decodes Host as IDNA, which imports these on first use: import them
# now, so the first handshake cannot fail for want of a file descriptor.
import encodings.idna  # noqa: F401
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from http import HTTPStatus
from typing import Final

import h11
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection
from wsproto.handshake import H11Handshake
from wsproto.utilities import ProtocolError as WsProtocolError
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

from ringcast.errors import ChannelNameError

from . import fast_path
from .actions import (
    Action,
    ClientAddress,
    CloseConnection,
    Ended,
    HttpPublish,
    HttpPublishBatch,
    HttpQuery,
    OpenedV1,
    Refused,
    SendBytes,
    Subscribe,
)
from .auth import Access, AuthError, Grant
from .batch import BatchError, Message, Result, read_batch, results_body
from .channels import validate_channel
from .client_address import ProxyHeaderError, forwarded_client, read_proxy_header
from .credentials import SUBPROTOCOL_V1, Credentials, read_credentials
from .deflate import Agreement, negotiate
from .frames import CloseCode, close_frame
from .head_limits import HeadGuard, HeadLimitError
from .refusals import Refusal
from .ringcast_v1 import V1_ACCESS, Commands
from .settings import ProtocolSettings

__all__ = ["HttpPhase", "Route", "Upgrade", "check_status", "head_limit", "held_limit"]

_PUBLISH_PREFIX: Final = "/publish/"
_BATCH_PATH: Final = "/publish"
_HEALTHZ: Final = "/healthz"
_METRICS: Final = "/metrics"
CLIENT_SCRIPT: Final = "/ringcast.js"
"""The ``ringcast.v1`` JavaScript client, served to browsers (see docs/history.md)."""
STATUS_PAGES: Final = ("/status", "/status.json")
"""The status page and its figures: queries, when ``status_enabled``."""
STATUS_LIVE: Final = "/status/live"
"""The WebSocket that carries the status figures live, when ``status_enabled``."""
STATUS_CHANNEL: Final = "/status"
"""The channel its connections join: no client can name it (``/`` is not allowed in a
channel name), so only the server publishes there."""
_REASON_MAX: Final = 120  # characters of an h11 error message quoted in a 400 body
_STATUS_ACCESS: Final = Access(may_publish=False)  # a status page's WebSocket only listens


def head_limit(settings: ProtocolSettings) -> int:
    """Bytes of a complete request head at most (h11's incomplete-event limit, a backstop
    behind :class:`HeadGuard`; it also bounds a chunk-size line)."""
    return settings.max_request_line + settings.max_header_size + 8


def held_limit(settings: ProtocolSettings) -> int:
    """Bytes held while an answer is owed: one complete request."""
    return head_limit(settings) + settings.max_http_body


@dataclass(slots=True)  # a value; not frozen: see .actions
class Upgrade:
    """A completed WebSocket handshake, for the session to continue with.

    The 101 response and the :class:`Subscribe` action have been emitted already.
    ``trailing`` holds bytes the client sent after its request (frames it did not wait
    to send); ``eof`` says the client closed its side after them. ``access`` is what the
    client's token (or the lack of one) allows; ``publish_until`` is when publishing with
    it ends, on the session's clock (``None``: never); ``deflate`` whether its messages
    may come compressed (permessage-deflate agreed). Nothing of wsproto is kept: the
    WebSocket phase reads frames with its own :class:`~.frames.FrameReader`.
    """

    channel: str | None
    """The channel subscribed; None for a ``ringcast.v1`` client (``commands``)."""
    trailing: bytes
    eof: bool
    access: Access
    publish_until: float | None
    deflate: bool
    commands: Commands | None = None
    """A ``ringcast.v1`` client's commands (see :mod:`.ringcast_v1`); None: a raw one."""


class Route(Enum):
    """What a request asks for."""

    UPGRADE = "upgrade"
    PUBLISH = "publish"
    PUBLISH_BATCH = "publish batch"
    QUERY = "query"


@dataclass(slots=True)
class _Request:
    """The request being read (its head has arrived, its body may still be coming), or
    answered. ``event`` is None for a request the fast path read (its answer is written
    without h11)."""

    event: h11.Request | None
    route: Route
    path: str
    channel: str = ""
    text: bool = False
    body: list[bytes] | None = None
    body_size: int = 0
    grant: Grant | None = None  # a batch's token, to check each channel against
    batch: list[Message] | None = None  # a batch's messages, once read


class HttpPhase:
    """Everything that happens on a connection before the WebSocket opens.

    Methods append actions to ``out``; they never raise on bad input. The session owns
    one of these until :attr:`upgrade` is set or a :class:`CloseConnection` is emitted.
    """

    __slots__ = (
        "_answer_owed",
        "_deadline",
        "_eof",
        "_guard",
        "_h11",
        "_head",
        "_held",
        "_now",
        "_proxy",
        "_proxy_header",
        "_request",
        "_served",
        "_settings",
        "_started",
        "_unix_offset",
        "upgrade",
    )

    def __init__(
        self, settings: ProtocolSettings, now: float, unix_offset: float | None = None,
        proxy: str | None = None,
    ) -> None:
        """``proxy``: the TCP peer's address, when it is one of ``trusted_proxies``."""
        self._settings = settings
        self._proxy = proxy
        # With proxy_protocol, a proxy's bytes before its PROXY header is read (None:
        # read, or not expected).
        self._proxy_header: bytearray | None = (
            bytearray() if proxy is not None and settings.proxy_protocol else None)
        # h11 and the head guard read a request the fast path leaves to them: made for
        # it, dropped once they hold nothing (see _h11_done).
        self._h11: h11.Connection | None = None
        self._guard: HeadGuard | None = None
        self._now = now
        self._unix_offset = unix_offset
        self._deadline: float | None = now + settings.handshake_timeout
        self._request: _Request | None = None
        self._answer_owed: _Request | None = None
        self._held: bytearray | None = None  # bytes received while an answer is owed
        self._eof = False
        self._head = False  # the current request is a HEAD: responses carry no body
        self._served = False  # an answer was sent: the connection was used
        self._started = False  # bytes of the current request have arrived
        #: Set when a WebSocket handshake succeeded; the HTTP phase is then over.
        self.upgrade: Upgrade | None = None

    # -- driven by the session ---------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self._deadline

    def tick(self, now: float, out: list[Action]) -> None:
        self._now = now
        if self._deadline is not None and now >= self._deadline:
            if self._started or not self._served:  # not just an idle keep-alive connection
                timeout = self._settings.handshake_timeout
                detail = f"no complete request within {timeout:g} seconds"
                out.append(Refused(Refusal.HANDSHAKE_TIMEOUT, 0, detail))
            out.append(CloseConnection(Ended.TIMEOUT))

    def receive_data(self, data: bytes, now: float, out: list[Action]) -> None:
        self._now = now
        if self._eof:
            return  # nothing can follow end of file; ignore a confused caller
        if not data:
            self._eof = True
        if self._proxy_header is not None:
            data = self._read_proxy_header(data, out)
            if self._proxy_header is not None or not (data or self._eof):
                return
        if self._answer_owed is not None:
            self._hold(data, out)
            return
        if not self._serve_whole(data, out):
            self._read(data, out)

    def _read_proxy_header(self, data: bytes, out: list[Action]) -> bytes:
        """Take the PROXY protocol header off the start of the connection: the bytes after
        it (none while it is incomplete, or once refused)."""
        buffered = self._proxy_header
        assert buffered is not None
        buffered += data
        try:
            header = read_proxy_header(bytes(buffered))
        except ProxyHeaderError as exc:
            self._proxy_header = None
            self._fail(Refusal.BAD_PROXY_HEADER, 400, str(exc), out)
            return b""
        if header is None:
            if self._eof:  # closed before the header was whole
                self._proxy_header = None
                out.append(CloseConnection(Ended.PEER_CLOSED))
            return b""
        self._proxy_header = None
        assert self._proxy is not None
        out.append(ClientAddress(header.source or self._proxy, of_connection=True))
        return bytes(buffered[header.length:])

    def _forwarded(self, request: fast_path.Plain | h11.Request, of_connection: bool,
                   out: list[Action]) -> None:
        """Name the client a trusted proxy forwards in ``request``'s ``X-Forwarded-For``,
        unless a PROXY header named it already. (Its headers are read only then: nobody
        else's request pays for it.)"""
        if self._proxy is None or self._settings.proxy_protocol:
            return
        values = (request.forwarded_for if isinstance(request, fast_path.Plain)
                  else _headers(request.headers, b"x-forwarded-for"))
        client = forwarded_client(self._proxy, values, self._settings.proxies)
        out.append(ClientAddress(client, of_connection))

    def _serve_whole(self, data: bytes, out: list[Action]) -> bool:
        """Serve ``data`` if it is one whole plain handshake or publish, in fewer steps
        than :meth:`_read` takes to the same answer (the first bytes of almost every
        connection in a storm, and a publisher's requests); False, nothing done, for
        anything else."""
        settings = self._settings
        if self._h11 is not None or not settings.fast_path or self._proxy is not None:
            return False  # (a proxy's requests name their client: read by read_plain)
        start = data[:5]
        if start == b"GET /":
            accepted = fast_path.read_upgrade(data, settings, self._unix_now())
            if accepted is None:
                return False
            self._upgraded(accepted.channel, accepted.response, accepted.access,
                           accepted.deflate, trailing=b"", eof=False, out=out,
                           commands=self._commands(accepted))
            return True
        if start == b"POST ":
            read = fast_path.read_publish(data, settings)
            if read is None:
                return False
            publish, body = read
            out.append(HttpPublish(publish.channel, body, publish.text))
            self._owe(_Request(None, Route.PUBLISH, _PUBLISH_PREFIX + publish.channel,
                               publish.channel, publish.text))
            return True
        return False

    def _hold(self, data: bytes, out: list[Action]) -> None:
        """Keep bytes that arrive while an answer is owed (at most one request's worth)."""
        if self._held is None:
            self._held = bytearray()
        self._held += data
        max_held = held_limit(self._settings)
        if len(self._held) > max_held:
            detail = f"more than {max_held} bytes sent while an answer was owed"
            out.append(Refused(Refusal.PIPELINE_OVERFLOW, 0, detail))
            out.append(CloseConnection(Ended.REFUSED))

    def _read(self, data: bytes, out: list[Action]) -> None:
        """Serve the requests in ``data``: on the fast path while h11 holds nothing and
        they are plain, through h11 from the first one that is not."""
        if self._h11 is None and self._settings.fast_path:
            rest = self._read_fast(data, out)
            if rest is None:
                return
            data = rest
        if self._h11 is None:
            self._h11 = h11.Connection(h11.SERVER,
                                       max_incomplete_event_size=head_limit(self._settings))
            settings = self._settings
            self._guard = HeadGuard(
                settings.max_request_line, settings.max_header_size, settings.max_headers
            )
        if self._feed(data, out):
            self._parse(out)

    def _read_fast(self, data: bytes, out: list[Action]) -> bytes | None:
        """Serve the plain requests at the start of ``data``; return the bytes left for
        h11, or None when there are none (or the phase is over: upgraded, closed)."""
        pos = 0
        while True:
            if pos == len(data):
                if self._eof:  # the client closed between requests
                    out.append(CloseConnection(Ended.PEER_CLOSED))
                return None
            rest = data[pos:] if pos else data
            plain = fast_path.read_plain(rest, self._settings)
            if plain is None or not self._serve_plain(plain, rest[plain.end:], out):
                return rest
            pos += plain.end
            if self.upgrade is not None:
                return None
            if self._answer_owed is not None:
                if pos < len(data):
                    self._hold(data[pos:], out)
                return None

    def _serve_plain(self, plain: fast_path.Plain, after: bytes, out: list[Action]) -> bool:
        """Decide a plain request on the fast path; False (and nothing done) to leave it
        to h11."""
        settings = self._settings
        if plain.upgrade_ready or (plain.method == b"GET" and b"upgrade" in plain.fields):
            accepted = fast_path.check_upgrade(settings, plain, self._unix_now())
            if accepted is None:
                return False
            self._forwarded(plain, True, out)
            self._upgraded(accepted.channel, accepted.response, accepted.access,
                           accepted.deflate, trailing=after, eof=self._eof, out=out,
                           commands=self._commands(accepted))
            return True
        query = fast_path.check_query(settings, plain)
        if query is not None:
            self._forwarded(plain, False, out)
            out.append(HttpQuery(query))
            self._owe(_Request(None, Route.QUERY, query))
            return True
        if plain.path == _BATCH_PATH:
            batch = fast_path.check_batch(settings, plain, self._unix_now())
            if batch is None:
                return False
            self._forwarded(plain, False, out)
            out.append(HttpPublishBatch(tuple(batch)))
            self._owe(_Request(None, Route.PUBLISH_BATCH, plain.path, batch=batch))
            return True
        publish = fast_path.check_publish(settings, plain, self._unix_now())
        if publish is None:
            return False
        self._forwarded(plain, False, out)
        out.append(HttpPublish(publish.channel, plain.body, publish.text))
        self._owe(_Request(None, Route.PUBLISH, plain.path, publish.channel, publish.text))
        return True

    def _owe(self, request: _Request) -> None:
        """The runtime's turn to answer ``request``: no timeout while it works."""
        self._answer_owed = request
        self._deadline = None

    def _feed(self, data: bytes, out: list[Action]) -> bool:
        """Give bytes to the head guard and h11; False when a head limit refused them."""
        assert self._h11 is not None and self._guard is not None
        if data:
            self._started = True
            try:
                self._guard.feed(data)
            except HeadLimitError as exc:
                self._fail(exc.refusal, exc.status, str(exc), out)
                return False
        self._h11.receive_data(data)
        return True

    @property
    def now(self) -> float:
        """The last time the session was given."""
        return self._now

    @property
    def owed(self) -> Route | None:
        """The kind of request the runtime owes an answer to (``PUBLISH`` or ``QUERY``)."""
        return None if self._answer_owed is None else self._answer_owed.route

    def publish_done(self, reached: int, position: tuple[str, int] | None,
                     out: list[Action]) -> None:
        """200 with ``{"channel": ..., "subscribers": reached}`` (and the ``position``'s
        ``"epoch"`` and ``"offset"``) for the owed publish."""
        request = self._take_owed()
        # JSON by hand: a channel name never needs escaping (see .channels), nor an
        # epoch (URL-safe base64).
        if position is None:
            body = b'{"channel":"%s","subscribers":%d}' % (request.channel.encode(), reached)
        else:
            body = b'{"channel":"%s","subscribers":%d,"epoch":"%s","offset":%d}' % (
                request.channel.encode(), reached, position[0].encode(), position[1])
        self._answer(request, 200, b"application/json", body, out)

    def publish_batch_done(self, results: list[Result], out: list[Action]) -> None:
        """200 with ``{"results": [...]}`` for the owed batch."""
        request = self._take_owed()
        assert request.batch is not None
        body = results_body(request.batch, results)
        self._answer(request, 200, b"application/json", body, out)

    def publish_refused(self, status: int, reason: str, out: list[Action]) -> None:
        """An error response (``reason`` as the body) for the owed publish."""
        request = self._take_owed()
        self._answer(request, status, b"text/plain; charset=utf-8", reason.encode(), out)

    def respond(self, status: int, content_type: str, body: bytes, out: list[Action]) -> None:
        """The response to the owed query."""
        request = self._take_owed()
        self._answer(request, status, content_type.encode(), body, out)

    def _take_owed(self) -> _Request:
        request = self._answer_owed
        assert request is not None  # the session checked self.owed
        self._answer_owed = None
        return request

    def _answer(
        self, request: _Request, status: int, content_type: bytes, body: bytes,
        out: list[Action]
    ) -> None:
        """Send the owed response, then serve the next request if the connection lives."""
        keep_alive = status < 400
        conn = self._h11
        if request.event is None:  # read on the fast path: no h11 to tell
            out.append(SendBytes(fast_path.response(status, content_type, body, keep_alive)))
            if not keep_alive:
                out.append(CloseConnection(_ended_after(status)))
                return
            self._next_request()
            held = self._held
            self._held = None
            if held or self._eof:
                self._read(bytes(held or b""), out)
            return
        assert conn is not None
        out.append(SendBytes(self._response(status, content_type, body, keep_alive)))
        if not keep_alive or conn.our_state is not h11.DONE:
            out.append(CloseConnection(_ended_after(status)))  # an error, or the client asked
            return
        conn.start_next_cycle()
        self._next_request()
        held = self._held
        self._held = None
        pending = conn.trailing_data[0]
        if not pending and not self._eof:
            # h11 holds nothing of the next request: the fast path may read it.
            self._h11 = self._guard = None
            if held:
                self._read(bytes(held), out)
            return
        # The next head starts with what h11 holds beyond the request just answered.
        assert self._guard is not None
        self._guard.start()
        if pending:
            self._started = True
            try:
                self._guard.feed(pending)
            except HeadLimitError as exc:
                self._fail(exc.refusal, exc.status, str(exc), out)
                return
        if held and not self._feed(bytes(held), out):
            return
        if self._eof:
            conn.receive_data(b"")
        self._parse(out)

    def _next_request(self) -> None:
        """An answer went out and the connection stays: wait for the next request."""
        self._head = False
        self._served = True
        self._started = False
        self._deadline = self._now + self._settings.handshake_timeout

    def internal_error(self, out: list[Action]) -> None:
        """Answer 500 after an unexpected exception, whatever state h11 is in."""
        body = b"internal server error"
        out.append(
            SendBytes(
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8"
                b"\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            )
        )
        out.append(CloseConnection(Ended.INTERNAL_ERROR))

    # -- parsing -----------------------------------------------------------------------

    def _parse(self, out: list[Action]) -> None:
        """Turn buffered bytes into events until a request is complete or data runs out."""
        conn = self._h11
        assert conn is not None
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if self._eof:
                    out.append(CloseConnection(Ended.PEER_CLOSED))  # cut off mid-request
                elif exc.error_status_hint == 431:  # the backstop behind the head guard
                    message = f"request head exceeds {head_limit(self._settings)} bytes"
                    self._fail(Refusal.HEADERS_TOO_LARGE, 431, message, out)
                else:
                    message = _quote_h11_error(exc)
                    self._fail(Refusal.MALFORMED_REQUEST, exc.error_status_hint, message, out)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                if not self._start_request(event, out):
                    return
            elif isinstance(event, h11.Data):
                if not self._body_data(event.data, out):
                    return
            elif isinstance(event, h11.EndOfMessage):
                self._complete_request(out)
                return
            else:  # ConnectionClosed
                out.append(CloseConnection(Ended.PEER_CLOSED))
                return

    def _start_request(self, event: h11.Request, out: list[Action]) -> bool:
        """Route a request head; False when it was refused (and the connection closes)."""
        settings = self._settings
        method = event.method
        self._head = method == b"HEAD"
        path = fast_path.unprefixed(event.target.decode("latin-1").partition("?")[0],
                                    settings.path_prefix)
        is_get = method in (b"GET", b"HEAD")
        if method == b"GET" and _has_token(event.headers, b"upgrade", b"websocket"):
            request = _Request(event, Route.UPGRADE, path)
        elif path in (_HEALTHZ, CLIENT_SCRIPT) or (
                path == _METRICS and settings.metrics_enabled) or (
                path in STATUS_PAGES and settings.status_enabled):
            if not is_get:
                self._fail(
                    Refusal.METHOD_NOT_ALLOWED,
                    405,
                    f"{path} allows GET and HEAD",
                    out,
                    [(b"allow", b"GET, HEAD")],
                )
                return False
            if path in STATUS_PAGES and self._status_viewer(event, False, out) is None:
                return False
            request = _Request(event, Route.QUERY, path)
        elif settings.http_enabled and path == _BATCH_PATH:
            if method != b"POST":
                self._fail(Refusal.METHOD_NOT_ALLOWED, 405, "/publish allows POST", out,
                           [(b"allow", b"POST")])
                return False
            allowed, grant = self._publisher(event, out)
            if not allowed:
                return False
            request = _Request(event, Route.PUBLISH_BATCH, path, body=[], grant=grant)
        elif settings.http_enabled and path.startswith(_PUBLISH_PREFIX):
            if method != b"POST":
                self._fail(
                    Refusal.METHOD_NOT_ALLOWED,
                    405,
                    "/publish/<channel> allows POST",
                    out,
                    [(b"allow", b"POST")],
                )
                return False
            channel = self._publish_channel(event, path[len(_PUBLISH_PREFIX) :], out)
            if channel is None:
                return False
            text = fast_path.is_text(_header(event.headers, b"content-type") or b"")
            request = _Request(event, Route.PUBLISH, path, channel, text, [])
        elif is_get and path != _METRICS and _is_channel_path(path, settings):
            # A browser or curl opening a channel's URL: say what it takes (RFC 9110
            # section 15.5.22: a 426 names the protocol to upgrade to).
            self._fail(Refusal.BAD_HANDSHAKE, 426,
                       f"{path[:_REASON_MAX]} is a WebSocket channel: connect with a WebSocket "
                       "client (GET with Upgrade: websocket)", out,
                       [(b"upgrade", b"websocket"), (b"connection", b"Upgrade")])
            return False
        else:
            self._fail(Refusal.NOT_FOUND, 404, f"no route for {path[:_REASON_MAX]!r}", out)
            return False

        if (
            _header(event.headers, b"transfer-encoding") is not None
            and _header(event.headers, b"content-length") is not None
        ):
            # RFC 9112 section 6.1: a server may reject such a request and must close the
            # connection after answering it, or a proxy that framed it the other way
            # could smuggle a second request in its body.
            message = "a request may not have both Transfer-Encoding and Content-Length"
            self._fail(Refusal.MALFORMED_REQUEST, 400, message, out)
            return False
        length = _content_length(event.headers)
        limit = settings.max_http_body
        if length > limit:
            message = f"request body is {length} bytes, at most {limit} allowed"
            self._fail(Refusal.BODY_TOO_LARGE, 413, message, out)
            return False
        self._request = request
        conn = self._h11
        assert conn is not None
        if conn.they_are_waiting_for_100_continue:
            out.append(SendBytes(conn.send(h11.InformationalResponse(status_code=100, headers=[]))))
        return True

    def _publish_channel(self, event: h11.Request, name: str, out: list[Action]) -> str | None:
        """Check who posts to ``/publish/<name>``: the channel, or None once refused.

        Order: origin (403), token (400/401), channel name (400), what the token allows
        (403), so an unauthenticated client learns nothing about channel names.
        """
        allowed, grant = self._publisher(event, out)
        if not allowed:
            return None
        auth = self._settings.authenticator
        try:
            channel = validate_channel(name, self._settings.max_channel_name)
        except ChannelNameError as exc:
            self._fail(Refusal.BAD_CHANNEL, 400, str(exc), out)
            return None
        try:
            auth.check_http_publish(grant, channel)
        except AuthError as exc:
            self._refuse_credentials(exc, out)
            return None
        return channel

    def _publisher(self, event: h11.Request, out: list[Action]) -> tuple[bool, Grant | None]:
        """Check who publishes: the origin (403), then the token (400/401). ``(True, its
        grant)`` (None without a token), or ``(False, None)`` once refused."""
        if not self._origin_allowed(event.headers, out):
            return False, None
        auth = self._settings.authenticator
        try:
            _, grant = self._authenticate(
                event,
                websocket=False,
                required=auth.publish_configured,
                action="publishing ('Authorization: Bearer <token>')",
            )
        except AuthError as exc:
            self._refuse_credentials(exc, out)
            return False, None
        return True, grant

    def _body_data(self, data: bytes, out: list[Action]) -> bool:
        request = self._request
        assert request is not None
        request.body_size += len(data)
        if request.body_size > self._settings.max_http_body:
            message = f"request body exceeds {self._settings.max_http_body} bytes"
            self._fail(Refusal.BODY_TOO_LARGE, 413, message, out)
            return False
        if request.body is not None:
            request.body.append(data)
        return True

    def _complete_request(self, out: list[Action]) -> None:
        request = self._request
        assert request is not None
        self._request = None
        if request.route is Route.UPGRADE:
            self._upgrade(request, out)
            return
        event = request.event
        assert event is not None
        if request.route is Route.QUERY:
            self._forwarded(event, False, out)
            out.append(HttpQuery(request.path))
        elif request.route is Route.PUBLISH_BATCH:
            try:
                request.batch = read_batch(b"".join(request.body or ()), self._settings,
                                           request.grant)
            except BatchError as exc:
                self._fail(exc.refusal, exc.status, str(exc), out)
                return
            self._forwarded(event, False, out)
            out.append(HttpPublishBatch(tuple(request.batch)))
        else:
            payload = b"".join(request.body or ())
            if request.text and not _is_utf8(payload):
                message = "a text/* or application/json body must be UTF-8"
                self._fail(Refusal.MALFORMED_REQUEST, 400, message, out)
                return
            self._forwarded(event, False, out)
            out.append(HttpPublish(request.channel, payload, request.text))
        self._owe(request)

    def _upgrade(self, request: _Request, out: list[Action]) -> None:
        """The opening handshake, RFC 6455 section 4.2.2, on a complete GET."""
        event = request.event
        assert event is not None
        if event.http_version != b"1.1":
            message = "the WebSocket handshake needs HTTP/1.1"
            self._fail(Refusal.BAD_HANDSHAKE, 400, message, out)
            return
        status = request.path == STATUS_LIVE and self._settings.status_enabled
        v1 = not status and _offers(event.headers, SUBPROTOCOL_V1)
        channel: str | None
        if status:
            channel = STATUS_CHANNEL  # the status page's own origin may be anything
        else:
            if not self._origin_allowed(event.headers, out):
                return
            try:
                channel = None if v1 and request.path == "/" else validate_channel(
                    request.path[1:], self._settings.max_channel_name)
            except ChannelNameError as exc:
                self._fail(Refusal.BAD_CHANNEL, 400, str(exc), out)
                return
        handshake = H11Handshake(ConnectionType.SERVER)
        try:
            # wsproto checks Connection, Upgrade, Sec-WebSocket-Version/-Key and Host.
            handshake.initiate_upgrade_connection(list(event.headers), event.target)
        except WsRemoteProtocolError as exc:
            hint = exc.event_hint  # wsproto's suggested status (400 or 426) and headers
            reject = hint if isinstance(hint, RejectConnection) else RejectConnection()
            self._fail(Refusal.BAD_HANDSHAKE, reject.status_code, str(exc), out, reject.headers)
            return
        except (WsProtocolError, h11.ProtocolError, ValueError):
            # wsproto decodes Host as IDNA (the target is a valid channel by now, so
            # ASCII), then rebuilds the request with h11, which may object too.
            message = "the Host header is not a valid host name"
            self._fail(Refusal.BAD_HANDSHAKE, 400, message, out)
            return
        if not _valid_key(_header(event.headers, b"sec-websocket-key")):
            message = "Sec-WebSocket-Key must be 16 bytes encoded in base64"
            self._fail(Refusal.BAD_HANDSHAKE, 400, message, out)
            return
        auth = self._settings.authenticator
        commands = None
        if status:
            viewer = self._status_viewer(event, True, out)
            if viewer is None:
                return
            credentials, access = viewer, _STATUS_ACCESS
        else:
            try:
                credentials, grant = self._authenticate(
                    event, websocket=True, required=auth.require_subscribe,
                    action="subscribing")
                access = V1_ACCESS if channel is None else auth.subscriber_access(grant, channel)
            except AuthError as exc:
                if v1:
                    self._refuse_v1(exc, handshake, out)
                else:
                    self._refuse_credentials(exc, out)
                return
            if v1:
                commands = Commands(self._settings, grant, self._unix_offset)
                access = V1_ACCESS  # what it may publish is decided per command
        # The only extension is permessage-deflate, negotiated by .deflate (so both
        # paths agree) and answered as an extra header: wsproto's own would compress per
        # connection. The only subprotocol ever selected is "ringcast", when offered
        # (see .credentials).
        deflate = None
        offers = _headers(event.headers, b"sec-websocket-extensions")
        if offers and self._settings.compression:
            deflate = negotiate(", ".join(v.decode("latin-1") for v in offers))
        extra = [] if deflate is None else [(fast_path.EXTENSIONS_HEADER,
                                              deflate.response.encode("ascii"))]
        response = handshake.send(AcceptConnection(subprotocol=credentials.subprotocol,
                                                   extra_headers=extra))
        assert self._h11 is not None
        trailing, eof = self._h11.trailing_data
        self._forwarded(event, True, out)
        self._upgraded(channel, response, access, deflate, trailing=trailing,
                       eof=eof or self._eof, out=out, commands=commands)

    def _upgraded(self, channel: str | None, response: bytes, access: Access,
                  deflate: Agreement | None, *, trailing: bytes, eof: bool,
                  out: list[Action], commands: Commands | None = None) -> None:
        """The handshake succeeded (on either path): the 101, the subscription, and the
        WebSocket phase's turn. ``commands``: a ``ringcast.v1`` client's (``channel``,
        if any, the one its path named)."""
        # One copy of each channel name, however many subscribers it has.
        channel = None if channel is None else sys.intern(channel)
        out.append(SendBytes(response))
        window_bits = 0 if deflate is None else deflate.window_bits
        if commands is not None:
            out.append(OpenedV1(window_bits))
            if channel is not None:
                commands.join(channel, out)
        else:
            assert channel is not None
            out.append(Subscribe(channel, window_bits))
        self._deadline = None
        publish_until = None
        if access.publish_expires is not None:
            publish_until = access.publish_expires - (self._unix_offset or 0.0)
        self.upgrade = Upgrade(channel, trailing, eof, access, publish_until,
                               deflate is not None, commands)

    # -- checks ------------------------------------------------------------------------

    def _authenticate(
        self, event: h11.Request, *, websocket: bool, required: bool, action: str
    ) -> tuple[Credentials, Grant | None]:
        """The request's credentials and what its token grants; raises AuthError."""
        auth = self._settings.authenticator
        credentials = read_credentials(
            event.headers, event.target, websocket=websocket, tokens=auth.enabled
        )
        grant = auth.authenticate(
            credentials.token, self._unix_now(), required=required, action=action
        )
        return credentials, grant

    def _status_viewer(
        self, event: h11.Request, websocket: bool, out: list[Action]
    ) -> Credentials | None:
        """The credentials of a request for the status page if it may be shown: to anyone
        when publishing needs no token, else to a token that may publish (``?token=`` too,
        so a browser can open it). None once refused (401/403)."""
        auth = self._settings.authenticator
        try:
            credentials, grant = self._authenticate(event, websocket=websocket,
                                                    required=auth.publish_configured,
                                                    action="the status page")
            auth.check_status_viewer(grant)
        except AuthError as exc:
            self._refuse_credentials(exc, out)
            return None
        return credentials

    def _unix_now(self) -> float | None:
        """Unix time now, if the runtime gave the session its clock's offset."""
        return None if self._unix_offset is None else self._now + self._unix_offset

    def _origin_allowed(self, headers: Iterable[tuple[bytes, bytes]], out: list[Action]) -> bool:
        """Whether a browser's ``Origin`` is allowed; refuses with 403 when not.

        A request without ``Origin`` is not from a browser page and passes; two ``Origin``
        headers never pass.
        """
        policy = self._settings.origins
        if policy.allows_any:
            return True
        origins = [value for name, value in headers if name == b"origin"]
        if not origins:
            return True
        origin = origins[0].decode("latin-1")
        if len(origins) == 1 and policy.allows(origin):
            return True
        message = f"origin {origin[:_REASON_MAX]!r} is not allowed"
        self._fail(Refusal.ORIGIN_NOT_ALLOWED, 403, message, out)
        return False

    def _commands(self, accepted: fast_path.PlainUpgrade) -> Commands | None:
        """A ``ringcast.v1`` client's commands (None for a raw client)."""
        if not accepted.v1:
            return None
        return Commands(self._settings, accepted.grant, self._unix_offset)

    def _refuse_v1(self, error: AuthError, handshake: H11Handshake, out: list[Action]) -> None:
        """Refuse a ``ringcast.v1`` client's credentials (or its path's channel) so that a
        browser can read why: accept the WebSocket, then close it at once with 1008 and
        the reason (a refused handshake shows a page's script only code 1006)."""
        reason = str(error)
        out.append(Refused(error.refusal, CloseCode.POLICY_VIOLATION, reason))
        out.append(SendBytes(handshake.send(AcceptConnection(subprotocol=SUBPROTOCOL_V1))))
        out.append(SendBytes(close_frame(CloseCode.POLICY_VIOLATION, reason)))
        out.append(CloseConnection(Ended.REFUSED))

    def _refuse_credentials(self, error: AuthError, out: list[Action]) -> None:
        challenge = [(b"www-authenticate", error.challenge)]
        self._fail(error.refusal, error.status, str(error), out, challenge)

    # -- responses ---------------------------------------------------------------------

    def _fail(
        self,
        refusal: Refusal,
        status: int,
        reason: str,
        out: list[Action],
        extra_headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        """Refuse: emit :class:`Refused`, answer ``status`` with ``reason`` as the body,
        then close."""
        out.append(Refused(refusal, status, reason))
        body = reason.encode()
        try:
            if self._h11 is None and not extra_headers:  # before any request (a PROXY header)
                data = fast_path.response(status, b"text/plain; charset=utf-8", body, False)
            else:
                data = self._response(status, b"text/plain; charset=utf-8", body, False,
                                      extra_headers)
        except h11.LocalProtocolError:
            data = b""  # h11 cannot send a response in this state: just close
        if data:
            out.append(SendBytes(data))
        out.append(CloseConnection(Ended.REFUSED))

    def _response(
        self,
        status: int,
        content_type: bytes,
        body: bytes,
        keep_alive: bool,
        extra_headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> bytes:
        headers = [
            (b"content-type", content_type),
            (b"content-length", b"%d" % len(body)),
            *extra_headers,
        ]
        if not keep_alive:
            headers.append((b"connection", b"close"))
        try:
            phrase = HTTPStatus(status).phrase.encode()
        except ValueError:
            phrase = b""
        conn = self._h11
        assert conn is not None
        parts = [conn.send(h11.Response(status_code=status, headers=headers, reason=phrase))]
        if body and conn.our_state is h11.SEND_BODY and not self._head:
            parts.append(conn.send(h11.Data(data=body)))
        parts.append(conn.send(h11.EndOfMessage()))
        return b"".join(parts)


def _ended_after(status: int) -> Ended:
    """Why a connection closed after an answer with ``status``: an error refused something,
    else it was done (``Connection: close``, HTTP/1.0)."""
    return Ended.REFUSED if status >= 400 else Ended.HTTP_DONE


def _is_channel_path(path: str, settings: ProtocolSettings) -> bool:
    """Is ``path`` ``/<channel>``, a path a subscriber could open?"""
    try:
        validate_channel(path[1:], settings.max_channel_name)
    except ChannelNameError:
        return False
    return path.startswith("/")


def _offers(headers: Iterable[tuple[bytes, bytes]], subprotocol: str) -> bool:
    """Does the request offer ``subprotocol`` in Sec-WebSocket-Protocol?"""
    wanted = subprotocol.encode()
    return any(name == b"sec-websocket-protocol"
               and any(p.strip() == wanted for p in value.split(b","))
               for name, value in headers)


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header ``name`` (h11 gives names in lower case)."""
    for key, value in headers:
        if key == name:
            return value
    return None


def _headers(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """Every value of header ``name``, in order."""
    return [value for key, value in headers if key == name]


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """The announced body length, 0 when absent.

    h11 has checked the value: digits only, one value, at most 20 digits (since 0.16).
    """
    value = _header(headers, b"content-length")
    return 0 if value is None else int(value)


def check_status(status: int) -> None:
    """Raise :exc:`ValueError` unless ``status`` is a final status code (200-599)."""
    if not 200 <= status <= 599:
        msg = f"status is {status}, expected 200 to 599"
        raise ValueError(msg)


def _has_token(headers: Iterable[tuple[bytes, bytes]], name: bytes, token: bytes) -> bool:
    """Whether a comma-separated header ``name`` lists ``token`` (case-insensitive)."""
    return any(
        key == name and token in (part.strip().lower() for part in value.split(b","))
        for key, value in headers
    )


def _valid_key(key: bytes | None) -> bool:
    """RFC 6455 section 4.1: the key is 16 random bytes, base64-encoded (24 characters)."""
    if key is None or len(key) != 24:
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        return False


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _quote_h11_error(exc: h11.RemoteProtocolError) -> str:
    detail = str(exc)
    if len(detail) > _REASON_MAX:
        detail = detail[:_REASON_MAX] + "..."
    return f"malformed HTTP request: {detail}"
