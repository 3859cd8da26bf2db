"""The sans-I/O protocol core of the server: bytes and time in, actions out.

Nothing here touches a socket, a clock or ``ringcast.ringio``; the runtime does. Modules:

- :mod:`.session`: :class:`Session`, one per TCP connection, and its contract.
- :mod:`.actions`: what a session asks the runtime to do.
- :mod:`.settings`: :class:`ProtocolSettings`, the limits and switches.
- :mod:`.http_phase`: HTTP requests, the opening handshake and the HTTP API (h11, wsproto).
- :mod:`.websocket_phase`: frames, messages, keepalive and closing (wsproto).
- :mod:`.message_size`: the message size limit, enforced from frame headers.
- :mod:`.channels`: channel name rules.
- :mod:`.framing`: server frame encoding for the fan-out path.
"""

from __future__ import annotations

from .actions import (
    Action,
    CloseConnection,
    HttpPublish,
    HttpQuery,
    Publish,
    SendBytes,
    Subscribe,
)
from .channels import validate_channel
from .framing import BINARY, TEXT, encode_frame, encode_frames, frame_header
from .session import Session, SessionState
from .settings import ProtocolSettings

__all__ = [
    "BINARY",
    "TEXT",
    "Action",
    "CloseConnection",
    "HttpPublish",
    "HttpQuery",
    "ProtocolSettings",
    "Publish",
    "SendBytes",
    "Session",
    "SessionState",
    "Subscribe",
    "encode_frame",
    "encode_frames",
    "frame_header",
    "validate_channel",
]
