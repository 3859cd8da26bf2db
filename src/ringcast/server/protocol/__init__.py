"""The sans-I/O protocol core of the server: bytes and time in, actions out.

Nothing here touches a socket, a clock or ``ringcast.ringio``; the runtime does. Modules:

- :mod:`.session`: :class:`Session`, one per TCP connection, and its contract.
- :mod:`.actions`: what a session asks the runtime to do.
- :mod:`.refusals`: :class:`Refusal`, why a session refused a client (metric labels).
- :mod:`.settings`: :class:`ProtocolSettings`, the limits and switches.
- :mod:`.auth`: static tokens and JWTs, and what they allow; :mod:`.credentials`: where a
  request's token comes from.
- :mod:`.origins`: the browser origin allow-list.
- :mod:`.head_limits`: request line and header limits; :mod:`.ratelimit`: the inbound
  message rate limit.
- :mod:`.http_phase`: HTTP requests, the opening handshake and the HTTP API (h11, wsproto).
- :mod:`.websocket_phase`: messages, keepalive and closing, once the WebSocket is open.
- :mod:`.frames`: WebSocket frames, read and written by wsproto (a reader exists only
  while a frame is in progress); the close codes.
- :mod:`.channels`: channel name rules.
"""

from __future__ import annotations

from .actions import (
    Action,
    ClientAddress,
    CloseConnection,
    Ended,
    HttpPublish,
    HttpPublishBatch,
    HttpQuery,
    Publish,
    Refused,
    SendBytes,
    Subscribe,
)
from .channels import validate_channel
from .frames import CloseCode, close_frame, data_frame
from .refusals import Refusal, error_response
from .session import Session, SessionState
from .settings import ProtocolSettings

__all__ = [
    "Action",
    "ClientAddress",
    "CloseCode",
    "CloseConnection",
    "Ended",
    "HttpPublish",
    "HttpPublishBatch",
    "HttpQuery",
    "ProtocolSettings",
    "Publish",
    "Refusal",
    "Refused",
    "SendBytes",
    "Session",
    "SessionState",
    "Subscribe",
    "close_frame",
    "data_frame",
    "error_response",
    "validate_channel",
]
