"""What a :class:`~ringcast.server.protocol.session.Session` asks its runtime to do.

Every ``Session`` method returns a list of these. The runtime executes them in list
order; order matters (a ``Subscribe`` follows the ``SendBytes`` of the 101 response, a
``CloseConnection`` follows the bytes to flush first). Nothing follows a
``CloseConnection``. A :class:`Refused` comes right before the answer it explains.

Actions are values: nothing changes one once made. They are not ``frozen`` dataclasses
only because a frozen one costs about 1.3 µs more to make (``object.__setattr__`` per
field) and every handshake and message makes some.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import final

from .batch import Message
from .refusals import Refusal

__all__ = [
    "Action",
    "ClientAddress",
    "CloseConnection",
    "Ended",
    "HttpPublish",
    "HttpPublishBatch",
    "HttpQuery",
    "Join",
    "Leave",
    "OpenedV1",
    "Publish",
    "PublishCommand",
    "Refused",
    "SendBytes",
    "Subscribe",
]


@final
@dataclass(slots=True)
class SendBytes:
    """Write ``data`` to this connection, after everything written before."""

    data: bytes


@final
@dataclass(slots=True)
class Subscribe:
    """Add this connection to ``channel``'s subscribers (the handshake completed).

    ``window_bits``: it agreed on permessage-deflate, and published messages go to it
    compressed with this window (9 to 15; see :mod:`.deflate`); 0 for none."""

    channel: str
    window_bits: int = 0


@final
@dataclass(slots=True)
class OpenedV1:
    """The handshake of a ``ringcast.v1`` client completed (see :mod:`.ringcast_v1`): it
    subscribes with :class:`Join` actions. ``window_bits`` as for :class:`Subscribe`."""

    window_bits: int = 0


@final
@dataclass(slots=True)
class Join:
    """Subscribe this ``ringcast.v1`` connection to ``channel`` (checked), and send the
    ``subscribed`` reply (:func:`~.ringcast_v1.subscribed_frame`, echoing ``ref``, the
    command's id as JSON; None: none) — preceded by the messages after ``since``
    ((epoch, offset)) when the channel's history has them all."""

    channel: str
    since: tuple[str, int] | None
    ref: bytes | None


@final
@dataclass(slots=True)
class Leave:
    """Unsubscribe this ``ringcast.v1`` connection from ``channel`` (now: nothing
    published later reaches it)."""

    channel: str


@final
@dataclass(slots=True)
class PublishCommand:
    """A ``ringcast.v1`` ``publish`` (checked): publish as :class:`Publish` does (``text``
    likewise), then send the ``published`` reply with the message's position, echoing
    ``ref``."""

    channel: str
    payload: bytes
    text: bool
    ref: bytes | None


@final
@dataclass(slots=True)
class Publish:
    """A complete WebSocket data message from this client, to publish on ``channel``.

    ``text`` is true for a text message (``payload`` is then valid UTF-8) and false for
    a binary one; send it to subscribers with the same opcode. Only emitted when the
    settings allow client publishing.
    """

    channel: str
    payload: bytes
    text: bool


@final
@dataclass(slots=True)
class HttpPublish:
    """A ``POST /publish/<channel>`` request, authorized and read in full.

    ``text`` is true when the Content-Type is ``text/*`` or ``application/json``
    (``payload`` is then valid UTF-8). Answer with
    :meth:`~ringcast.server.protocol.session.Session.publish_done` or
    :meth:`~ringcast.server.protocol.session.Session.publish_refused`.
    """

    channel: str
    payload: bytes
    text: bool


@final
@dataclass(slots=True)
class HttpPublishBatch:
    """A ``POST /publish`` batch (see :mod:`.batch`), authorized and checked in full:
    publish each message in order, then answer with
    :meth:`~ringcast.server.protocol.session.Session.publish_batch_done`."""

    messages: tuple[Message, ...]


@final
@dataclass(slots=True)
class HttpQuery:
    """A ``GET`` of ``path`` (``/healthz`` or ``/metrics``).

    Answer with :meth:`~ringcast.server.protocol.session.Session.respond`.
    """

    path: str


@final
@dataclass(slots=True)
class ClientAddress:
    """A trusted proxy named this connection's client (see :mod:`.client_address`).

    ``of_connection``: the address is the connection's from now on (a PROXY protocol
    header, or the ``X-Forwarded-For`` of a WebSocket handshake, emitted before its 101):
    count it in the per-address limits, and refuse the connection there if it is over
    them. Otherwise it names the client of one HTTP request (a proxy may send many
    clients' requests on one connection): for the logs only.
    """

    address: str
    of_connection: bool


@final
@dataclass(slots=True)
class Refused:
    """The session refused the client; count it (``ringcast_refusals_total{reason}``).

    Emitted once per refusal, before the error response or close frame, which follow as
    ``SendBytes`` and then ``CloseConnection``. Needs no other action: the session sends
    the answer itself.
    """

    reason: Refusal
    """Why, from a fixed set: ``reason.value`` is the metric label."""
    code: int
    """The HTTP status (HTTP phase) or WebSocket close code sent with the refusal; 0 when
    the connection closes without an answer (handshake timeout, pipeline overflow)."""
    detail: str
    """The human-readable explanation (the response body or close reason). It may quote
    client input (a channel name, an origin): log it quoted, never use it as a label."""


class Ended(StrEnum):
    """Why a connection ended: the ``reason`` label of ``ringcast_connections_closed_total``
    (`side` says who ended it)."""

    PEER_CLOSED = "peer_closed"
    """The client's end of TCP closed: between HTTP requests, in the middle of one, or a
    WebSocket without a close frame (1006)."""
    PEER_RESET = "peer_reset"
    """The client's end of TCP reset (the runtime sees it; no session says it)."""
    CLIENT_CLOSE = "client_close"
    """The client started the WebSocket closing handshake."""
    SHUTDOWN = "shutdown"
    """The server is stopping (1001, or an HTTP connection closed by the drain)."""
    SLOW_CONSUMER = "slow_consumer"
    """The server closed a subscriber that fell behind (3008)."""
    PING_TIMEOUT = "ping_timeout"
    """Nothing came back within ``ping_timeout`` of a keepalive ping: closed with 1011."""
    SERVER_CLOSE = "server_close"
    """The server started the WebSocket closing handshake for another reason (a token
    expired: 1008, ...)."""
    REFUSED = "refused"
    """A request, handshake or frame was refused (``ringcast_refusals_total`` says why)."""
    TIMEOUT = "timeout"
    """No complete request in time, an idle keep-alive connection, or a closing handshake
    the client never finished."""
    HTTP_DONE = "http_done"
    """An HTTP connection closed after its answer (``Connection: close``, HTTP/1.0)."""
    NOT_READING = "not_reading"
    """The client sent and did not read: its answers backed up (the runtime decides)."""
    INTERNAL_ERROR = "internal_error"
    """An unexpected exception in the server (500 or 1011)."""

    @property
    def side(self) -> str:
        """``client`` or ``server``: who ended the connection."""
        return "client" if self in _CLIENT_SIDE else "server"

    @classmethod
    def by_server_close(cls, code: int) -> Ended:
        """Why, when the server closes with WebSocket close ``code``."""
        return _BY_CLOSE_CODE.get(code, cls.SERVER_CLOSE)


_CLIENT_SIDE = frozenset({Ended.PEER_CLOSED, Ended.PEER_RESET, Ended.CLIENT_CLOSE})
# Going away; keepalive (the server closes with 1011 for nothing else: an internal error
# ends the connection without a closing handshake); ringcast's slow consumer.
_BY_CLOSE_CODE = {1001: Ended.SHUTDOWN, 1011: Ended.PING_TIMEOUT, 3008: Ended.SLOW_CONSUMER}


@final
@dataclass(slots=True)
class CloseConnection:
    """Close the TCP connection once the bytes sent before this action are flushed."""

    ended: Ended
    """Why (counted by the runtime once the session is gone)."""


Action = (
    SendBytes | Subscribe | OpenedV1 | Join | Leave | Publish | PublishCommand | HttpPublish
    | HttpPublishBatch | HttpQuery | ClientAddress | Refused | CloseConnection
)
"""Any of the actions above."""
