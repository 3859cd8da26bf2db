"""Why a connection was refused: one fixed set of reasons, for metrics and logs.

Whenever a session refuses something (an HTTP error response, or a close frame because
the client broke a rule or a limit), it emits a :class:`~.actions.Refused` action
carrying one of the :class:`Refusal` reasons, right before the bytes of the answer. The
runtime counts them (``ringcast_refusals_total{reason="..."}``): the values are the
label values, few and fixed, so the runtime can create every series at zero up front.

Refusals the runtime decides itself (before a session exists: too many connections in
total or from one address) have reasons here too, so that every refusal shares one label
set; :func:`error_response` builds the HTTP answer for those.
"""

from __future__ import annotations

from enum import StrEnum
from http import HTTPStatus

__all__ = ["Refusal", "error_response"]


class Refusal(StrEnum):
    """The reason of a refusal; the value is the metric label."""

    # -- HTTP: the request itself --------------------------------------------------------
    MALFORMED_REQUEST = "malformed_request"
    """400 (or 501) from the HTTP parser; 400 for a text body that is not UTF-8."""
    REQUEST_LINE_TOO_LONG = "request_line_too_long"
    """414: the request line is longer than ``max_request_line``."""
    HEADERS_TOO_LARGE = "headers_too_large"
    """431: the header section is larger than ``max_header_size``."""
    TOO_MANY_HEADERS = "too_many_headers"
    """431: more header lines than ``max_headers``."""
    BODY_TOO_LARGE = "body_too_large"
    """413: the body is larger than ``max_http_body``."""
    NOT_FOUND = "not_found"
    """404: no such path (or the endpoint is disabled)."""
    METHOD_NOT_ALLOWED = "method_not_allowed"
    """405."""
    BAD_HANDSHAKE = "bad_handshake"
    """400 or 426: the WebSocket opening handshake is invalid (RFC 6455 section 4.2.1)."""
    BAD_CHANNEL = "bad_channel"
    """400: the channel name is empty, too long or uses a character outside the set."""
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    """No complete request within ``handshake_timeout``: closed without an answer."""
    PIPELINE_OVERFLOW = "pipeline_overflow"
    """Too many bytes sent while an answer was owed: closed without an answer."""
    BAD_PROXY_HEADER = "bad_proxy_header"
    """400: a trusted proxy's connection did not begin with a valid PROXY protocol header
    (``server.proxy_protocol``)."""

    # -- HTTP: who is asking ---------------------------------------------------------------
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    """403: a browser's ``Origin`` is not in ``allowed_origins``."""
    BAD_CREDENTIALS = "bad_credentials"
    """400: more than one token, or ``ringcast.bearer.<token>`` offered without the
    ``ringcast`` subprotocol."""
    MISSING_TOKEN = "missing_token"
    """401: a token is required and none was given."""
    INVALID_TOKEN = "invalid_token"
    """401: an unknown static token, or a JWT that does not verify."""
    EXPIRED_TOKEN = "expired_token"
    """401 at the handshake or publish; close 1008 when a WebSocket publishes with it."""
    CHANNEL_FORBIDDEN = "channel_forbidden"
    """403: the token may not subscribe to this channel."""
    PUBLISH_FORBIDDEN = "publish_forbidden"
    """403 on ``POST /publish``; close 1008 on a WebSocket: may not publish here."""

    # -- WebSocket -------------------------------------------------------------------------
    PUBLISH_DISABLED = "publish_disabled"
    """Close 1008: clients may not publish at all (``client_publish = false``)."""
    RATE_LIMITED = "rate_limited"
    """Close 1008: more messages than ``max_messages_per_second`` allows."""
    CONTROL_FLOOD = "control_flood"
    """Close 1008: more pings and unsolicited pongs than ``max_control_frames_per_second``
    allows."""
    TOO_MANY_FRAMES = "too_many_frames"
    """Close 1008: a message in more than ``max_message_frames`` frames."""
    MESSAGE_TIMEOUT = "message_timeout"
    """Close 1008: a frame or message still unfinished ``message_timeout`` after it began."""
    MESSAGE_TOO_BIG = "message_too_big"
    """Close 1009: a message over ``max_message_size``."""
    PROTOCOL_ERROR = "protocol_error"
    """Close 1002: frames that break RFC 6455."""
    INVALID_UTF8 = "invalid_utf8"
    """Close 1007: a text message that is not UTF-8."""
    INVALID_COMPRESSION = "invalid_compression"
    """Close 1007: a compressed message (permessage-deflate) that does not inflate."""

    # -- decided by the runtime, before a session exists -----------------------------------
    TOO_MANY_CONNECTIONS = "too_many_connections"
    """``max_connections`` reached."""
    TOO_MANY_CONNECTIONS_PER_IP = "too_many_connections_per_ip"
    """``max_connections_per_ip`` reached for the client's address."""


def error_response(status: int, message: str) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 error response with ``message`` as a
    plain text body, for a refusal made before any request was read (the runtime's
    connection limits: 503 is the usual status)."""
    body = message.encode()
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body
