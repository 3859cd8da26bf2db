"""The knobs of the protocol core, one frozen object shared by every session of a worker."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .auth import Authenticator
from .client_address import TrustedProxies
from .origins import OriginPolicy

__all__ = ["ProtocolSettings"]


@dataclass(frozen=True, slots=True)
class ProtocolSettings:
    """Limits, timeouts and switches of the sans-I/O protocol core.

    Sizes are in bytes and durations in seconds, on the runtime's clock (whatever it
    passes as ``now``). The runtime builds this from ``Config``; the values below are
    checked again here so a mistake in that mapping fails at start, not per connection:
    an invalid value raises :exc:`ValueError`. That includes the token configuration (a
    JWT algorithm without its key, a key PyJWT cannot load or finds too weak), which
    ``Config`` cannot check: build the settings in ``check-config`` too.

    The fields after ``echo`` have defaults (everything off, limits at the config's
    defaults), so a runtime that does not know them yet keeps working. Secrets (tokens,
    the JWT secret) are left out of ``repr()``.
    """

    max_message_size: int
    """Largest WebSocket message a client may send (all fragments); more closes with 1009."""
    max_http_body: int
    """Largest HTTP request body; more is answered 413."""
    handshake_timeout: float
    """Time allowed for a complete HTTP request: the upgrade, or the next request on an
    idle keep-alive connection."""
    ping_interval: float
    """Seconds between keepalive pings; 0 turns keepalive off."""
    ping_timeout: float
    """Time allowed for any data (normally the pong) after a ping; else close with 1011."""
    close_timeout: float
    """Time allowed for the peer's close frame after the server sent its own."""
    client_publish: bool
    """Whether WebSocket clients may publish; if not, a data message closes with 1008."""
    http_enabled: bool
    """Whether ``POST /publish/<channel>`` exists (404 otherwise)."""
    publish_token: str = field(repr=False)
    """A static publish token (``http.publish_token``): one more of ``publish_tokens``."""
    metrics_enabled: bool
    """Whether ``GET /metrics`` exists (404 otherwise)."""
    max_channel_name: int
    """Longest channel name, in characters."""
    echo: bool
    """Whether a client's own messages come back to it. Not used by the protocol core:
    carried here for the runtime, which does the fan-out."""

    # -- tokens (see .auth) ----------------------------------------------------------------
    publish_tokens: tuple[str, ...] = field(default=(), repr=False)
    """Static tokens that may publish on (and subscribe to) every channel."""
    subscribe_tokens: tuple[str, ...] = field(default=(), repr=False)
    """Static tokens that may subscribe to every channel."""
    require_subscribe_auth: bool = False
    """A WebSocket handshake needs a token allowing its channel (401 without, 403 if the
    token does not allow the channel)."""
    require_publish_auth: bool = False
    """WebSocket publishing needs a token allowing the channel (close 1008 otherwise).
    ``POST /publish`` needs one when this is set or any publish token or JWT key is."""
    jwt_secret: str = field(default="", repr=False)
    """HMAC key for ``HS*`` JWTs; empty: none."""
    jwt_public_key: str = ""
    """The PEM text (not the file name) of the public key for the other JWT algorithms."""
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    """Accepted JWT algorithms; each needs its key (ignored when no JWT key is set)."""
    jwt_audience: str = ""
    """Required ``aud`` claim; empty: not checked."""
    jwt_issuer: str = ""
    """Required ``iss`` claim; empty: not checked."""
    jwt_leeway: float = 0.0
    """Clock skew allowed on ``exp`` and ``nbf``, in seconds."""

    # -- browsers ----------------------------------------------------------------------
    allowed_origins: tuple[str, ...] = ()
    """Origins allowed on handshakes and ``POST /publish`` (see .origins); empty: any."""

    # -- limits ------------------------------------------------------------------------
    max_messages_per_second: float = 0.0
    """Inbound WebSocket messages per second (token bucket); 0: no limit."""
    message_burst: int = 50
    """Size of that bucket: messages a client may send at once."""
    max_message_frames: int = 1024
    """Most frames one inbound message may come in; more closes with 1008."""
    max_subscriptions: int = 100
    """Channels one ``ringcast.v1`` connection may be subscribed to at once."""
    max_control_frames_per_second: float = 1.0
    """Pings and unsolicited pongs a client may send per second (token bucket; the pong
    that answers the server's ping is free); more closes with 1008; 0: no limit."""
    control_frame_burst: int = 20
    """Size of that bucket: control frames a client may send at once."""
    message_timeout: float = 60.0
    """Time a frame or message may take from its first byte to its last; longer closes
    with 1008."""
    max_request_line: int = 8192
    """Longest request line (without its line ending); longer: 414."""
    max_header_size: int = 16384
    """Largest header section (header lines with their line endings); larger: 431."""
    max_headers: int = 100
    """Most header lines; more: 431."""
    path_prefix: str = ""
    """A prefix the routes are also served under (``"/ws"``: ``/ws/news`` is ``/news``)."""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses and networks whose ``X-Forwarded-For`` (or PROXY header) is believed."""
    proxy_protocol: bool = False
    """Connections from a trusted proxy begin with a PROXY protocol header."""
    status_enabled: bool = False
    """Whether the status page exists: ``GET /status``, ``GET /status.json`` and the
    WebSocket ``/status/live`` (guarded like ``POST /publish`` when it needs a token)."""
    compression: bool = False
    """Accept permessage-deflate offers (RFC 7692, see :mod:`.deflate`); off, they are
    declined by the 101 naming no extension."""
    fast_path: bool = True
    """Read plain, well-formed requests without h11 (see :mod:`.fast_path`); off, every
    request goes through h11 (the tests compare both)."""

    # -- derived, built once in __post_init__ --------------------------------------------------
    authenticator: Authenticator = field(init=False, repr=False, compare=False)
    """The token checks and decisions built from the fields above."""
    origins: OriginPolicy = field(init=False, repr=False, compare=False)
    """The origin allow-list built from ``allowed_origins``."""
    proxies: TrustedProxies = field(init=False, repr=False, compare=False)
    """The proxies built from ``trusted_proxies``."""

    def __post_init__(self) -> None:
        for name in ("max_message_size", "max_http_body"):
            value = getattr(self, name)
            if value < 0:
                msg = f"{name} is {value}, expected at least 0"
                raise ValueError(msg)
        for name in ("handshake_timeout", "ping_timeout", "close_timeout", "message_timeout"):
            value = getattr(self, name)
            if not value > 0:
                msg = f"{name} is {value}, expected more than 0 seconds"
                raise ValueError(msg)
        if not self.ping_interval >= 0:
            msg = f"ping_interval is {self.ping_interval}, expected 0 (off) or more"
            raise ValueError(msg)
        if self.max_channel_name < 1:
            msg = f"max_channel_name is {self.max_channel_name}, expected at least 1"
            raise ValueError(msg)
        for name, minimum in (
            ("message_burst", 1),
            ("max_message_frames", 1),
            ("max_subscriptions", 1),
            ("control_frame_burst", 1),
            ("max_request_line", 16),
            ("max_header_size", 1),
            ("max_headers", 1),
        ):
            value = getattr(self, name)
            if value < minimum:
                msg = f"{name} is {value}, expected at least {minimum}"
                raise ValueError(msg)
        for name in ("max_messages_per_second", "max_control_frames_per_second", "jwt_leeway"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                msg = f"{name} is {value}, expected a finite number, at least 0"
                raise ValueError(msg)
        for name in ("publish_tokens", "subscribe_tokens", "jwt_algorithms", "allowed_origins",
                     "trusted_proxies"):
            if not isinstance(getattr(self, name), tuple):
                msg = f"{name} must be a tuple of strings"
                raise TypeError(msg)
        publish_tokens = self.publish_tokens
        if self.publish_token:
            publish_tokens = (*publish_tokens, self.publish_token)
        authenticator = Authenticator(
            publish_tokens=publish_tokens,
            subscribe_tokens=self.subscribe_tokens,
            require_subscribe=self.require_subscribe_auth,
            require_publish=self.require_publish_auth,
            jwt_secret=self.jwt_secret,
            jwt_public_key=self.jwt_public_key,
            jwt_algorithms=self.jwt_algorithms,
            jwt_audience=self.jwt_audience,
            jwt_issuer=self.jwt_issuer,
            jwt_leeway=self.jwt_leeway,
        )
        object.__setattr__(self, "authenticator", authenticator)
        object.__setattr__(self, "origins", OriginPolicy(self.allowed_origins))
        object.__setattr__(self, "proxies", TrustedProxies.parse(self.trusted_proxies))
        if self.path_prefix and (not self.path_prefix.startswith("/")
                                 or self.path_prefix.endswith("/")):
            msg = (f"path_prefix is {self.path_prefix!r}, expected \"/\" and a path without "
                   "a trailing \"/\"")
            raise ValueError(msg)
