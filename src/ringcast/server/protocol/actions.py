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
from typing import final

from .batch import Message
from .refusals import Refusal

__all__ = [
    "Action",
    "CloseConnection",
    "HttpPublish",
    "HttpPublishBatch",
    "HttpQuery",
    "Publish",
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
    """Add this connection to ``channel``'s subscribers (the handshake completed)."""

    channel: str


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


@final
@dataclass(slots=True)
class CloseConnection:
    """Close the TCP connection once the bytes sent before this action are flushed."""


Action = (
    SendBytes | Subscribe | Publish | HttpPublish | HttpPublishBatch | HttpQuery | Refused
    | CloseConnection
)
"""Any of the actions above."""
