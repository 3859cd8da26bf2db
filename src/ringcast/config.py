"""ringcast configuration: one TOML file -> frozen, typed, validated dataclasses.

How it fits together:

- Every section is a frozen dataclass (:class:`ServerConfig`, :class:`RingConfig`, ...) and
  :class:`Config` holds one of each. Every key is a ``dataclasses.field()`` whose metadata
  (built by :func:`_spec`) holds a :class:`KeySpec`: its one-line doc, its bounds, choices and
  other constraints, and whether SIGHUP may change it.
- One generic validator (:func:`_build`) walks those dataclasses: it knows the types (from the
  annotations) and the constraints (from the metadata) and nothing about particular keys. There is
  no hand-written check for any key; adding a key is adding one field.
- :func:`config_keys` exposes the same data, so ``deploy/ringcast.toml`` (see
  :meth:`Config.to_toml`), ``docs/config.md`` and the tests all follow from the declarations.
- The sources, lowest to highest priority: built-in defaults, the TOML file, then environment
  variables ``RINGCAST_<SECTION>_<KEY>``. Every problem in every source is collected and reported
  at once, one per line, each naming its source, the key path and what is wrong.

This module knows nothing of the server: the server receives a :class:`Config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import textwrap
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from ringcast.errors import ConfigError
from ringcast.redact import mask_credentials

__all__ = [
    "ENV_PREFIX",
    "RELOADABLE",
    "AuthConfig",
    "ChannelsConfig",
    "ClusterConfig",
    "Config",
    "ConfigKey",
    "HistoryConfig",
    "HttpConfig",
    "KeyChange",
    "KeySpec",
    "LimitsConfig",
    "LoggingConfig",
    "MetricsConfig",
    "ReloadPlan",
    "RingConfig",
    "ServerConfig",
    "ShutdownConfig",
    "config_from_mapping",
    "config_keys",
    "diff_configs",
    "load_config",
    "plan_reload",
]

ENV_PREFIX = "RINGCAST_"
"""Environment overrides are named ``RINGCAST_<SECTION>_<KEY>``, all uppercase."""

Backend = Literal["auto", "io_uring", "epoll"]
SlowConsumerPolicy = Literal["drop", "close"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]
Auto = Literal["auto"]
JwtAlgorithm = Literal[
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
]
"""The JWT signature algorithms ringcast can verify; "none" is not one of them, on purpose."""

_SPEC = "ringcast"  # the metadata key under which a field's KeySpec lives

_KIB = 1024
_MIB = 1024 * _KIB
_GIB = 1024 * _MIB


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What a key means and what it accepts; lives in ``field.metadata["ringcast"]``.

    The validator reads these and nothing else, so every constraint here is enforced the same way
    for every key, whichever source (file, environment, mapping) the value came from.
    """

    doc: str
    """One line for humans: the comment in ``deploy/ringcast.toml`` and the row in the docs."""
    minimum: int | float | None = None
    maximum: int | float | None = None
    exclusive_minimum: bool = False
    """The value must be strictly greater than ``minimum`` (a timeout that cannot be 0)."""
    choices: tuple[str, ...] = ()
    """The allowed strings (for ``workers``: the allowed string besides an integer)."""
    power_of_two: bool = False
    at_least: str | None = None
    """Another key of the same section that this one may not be smaller than."""
    pattern: str | None = None
    """A regular expression a string must match in full, described by ``pattern_doc``."""
    pattern_doc: str = ""
    unit: str = ""
    reloadable: bool = False
    """SIGHUP may change this key without a restart."""
    secret: bool = False
    """The value is a secret: error messages describe it without quoting it."""
    file: bool = False
    """A string that is empty or names a readable file (checked when the config is loaded)."""
    requires_any: tuple[str, ...] = ()
    """Key paths (``section.key``, any section) of which at least one must be set (non-empty,
    or true) when this boolean key is true."""


def _spec(
    doc: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    choices: Any = None,
    power_of_two: bool = False,
    at_least: str | None = None,
    pattern: tuple[str, str] | None = None,
    unit: str = "",
    reloadable: bool = False,
    secret: bool = False,
    file: bool = False,
    requires_any: tuple[str, ...] = (),
) -> dict[str, KeySpec]:
    """The ``metadata`` of one key's ``field()``: its doc and its constraints.

    ``choices`` is the ``Literal[...]`` alias also used in the field's annotation, so that the
    allowed strings are written once; ``pattern`` is ``(regex, description)``. For an array
    key (``tuple[str, ...]``), ``choices`` and ``pattern`` apply to each item.
    """
    spec = KeySpec(
        doc=doc,
        minimum=minimum,
        maximum=maximum,
        exclusive_minimum=exclusive_minimum,
        choices=typing.get_args(choices) if choices is not None else (),
        power_of_two=power_of_two,
        at_least=at_least,
        pattern=pattern[0] if pattern else None,
        pattern_doc=pattern[1] if pattern else "",
        unit=unit,
        reloadable=reloadable,
        secret=secret,
        file=file,
        requires_any=requires_any,
    )
    return {_SPEC: spec}


# --------------------------------------------------------------------------------------------
# The sections. Field order is the order of the example file and of the docs.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """``[server]``: where and how ringcast listens."""

    host: str = field(
        default="127.0.0.1",
        metadata=_spec(
            'Address to listen on ("0.0.0.0" or "::" for every interface).',
            pattern=(r"\S+", "a non-empty address without spaces"),
        ),
    )
    port: int = field(
        default=8080,
        metadata=_spec(
            "TCP port to listen on; 0 picks a free port, which the start-up line shows.",
            minimum=0,
            maximum=65535,
        ),
    )
    backlog: int = field(
        default=4096,
        metadata=_spec("listen() backlog of each listening socket.", minimum=1, maximum=65535),
    )
    workers: int | Auto = field(
        default=1,
        metadata=_spec(
            "Worker processes, each with its own ring and SO_REUSEPORT listener; "
            '"auto" = one per core.',
            minimum=1,
            maximum=256,
            choices=Auto,
        ),
    )
    backend: Backend = field(
        default="auto",
        metadata=_spec(
            "I/O backend: auto uses io_uring and falls back to epoll with the reason logged; "
            "io_uring refuses to start without it; epoll never tries io_uring.",
            choices=Backend,
        ),
    )
    path_prefix: str = field(
        default="",
        metadata=_spec(
            'A path prefix ringcast is served under behind a proxy, e.g. "/ws": /ws/news is '
            "the channel news, /ws/publish/news publishes to it, /ws/healthz answers (paths "
            "without the prefix work too); empty = none.",
            pattern=(r"(/[A-Za-z0-9_\-.~]+)*", 'empty, or "/" and a path without a trailing "/"'),
        ),
    )
    trusted_proxies: tuple[str, ...] = field(
        default=(),
        metadata=_spec(
            'Addresses or networks of the proxies in front of ringcast, e.g. "127.0.0.1", '
            '"10.0.0.0/8": their X-Forwarded-For header (or PROXY protocol header) names the '
            "client, whose address then counts in limits.max_connections_per_ip and the logs. "
            "Nobody else is believed.",
            pattern=(r"[0-9A-Fa-f.:]+(/\d{1,3})?", "an IP address or network, e.g. 10.0.0.0/8"),
        ),
    )
    proxy_protocol: bool = field(
        default=False,
        metadata=_spec(
            "Connections from trusted_proxies begin with a PROXY protocol header (v1 or v2, as "
            "HAProxy, nginx's proxy_protocol or a cloud load balancer sends it), which names "
            "the client; connections from anyone else must not have one."
        ),
    )
    echo: bool = field(
        default=False,
        metadata=_spec(
            "Deliver a connection's own WebSocket messages back to it too (needed by the Autobahn "
            "fuzzing client); by default a publisher does not receive its own message."
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RingConfig:
    """``[ring]``: io_uring sizing, per worker process."""

    sq_entries: int = field(
        default=4096,
        metadata=_spec("Submission queue entries.", minimum=8, maximum=32768, power_of_two=True),
    )
    cq_entries: int = field(
        default=32768,
        metadata=_spec(
            "Completion queue entries; at least sq_entries (fan-out completes many sends "
            "per submit).",
            minimum=16,
            maximum=65536,
            at_least="sq_entries",
        ),
    )
    buffer_count: int = field(
        default=2048,
        metadata=_spec(
            "Provided receive buffers, shared by all connections of a worker.",
            minimum=8,
            maximum=32768,
            power_of_two=True,
        ),
    )
    buffer_size: int = field(
        default=2048,
        metadata=_spec(
            "Size of each provided receive buffer.", minimum=256, maximum=_MIB, unit="bytes"
        ),
    )
    arena_size: int = field(
        default=4 * _MIB,
        metadata=_spec(
            "Registered frame memory per worker; counts against RLIMIT_MEMLOCK; 0 disables the "
            "arena so frames live in ordinary memory.",
            minimum=0,
            maximum=_GIB,
            unit="bytes",
        ),
    )
    zero_copy_threshold: int = field(
        default=16 * _KIB,
        metadata=_spec(
            "Frames at or above this size use SEND_ZC on kernels >= 6.10; 0 disables zero-copy.",
            minimum=0,
            maximum=_GIB,
            unit="bytes",
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsConfig:
    """``[limits]``: what one client may cost."""

    max_connections: int | Auto = field(
        default="auto",
        metadata=_spec(
            'Open connections per worker; more are refused with 503. "auto" = as many as the '
            "process can hold: its open-files hard limit, and 8 KiB of available memory per "
            "connection (the start-up log says which bounds it).",
            minimum=1,
            maximum=_MIB,
            choices=Auto,
        ),
    )
    max_connections_per_ip: int = field(
        default=0,
        metadata=_spec(
            "Open connections per client IP address, per worker; more are refused; 0 = no limit.",
            minimum=0,
            maximum=_MIB,
            reloadable=True,
        ),
    )
    max_subscriptions: int = field(
        default=100,
        metadata=_spec(
            "Channels one ringcast.v1 connection may be subscribed to at once (see "
            "docs/history.md); a subscribe beyond is answered with too_many_subscriptions.",
            minimum=1,
            maximum=_MIB,
            reloadable=True,
        ),
    )
    max_message_size: int = field(
        default=_MIB,
        metadata=_spec(
            "Largest inbound WebSocket message; a larger one closes the connection with 1009.",
            minimum=125,
            maximum=256 * _MIB,
            unit="bytes",
            reloadable=True,
        ),
    )
    max_messages_per_second: float = field(
        default=0.0,
        metadata=_spec(
            "Inbound WebSocket messages one connection may send per second, on average (a "
            "token bucket); more closes it with 1008; 0 = no limit.",
            minimum=0,
            maximum=1_000_000,
            unit="messages/second",
            reloadable=True,
        ),
    )
    message_burst: int = field(
        default=50,
        metadata=_spec(
            "Messages a connection may send at once before max_messages_per_second applies "
            "(the size of its token bucket).",
            minimum=1,
            maximum=1_000_000,
            unit="messages",
            reloadable=True,
        ),
    )
    max_message_frames: int = field(
        default=1024,
        metadata=_spec(
            "Most frames one inbound WebSocket message may be split into; more closes the "
            "connection with 1008 (each frame costs the server a parse).",
            minimum=1,
            maximum=_MIB,
            unit="frames",
            reloadable=True,
        ),
    )
    max_control_frames_per_second: float = field(
        default=1.0,
        metadata=_spec(
            "Pings and unsolicited pongs one connection may send per second, on average (a "
            "token bucket; the pong answering the server's ping is free); more closes it with "
            "1008; 0 = no limit.",
            minimum=0,
            maximum=1_000_000,
            unit="frames/second",
            reloadable=True,
        ),
    )
    control_frame_burst: int = field(
        default=20,
        metadata=_spec(
            "Pings and pongs a connection may send at once before max_control_frames_per_second "
            "applies (the size of its token bucket).",
            minimum=1,
            maximum=1_000_000,
            unit="frames",
            reloadable=True,
        ),
    )
    message_timeout: float = field(
        default=60.0,
        metadata=_spec(
            "Time an inbound WebSocket frame or message may take from its first byte to its "
            "last; longer closes the connection with 1008.",
            minimum=0,
            exclusive_minimum=True,
            maximum=3600,
            unit="seconds",
            reloadable=True,
        ),
    )
    max_http_body: int = field(
        default=_MIB,
        metadata=_spec(
            "Largest HTTP request body (POST /publish); a larger one gets HTTP 413.",
            minimum=0,
            maximum=256 * _MIB,
            unit="bytes",
            reloadable=True,
        ),
    )
    max_request_line: int = field(
        default=8 * _KIB,
        metadata=_spec(
            "Longest HTTP request line (method, target and version); a longer one gets HTTP 414.",
            minimum=256,
            maximum=_MIB,
            unit="bytes",
            reloadable=True,
        ),
    )
    max_header_size: int = field(
        default=16 * _KIB,
        metadata=_spec(
            "Largest HTTP header section (every header line with its line ending); a larger one "
            "gets HTTP 431.",
            minimum=_KIB,
            maximum=_MIB,
            unit="bytes",
            reloadable=True,
        ),
    )
    max_headers: int = field(
        default=100,
        metadata=_spec(
            "Most header lines in an HTTP request; more get HTTP 431.",
            minimum=8,
            maximum=10_000,
            reloadable=True,
        ),
    )
    handshake_timeout: float = field(
        default=10.0,
        metadata=_spec(
            "Time a new connection has to complete its HTTP request or WebSocket handshake.",
            minimum=0,
            exclusive_minimum=True,
            maximum=3600,
            unit="seconds",
            reloadable=True,
        ),
    )
    ping_interval: float = field(
        default=25.0,
        metadata=_spec(
            "Idle time after which the server sends a ping; 0 disables pings.",
            minimum=0,
            maximum=3600,
            unit="seconds",
            reloadable=True,
        ),
    )
    ping_timeout: float = field(
        default=20.0,
        metadata=_spec(
            "Time a client has to answer a ping before it is closed.",
            minimum=0,
            exclusive_minimum=True,
            maximum=3600,
            unit="seconds",
            reloadable=True,
        ),
    )
    close_timeout: float = field(
        default=5.0,
        metadata=_spec(
            "Time the closing handshake may take before the socket is closed anyway.",
            minimum=0,
            exclusive_minimum=True,
            maximum=3600,
            unit="seconds",
            reloadable=True,
        ),
    )
    queue_max_bytes: int = field(
        default=_MIB,
        metadata=_spec(
            "Cap on the bytes queued for one connection; crossing it applies slow_consumer_policy.",
            minimum=_KIB,
            maximum=_GIB,
            unit="bytes",
            reloadable=True,
        ),
    )
    socket_send_buffer: int = field(
        default=128 * _KIB,
        metadata=_spec(
            "Kernel send buffer of each client socket (SO_SNDBUF, set on the listener and "
            "inherited; Linux doubles it). Bounds what a client that stops reading holds in "
            "the kernel, on top of queue_max_bytes. 0 leaves the kernel's autotuning, which "
            "lets one socket buffer up to net.ipv4.tcp_wmem's maximum (4 MiB by default).",
            minimum=0,
            maximum=64 * _MIB,
            unit="bytes",
        ),
    )
    slow_consumer_policy: SlowConsumerPolicy = field(
        default="close",
        metadata=_spec(
            "What crossing queue_max_bytes does: drop the new message for that client, or close "
            "the client with code 3008. A ringcast.v1 client is always closed (a dropped "
            "message would be a gap in its positions).",
            choices=SlowConsumerPolicy,
            reloadable=True,
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelsConfig:
    """``[channels]``: channel names and who may publish."""

    max_name_length: int = field(
        default=128,
        metadata=_spec("Longest channel name accepted.", minimum=1, maximum=1024),
    )
    client_publish: bool = field(
        default=True,
        metadata=_spec(
            "WebSocket clients may publish; when false only POST /publish (and the cluster) can.",
            reloadable=True,
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryConfig:
    """``[history]``: the last messages of chosen channels, for clients that resume."""

    channels: tuple[str, ...] = field(
        default=(),
        metadata=_spec(
            "Channels whose last messages are kept, by name or pattern (* any run, ? one "
            "character, [a-z] one of a set), so that ringcast.v1 clients can resume from a "
            "position (docs/history.md); empty = none. With cluster.redis_url the history "
            "is kept in Redis, one stream per channel.",
            pattern=(r"[^\s,]+", "a channel name or pattern without spaces or commas"),
        ),
    )
    size: int = field(
        default=100,
        metadata=_spec("Messages kept per channel (the last ones; in Redis: the stream's "
                       "MAXLEN).", minimum=1,
                       maximum=1 << 24),
    )
    ttl: float = field(
        default=300.0,
        metadata=_spec("Messages older than this are dropped; 0 = kept until size or "
                       "max_bytes drops them. In Redis, a channel's keys expire this long "
                       "after its last message.", minimum=0, maximum=365 * 86400, unit="seconds"),
    )
    max_bytes: int = field(
        default=64 * _MIB,
        metadata=_spec(
            "All channels' history together, per process (payloads plus ~100 bytes each); "
            "past it the oldest message of any channel is dropped first. Not used with "
            "cluster.redis_url: Redis's maxmemory bounds the history there.",
            minimum=1024,
            maximum=1 << 40,
            unit="bytes",
        ),
    )


_TOKEN_PATTERN = (
    r"[A-Za-z0-9._~+/=-]{16,}",
    "at least 16 characters from A-Z a-z 0-9 - . _ ~ + / =",
)
_ORIGIN_PATTERN = (
    r"[A-Za-z][A-Za-z0-9+.-]*://(\*\.)?([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])"
    r"(:([0-9]{1,5}|\*))?",
    "scheme://host[:port], the host may start with *. and the port may be *",
)
_PUBLISH_CREDENTIALS = (
    "auth.publish_tokens",
    "http.publish_token",
    "auth.jwt_secret",
    "auth.jwt_public_key_file",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpConfig:
    """``[http]``: the HTTP publish API and browser origins."""

    enabled: bool = field(default=True, metadata=_spec("Serve POST /publish/<channel>."))
    publish_token: str = field(
        default="",
        metadata=_spec(
            "A static publish token, like one more entry of auth.publish_tokens (kept for "
            "existing setups); when set, POST /publish needs a token.",
            pattern=(r"[!-~]*", "printable ASCII without spaces"),
            reloadable=True,
            secret=True,
        ),
    )
    allowed_origins: tuple[str, ...] = field(
        default=(),
        metadata=_spec(
            "Origins allowed to open a WebSocket or POST /publish from a browser, e.g. "
            '"https://app.example.com", "https://*.example.com"; empty = any origin.',
            pattern=_ORIGIN_PATTERN,
            reloadable=True,
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthConfig:
    """``[auth]``: tokens that allow subscribing and publishing."""

    publish_tokens: tuple[str, ...] = field(
        default=(),
        metadata=_spec(
            "Static bearer tokens that may publish (HTTP and WebSocket) and subscribe, on every "
            "channel.",
            pattern=_TOKEN_PATTERN,
            reloadable=True,
            secret=True,
        ),
    )
    subscribe_tokens: tuple[str, ...] = field(
        default=(),
        metadata=_spec(
            "Static bearer tokens that may subscribe to every channel.",
            pattern=_TOKEN_PATTERN,
            reloadable=True,
            secret=True,
        ),
    )
    require_subscribe_auth: bool = field(
        default=False,
        metadata=_spec(
            "Opening a WebSocket needs a token that may subscribe to its channel (else HTTP "
            "401/403).",
            reloadable=True,
            requires_any=("auth.subscribe_tokens", *_PUBLISH_CREDENTIALS),
        ),
    )
    require_publish_auth: bool = field(
        default=False,
        metadata=_spec(
            "WebSocket publishing needs a token that may publish on the channel (else close "
            "1008); POST /publish needs one whenever a publish token or JWT key is set.",
            reloadable=True,
            requires_any=_PUBLISH_CREDENTIALS,
        ),
    )
    jwt_secret: str = field(
        default="",
        metadata=_spec(
            "HMAC key of HS256/HS384/HS512 JWTs; empty = none. Prefer the environment: "
            "RINGCAST_AUTH_JWT_SECRET.",
            pattern=(r"([!-~]{32,})?", "empty or at least 32 printable ASCII characters"),
            reloadable=True,
            secret=True,
        ),
    )
    jwt_public_key_file: str = field(
        default="",
        metadata=_spec(
            "PEM file with the public key (RSA, EC or Ed25519) that verifies the RS, PS, ES and "
            "EdDSA JWTs; empty = none.",
            reloadable=True,
            file=True,
        ),
    )
    jwt_algorithms: tuple[JwtAlgorithm, ...] = field(
        default=("HS256",),
        metadata=_spec(
            "JWT algorithms accepted; each needs its key (jwt_secret for the HS ones, "
            "jwt_public_key_file for the others).",
            choices=JwtAlgorithm,
            reloadable=True,
        ),
    )
    jwt_audience: str = field(
        default="",
        metadata=_spec(
            'When set, a JWT must carry this "aud" claim; empty = not checked.',
            pattern=(r"[^\x00-\x1f\x7f]*", "no control characters"),
            reloadable=True,
        ),
    )
    jwt_issuer: str = field(
        default="",
        metadata=_spec(
            'When set, a JWT must carry this "iss" claim; empty = not checked.',
            pattern=(r"[^\x00-\x1f\x7f]*", "no control characters"),
            reloadable=True,
        ),
    )
    jwt_leeway: float = field(
        default=0.0,
        metadata=_spec(
            "Clock skew allowed when checking the exp and nbf claims of a JWT.",
            minimum=0,
            maximum=3600,
            unit="seconds",
            reloadable=True,
        ),
    )

    def read_jwt_public_key(self) -> str:
        """The text of ``jwt_public_key_file`` (``""`` when unset), read now: call it at
        start and on every reload, so a key replaced in place is picked up. Raises
        :class:`ConfigError` naming the key when the file cannot be read (any more)."""
        path = self.jwt_public_key_file
        if not path:
            return ""
        try:
            return Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            msg = f"auth.jwt_public_key_file: cannot read {_quote(path)}: {reason}"
            raise ConfigError(msg) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    """``[metrics]``: Prometheus metrics."""

    enabled: bool = field(
        default=True, metadata=_spec("Serve GET /metrics (Prometheus text format).")
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class CompressionConfig:
    """``[compression]``: permessage-deflate (RFC 7692), compressed once per message."""

    enabled: bool = field(
        default=True,
        metadata=_spec(
            "Accept permessage-deflate offers (every browser makes one): a published message "
            "is compressed once for all the subscribers that agreed, never per subscriber, "
            "and costs no memory per connection. Applies to new connections.",
            reloadable=True,
        ),
    )
    level: int = field(
        default=1,
        metadata=_spec(
            "zlib's compression level: 1 fastest (a 1 KiB JSON message in about 3/4 of level "
            "6's time, 10 % larger), 9 smallest.",
            minimum=1,
            maximum=9,
            reloadable=True,
        ),
    )
    threshold: int = field(
        default=128,
        metadata=_spec(
            "Messages shorter than this go uncompressed (deflate saves a few bytes at best "
            "on them, and each costs the client an inflate).",
            minimum=0,
            maximum=1 << 30,
            unit="bytes",
            reloadable=True,
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusConfig:
    """``[status]``: the live status page."""

    enabled: bool = field(
        default=False,
        metadata=_spec(
            "Serve the live status page at GET /status (its figures as JSON at /status.json, "
            "live over a WebSocket at /status/live). When publishing needs a token, so does "
            "the page (?token= or Authorization: Bearer).",
            reloadable=True,
        ),
    )
    top_channels: int = field(
        default=10,
        metadata=_spec(
            "Channels listed on the status page, most subscribers first.",
            minimum=1,
            maximum=1000,
            reloadable=True,
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingConfig:
    """``[logging]``: what is logged and how."""

    level: LogLevel = field(
        default="info", metadata=_spec("Lowest level logged.", choices=LogLevel, reloadable=True)
    )
    format: LogFormat = field(
        default="text",
        metadata=_spec("text for people, json for one JSON object per line.", choices=LogFormat),
    )
    refusals_per_second: int = field(
        default=20,
        metadata=_spec(
            "Refused requests, handshakes and frames logged at info, at most this many a "
            "second per worker (the rest are counted in one line); 0 = none.",
            minimum=0,
            maximum=100000,
            reloadable=True,
        ),
    )
    access_per_second: int = field(
        default=0,
        metadata=_spec(
            "The access log: each connection accepted (with its address), WebSocket opened and "
            "closed, and HTTP answer, at most this many lines a second per worker (the rest are "
            "counted in one line); 0 = off.",
            minimum=0,
            maximum=100000,
            reloadable=True,
        ),
    )
    access_level: LogLevel = field(
        default="info",
        metadata=_spec("Level of the access log's lines.", choices=LogLevel, reloadable=True),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ShutdownConfig:
    """``[shutdown]``: how SIGTERM/SIGINT drain."""

    lame_duck: float = field(
        default=3.0,
        metadata=_spec(
            "After SIGTERM, how long /healthz answers 503 while the server still accepts and "
            "serves, so that a load balancer takes it out of rotation before its listener "
            "closes; then it drains. SIGINT (Ctrl-C) skips it.",
            minimum=0,
            maximum=3600,
            unit="seconds",
        ),
    )
    drain_timeout: float = field(
        default=10.0,
        metadata=_spec(
            "How long SIGTERM/SIGINT wait for queued messages to flush before closing anyway.",
            minimum=0,
            maximum=3600,
            unit="seconds",
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConfig:
    """``[cluster]``: joining several nodes through a broker."""

    redis_url: str = field(
        default="",
        metadata=_spec(
            "Redis pub/sub broker joining several nodes, redis://host[:port][/db] (port 6379 "
            "when left out); empty = a single node.",
            pattern=(
                r"(redis://([^\s/@]+@)?[^\s/@:]+(:\d{1,5})?(/\d+)?)?",
                "empty or redis://host[:port][/db]",
            ),
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole, validated configuration. Build it with :func:`load_config`."""

    server: ServerConfig = field(
        default_factory=ServerConfig, metadata={_SPEC: "Where and how ringcast listens."}
    )
    ring: RingConfig = field(
        default_factory=RingConfig, metadata={_SPEC: "io_uring sizing, per worker process."}
    )
    limits: LimitsConfig = field(
        default_factory=LimitsConfig, metadata={_SPEC: "What one client may cost."}
    )
    channels: ChannelsConfig = field(
        default_factory=ChannelsConfig, metadata={_SPEC: "Channel names and who may publish."}
    )
    history: HistoryConfig = field(
        default_factory=HistoryConfig,
        metadata={_SPEC: "The last messages of chosen channels, for clients that resume."},
    )
    http: HttpConfig = field(
        default_factory=HttpConfig, metadata={_SPEC: "The HTTP publish API and browser origins."}
    )
    auth: AuthConfig = field(
        default_factory=AuthConfig,
        metadata={_SPEC: "Tokens that allow subscribing and publishing."},
    )
    compression: CompressionConfig = field(
        default_factory=CompressionConfig,
        metadata={_SPEC: "permessage-deflate, compressed once per message."},
    )
    metrics: MetricsConfig = field(
        default_factory=MetricsConfig, metadata={_SPEC: "Prometheus metrics."}
    )
    status: StatusConfig = field(
        default_factory=StatusConfig, metadata={_SPEC: "The live status page."}
    )
    logging: LoggingConfig = field(
        default_factory=LoggingConfig, metadata={_SPEC: "What is logged and how."}
    )
    shutdown: ShutdownConfig = field(
        default_factory=ShutdownConfig, metadata={_SPEC: "How SIGTERM/SIGINT drain."}
    )
    cluster: ClusterConfig = field(
        default_factory=ClusterConfig, metadata={_SPEC: "Joining several nodes through a broker."}
    )

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """``{"server": {"host": ..., ...}, ...}``: plain, JSON-ready values."""
        return {
            name: {key.name: _plain(getattr(getattr(self, name), key.name)) for key in section.keys}
            for name, section in _sections().items()
        }

    def to_toml(self, *, with_docs: bool = False) -> str:
        """Render this configuration as TOML that :func:`load_config` reads back unchanged.

        With ``with_docs``, every section and key is preceded by ``#`` comment lines: its doc,
        then its type, allowed values and whether SIGHUP reloads it (``deploy/ringcast.toml`` is
        ``Config().to_toml(with_docs=True)`` under a header).
        """
        lines: list[str] = []
        values = self.as_dict()
        for section in _sections().values():
            keys = section.keys
            if lines:
                lines.append("")
            if with_docs:
                lines.append(f"# {section.doc}")
            lines.append(f"[{section.name}]")
            for key in keys:
                if with_docs:
                    lines.extend(
                        textwrap.wrap(key.spec.doc, 98, initial_indent="# ", subsequent_indent="# ")
                    )
                    reload = "reloadable on SIGHUP" if key.reloadable else "restart needed"
                    lines.append(f"#   {key.type_name}, {key.allowed}; {reload}")
                lines.append(f"{key.name} = {_toml_value(values[section.name][key.name])}")
                if with_docs and key is not keys[-1]:
                    lines.append("")
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Introspection
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigKey:
    """One key as the validator, the docs and the tests see it."""

    section: str
    name: str
    annotation: Any
    """The resolved type annotation: ``int``, ``float``, ``bool``, ``str``, ``Literal[...]``,
    ``int | Literal["auto"]`` or ``tuple[str, ...]`` (a TOML array of strings)."""
    kinds: tuple[type, ...]
    """The plain types a value may have (a ``Literal`` of strings counts as ``str``; an array
    of strings is ``tuple``)."""
    default: Any
    spec: KeySpec

    @property
    def path(self) -> str:
        """``"section.key"``, the name used in every error message."""
        return f"{self.section}.{self.name}"

    @property
    def env_var(self) -> str:
        """The environment variable that overrides this key."""
        return f"{ENV_PREFIX}{self.section.upper()}_{self.name.upper()}"

    @property
    def reloadable(self) -> bool:
        return self.spec.reloadable

    @property
    def type_name(self) -> str:
        """``integer``, ``float``, ``boolean``, ``string``, ``array of strings`` or
        ``integer or "auto"``."""
        if len(self.kinds) > 1:  # int | Literal["auto"]: name the literal, not "string"
            others = [_TYPE_NAMES[t] for t in self.kinds if t is not str]
            return " or ".join([*others, *(f'"{c}"' for c in self.spec.choices)])
        return _TYPE_NAMES[self.kinds[0]]

    @property
    def allowed(self) -> str:
        """The constraints in words: ``1..65535``, ``power of two, 8..32768``, ``any``..."""
        spec = self.spec
        parts: list[str] = []
        if spec.power_of_two:
            parts.append("power of two")
        if spec.minimum is not None or spec.maximum is not None:
            parts.append(_range_text(spec) + (f" {spec.unit}" if spec.unit else ""))
        elif spec.unit:
            parts.append(spec.unit)
        if spec.at_least:
            parts.append(f">= {self.section}.{spec.at_least}")
        if spec.choices:
            choices = " | ".join(f'"{c}"' for c in spec.choices)
            if parts and len(self.kinds) > 1:
                parts[-1] += f" or {choices}"
            else:
                parts.append(("each " if tuple in self.kinds else "") + choices)
        if spec.pattern_doc:
            parts.append(("each " if tuple in self.kinds else "") + spec.pattern_doc)
        if spec.file:
            parts.append("empty or a readable file")
        if spec.requires_any:
            parts.append("true needs one of " + ", ".join(spec.requires_any))
        if not parts:
            parts.append("true | false" if bool in self.kinds else "any")
        return ", ".join(parts)


_TYPE_NAMES: dict[type, str] = {
    int: "integer",
    float: "float",
    bool: "boolean",
    str: "string",
    tuple: "array of strings",
}
_EXPECTED: dict[type, str] = {
    int: "an integer",
    float: "a number",
    bool: "a boolean (true or false)",
    str: "a string",
    tuple: "an array of strings",
}


def _base_types(annotation: Any) -> tuple[type, ...]:
    """The plain types a value of ``annotation`` may have; a ``Literal`` of strings is ``str``,
    ``tuple[str, ...]`` (an array of strings, or of a ``Literal``'s strings) is ``tuple``."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return (str,)
    if origin is tuple:
        item, *rest = typing.get_args(annotation)
        if rest != [Ellipsis] or _base_types(item) != (str,):
            raise TypeError(f"config key type {annotation!r} is not supported")
        return (tuple,)
    if origin in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(annotation) for t in _base_types(arg))
    if annotation in _TYPE_NAMES:
        return (annotation,)
    raise TypeError(f"config key type {annotation!r} is not supported")


@dataclass(frozen=True, slots=True)
class _Section:
    name: str
    cls: type[Any]
    doc: str
    keys: tuple[ConfigKey, ...]


@cache
def _sections() -> dict[str, _Section]:
    """Section name -> its class, doc and keys, in declaration order. Computed once."""
    out: dict[str, _Section] = {}
    section_types = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        cls = section_types[section.name]
        hints = typing.get_type_hints(cls)
        keys = tuple(
            ConfigKey(
                section.name,
                f.name,
                hints[f.name],
                _base_types(hints[f.name]),
                f.default,
                f.metadata[_SPEC],
            )
            for f in dataclasses.fields(cls)
        )
        out[section.name] = _Section(section.name, cls, section.metadata[_SPEC], keys)
    return out


def config_keys() -> tuple[ConfigKey, ...]:
    """Every key of every section, in the order of the example file and the docs."""
    return tuple(key for section in _sections().values() for key in section.keys)


RELOADABLE: frozenset[str] = frozenset(key.path for key in config_keys() if key.reloadable)
"""Key paths a SIGHUP may change without a restart."""


def diff_configs(old: Config, new: Config) -> tuple[list[str], list[str]]:
    """The key paths whose values differ: ``(reloadable, restart_needed)``, in key order.

    A SIGHUP handler applies the first list and logs the second as needing a restart.
    """
    reloadable: list[str] = []
    restart: list[str] = []
    old_values, new_values = old.as_dict(), new.as_dict()
    for key in config_keys():
        if old_values[key.section][key.name] != new_values[key.section][key.name]:
            (reloadable if key.reloadable else restart).append(key.path)
    return reloadable, restart


@dataclass(frozen=True, slots=True)
class KeyChange:
    """One key a reload read: its value running and its value in the file read again."""

    key: ConfigKey
    old: Any
    """The running value, plain (as :meth:`Config.as_dict` gives it)."""
    new: Any

    def __str__(self) -> str:
        """``limits.max_message_size 1048576 -> 2097152``, for a log line: a secret shows
        ``***`` for each value it holds (``[***, ***]``), a URL its credentials masked."""
        old, new = _shown(self.old, self.key.spec.secret), _shown(self.new, self.key.spec.secret)
        if self.old == self.new:
            return f"{self.key.path} {new} (read again)"
        return f"{self.key.path} {old} -> {new}"


def _shown(value: object, secret: bool) -> str:
    """A value as a log line may show it: TOML, with secrets and URL credentials masked."""
    if secret and isinstance(value, str):
        return "***" if value else '""'
    if secret and isinstance(value, list | tuple):
        return "[" + ", ".join("***" for _ in value) + "]"
    return mask_credentials(_toml_value(value))


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a SIGHUP does with a configuration read again: see :func:`plan_reload`."""

    applied: Config
    """The configuration to run with: the running one, with the new values of ``live``."""
    live: tuple[str, ...]
    """Key paths whose new values apply now."""
    restart: tuple[str, ...]
    """Key paths that changed but need a restart: not applied."""
    changes: tuple[KeyChange, ...] = ()
    """Every key of ``live`` and ``restart``, with its old and new values."""

    def describe(self, paths: tuple[str, ...]) -> str:
        """``paths`` (``plan.live`` or ``plan.restart``) with their old and new values, for the
        reload's log lines: ``"limits.max_message_size 1048576 -> 2097152, auth.publish_tokens
        [***] -> [***, ***]"``. Secrets are never shown; their count of values is."""
        by_path = {change.key.path: change for change in self.changes}
        return ", ".join(str(by_path[path]) if path in by_path else path for path in paths)


def plan_reload(running: Config, new: Config) -> ReloadPlan:
    """Decide what a reload applies: the keys that changed and may change live take their
    new values, those that need a restart keep their running ones.

    ``auth.jwt_public_key_file`` counts as changed whenever it is set, even with the same
    path: the file it names may have been replaced, and a reload reads it again. Pure: it
    reads no file and no environment.
    """
    live, restart = diff_configs(running, new)
    if not live and running.auth.jwt_public_key_file:
        live = ["auth.jwt_public_key_file"]
    old_values, fresh = running.as_dict(), new.as_dict()
    keys = {key.path: key for key in config_keys()}
    changes = tuple(KeyChange(key, old_values[key.section][key.name], fresh[key.section][key.name])
                    for key in (keys[path] for path in (*live, *restart)))
    if not live:
        return ReloadPlan(running, (), tuple(restart), changes)
    merged = {section: dict(values) for section, values in old_values.items()}
    for path in live:
        section, key = path.split(".", 1)
        merged[section][key] = fresh[section][key]
    return ReloadPlan(config_from_mapping(merged, "<reload>"), tuple(live), tuple(restart),
                      changes)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_config(path: str | Path | None, env: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file at ``path`` (``None``: built-in defaults), then apply ``env``.

    ``env`` defaults to ``os.environ``; pass ``{}`` to ignore the environment. Variables named
    ``RINGCAST_<SECTION>_<KEY>`` override the file. Raises :class:`ConfigError` listing every
    problem, one per line.
    """
    if path is None:
        source, data = "<defaults>", {}
    else:
        source, data = str(path), _read_toml(Path(path))
    overrides, env_errors = _env_overrides(os.environ if env is None else env)
    return _build(data, source, overrides, env_errors)


def config_from_mapping(data: Mapping[str, Any], source: str = "<mapping>") -> Config:
    """Validate an already parsed mapping (``{"server": {"port": 8080}, ...}``).

    ``source`` names it in error messages. No environment variable is consulted.
    """
    return _build(data, source, {}, [])


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        where = "" if path.is_absolute() else f" (looked for {path.absolute()})"
        raise ConfigError(f"{path}: the config file does not exist{where}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 (byte offset {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


_Overrides = dict[tuple[str, str], tuple[str, str]]  # (section, key) -> (variable, raw value)


def _env_overrides(env: Mapping[str, str]) -> tuple[_Overrides, list[str]]:
    """Pick the ``RINGCAST_<SECTION>_<KEY>`` variables out of ``env``.

    A variable that names a real section must name a real key of it. Any other ``RINGCAST_``
    variable is an error only when it is close to a real override name (a typo); the rest
    (``RINGCAST_CONFIG``, say) belong to someone else and are left alone.
    """
    sections = _sections()
    by_suffix = {key.env_var.removeprefix(ENV_PREFIX): key for key in config_keys()}
    overrides: _Overrides = {}
    errors: list[str] = []
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX):
            continue
        suffix = var.removeprefix(ENV_PREFIX)
        key = by_suffix.get(suffix)
        if key is not None:
            overrides[key.section, key.name] = (var, env[var])
            continue
        section, _, name = suffix.partition("_")
        if section.isupper() and section.lower() in sections:
            keys = sections[section.lower()].keys
            near = _nearest(name.lower(), [k.name for k in keys])
            home = _nearest_elsewhere(name.lower(), section.lower())
            if near is not None:
                guess: str | None = f"{ENV_PREFIX}{section}_{near.upper()}"
            elif home is not None:
                guess = home.env_var
            else:
                valid = ", ".join(k.env_var for k in keys)
                errors.append(f"environment variable {var}: no such key (valid: {valid})")
                continue
        else:
            near = _nearest(suffix.upper(), list(by_suffix), cutoff=0.8)
            if near is None:
                continue  # not meant for the config
            guess = ENV_PREFIX + near
        errors.append(f"environment variable {var}: no such key — did you mean {guess}?")
    return overrides, errors


def _nearest(word: str, candidates: list[str], cutoff: float = 0.6) -> str | None:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=cutoff)
    return close[0] if close else None


def _nearest_elsewhere(name: str, section: str | None) -> ConfigKey | None:
    """The key called ``name`` in another section (a key put under the wrong table)."""
    for key in config_keys():
        if key.name == name and key.section != section:
            return key
    return None


def _build(
    data: Mapping[str, Any], source: str, overrides: _Overrides, env_errors: list[str]
) -> Config:
    """The one validator: check ``data`` plus ``overrides`` against the declarations."""
    sections = _sections()
    errors: list[str] = []

    for name, table in data.items():
        if name not in sections:
            errors.append(f"{source}: {_unknown_top_level(str(name), table)}")
        elif not isinstance(table, Mapping):
            errors.append(f"{source}: {name}: expected a table [{name}], got {_describe(table)}")

    built: dict[str, Any] = {}
    all_values: dict[str, Any] = {}  # "section.key" -> its value, for keys that passed
    for section in sections.values():
        table = data.get(section.name, {})
        if not isinstance(table, Mapping):
            table = {}
        names = {key.name for key in section.keys}
        errors.extend(
            f"{source}: {_unknown_key(section.name, str(name))}"
            for name in table
            if name not in names
        )

        values: dict[str, Any] = {}
        failed: set[str] = set()
        for key in section.keys:
            value: Any
            if (section.name, key.name) in overrides:
                var, raw = overrides[section.name, key.name]
                where = f"environment variable {var}"
                value, problem = _parse_env(key, raw)
            elif key.name in table:
                where, value, problem = source, table[key.name], None
            else:
                values[key.name] = key.default  # valid by construction: the tests load them
                continue
            if problem is None:
                value, problem = _check(key, value)
            if problem is None:
                values[key.name] = value
            else:
                failed.add(key.name)
                errors.append(f"{where}: {key.path}: {problem}")

        for key in section.keys:  # constraints between keys of one section
            other = key.spec.at_least
            if other is None or {key.name, other} & failed:
                continue
            if values[key.name] < values[other]:
                where = _origin(section.name, key.name, source, overrides)
                errors.append(
                    f"{where}: {key.path}: {_show(values[key.name])} must be at least "
                    f"{section.name}.{other} ({_show(values[other])})"
                )
        built[section.name] = section.cls(**values) if not failed else None
        all_values.update(
            (f"{section.name}.{name}", value)
            for name, value in values.items()
            if name not in failed
        )

    for key in config_keys():  # "this switch needs one of those keys", across sections
        needed = key.spec.requires_any
        if not needed or all_values.get(key.path) is not True:
            continue
        if any(path not in all_values for path in needed):
            continue  # one of them is wrong already, and reported
        if not any(all_values[path] for path in needed):
            where = _origin(key.section, key.name, source, overrides)
            errors.append(f"{where}: {key.path}: true needs one of {', '.join(needed)} to be set")

    errors.extend(env_errors)
    if errors:
        raise ConfigError(mask_credentials("\n".join(errors)))
    return Config(**built)


def _origin(section: str, name: str, source: str, overrides: _Overrides) -> str:
    if (section, name) in overrides:
        return f"environment variable {overrides[section, name][0]}"
    return source


def _unknown_top_level(name: str, value: object) -> str:
    sections = list(_sections())
    if not isinstance(value, Mapping):
        home = _nearest_elsewhere(name, None)
        if home is not None:
            return f"unknown key '{name}' — did you mean '{home.path}' (under [{home.section}])?"
    guess = _nearest(name, sections)
    if guess is not None:
        return f"unknown section '{name}' — did you mean '{guess}'?"
    return f"unknown section '{name}' (valid sections: {', '.join(sections)})"


def _unknown_key(section: str, name: str) -> str:
    names = [key.name for key in _sections()[section].keys]
    guess = _nearest(name, names)
    path = f"{section}.{name}"
    if guess is not None:
        return f"unknown key '{path}' — did you mean '{section}.{guess}'?"
    elsewhere = _nearest_elsewhere(name, section)
    if elsewhere is not None:
        return f"unknown key '{path}' — did you mean '{elsewhere.path}'?"
    return f"unknown key '{path}' (valid keys in [{section}]: {', '.join(names)})"


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def _parse_env(key: ConfigKey, raw: str) -> tuple[Any, str | None]:
    """Turn an environment string into a value of the key's type; constraints come later."""
    text = raw.strip()
    kinds = key.kinds
    if kinds == (tuple,):  # comma-separated items; none of the array keys allows a comma
        return [item.strip() for item in raw.split(",") if item.strip()], None
    if text in key.spec.choices:
        return text, None
    if bool in kinds and text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE, None
    if int in kinds and re.fullmatch(r"[+-]?[0-9]+", text):
        return int(text), None
    if float in kinds:
        try:
            return float(text), None
        except ValueError:
            pass
    if kinds == (str,):
        return (text if key.spec.choices else raw), None
    expected = "a boolean (true/false, 1/0, yes/no)" if bool in kinds else _expected(key)
    return None, f"expected {expected}, got {_quote(raw)}"


def _check(key: ConfigKey, value: object) -> tuple[Any, str | None]:
    """Check one value against its key's type and constraints: ``(value, None)`` or
    ``(None, problem)``. Integers are accepted for floats (and become floats); booleans are
    never numbers."""
    kinds = key.kinds
    if isinstance(value, bool):
        matched = bool in kinds
    elif isinstance(value, int):
        matched = int in kinds or float in kinds
        if int not in kinds and float in kinds:
            value = float(value)
    elif isinstance(value, float):
        matched = float in kinds
    elif isinstance(value, list | tuple):
        matched = tuple in kinds
    else:
        matched = isinstance(value, str) and str in kinds
    if not matched:
        return None, f"expected {_expected(key)}, got {_describe(value, secret=key.spec.secret)}"

    spec = key.spec
    if isinstance(value, list | tuple):
        items: list[str] = []
        for number, item in enumerate(value, 1):
            if not isinstance(item, str):
                return None, f"item {number}: expected a string, got {_describe(item)}"
            problem = _check_string(spec, item)
            if problem is not None:
                return None, f"item {number}: {problem}"
            items.append(item)
        return tuple(items), None
    if isinstance(value, str):
        if len(kinds) > 1 and spec.choices and value not in spec.choices:
            return None, f"expected {_expected(key)}, got {_describe(value)}"
        problem = _check_string(spec, value)
        return (None, problem) if problem is not None else (value, None)
    if isinstance(value, bool):
        return value, None

    assert isinstance(value, int | float)
    if isinstance(value, float) and not math.isfinite(value):
        return None, f"expected a finite number, got {_show(value)}"
    low, high = spec.minimum, spec.maximum
    if (low is not None and (value <= low if spec.exclusive_minimum else value < low)) or (
        high is not None and value > high
    ):
        unit = f" {spec.unit}" if spec.unit else ""
        return None, f"{_show(value)} is out of range (allowed: {_range_text(spec)}{unit})"
    if spec.power_of_two and isinstance(value, int) and value & (value - 1):
        below = 1 << (value.bit_length() - 1)
        return None, f"{value} is not a power of two (try {below} or {below * 2})"
    return value, None


def _check_string(spec: KeySpec, value: str) -> str | None:
    """The problem with a string value (or an array's item), or ``None``."""
    if spec.choices and value not in spec.choices:
        choices = ", ".join(f'"{c}"' for c in spec.choices)
        guess = _nearest(value.lower(), [c.lower() for c in spec.choices])
        if guess is not None:
            guess = next(c for c in spec.choices if c.lower() == guess)
        hint = f' — did you mean "{guess}"?' if guess is not None else ""
        return f"{_quote(value)} is not one of {choices}{hint}"
    if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
        shown = _describe(value, secret=True) if spec.secret else _quote(value)
        return f"expected {spec.pattern_doc}, got {shown}"
    if spec.file and value:
        return _unreadable(value)
    return None


def _unreadable(path: str) -> str | None:
    """Why the file at ``path`` cannot be read, or ``None`` when it can."""
    try:
        with open(path, "rb"):
            pass
    except IsADirectoryError:
        return f"{_quote(path)} is a directory, not a file"
    except OSError as exc:
        return f"cannot read {_quote(path)}: {exc.strerror}"
    if not Path(path).is_file():
        return f"{_quote(path)} is not a regular file"
    return None


def _expected(key: ConfigKey) -> str:
    kinds = key.kinds
    if len(kinds) > 1 and key.spec.choices:  # int | Literal["auto"]
        numbers = [_EXPECTED[k] for k in kinds if k is not str]
        return " or ".join([*numbers, *(f'"{c}"' for c in key.spec.choices)])
    if key.spec.choices:
        return "one of " + ", ".join(f'"{c}"' for c in key.spec.choices)
    return " or ".join(_EXPECTED[k] for k in kinds)


def _range_text(spec: KeySpec) -> str:
    low, high = spec.minimum, spec.maximum
    if spec.exclusive_minimum and low is not None:
        return f"> {_show(low)}" + (f" and <= {_show(high)}" if high is not None else "")
    if low is not None and high is not None:
        return f"{_show(low)}..{_show(high)}"
    return f">= {_show(low)}" if low is not None else f"<= {_show(high)}"


def _show(number: object) -> str:
    if isinstance(number, float) and number.is_integer():
        return str(int(number))
    return str(number)


def _describe(value: object, *, secret: bool = False) -> str:
    """How an unexpected value reads in an error: ``string "10"``, ``boolean true``...

    A ``secret`` string is described by its length only, so a mistyped token or key does not
    end up in logs."""
    if secret and isinstance(value, str):
        return f"a string of {len(value)} characters (not shown: it is a secret)"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, str):
        return f"string {_quote(value)}"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"{type(value).__name__} {value}"  # TOML dates and times


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _quote(text: str) -> str:
    """A TOML basic string (also how strings read in error messages)."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _plain(value: object) -> object:
    """A value as TOML and JSON see it: an array is a list."""
    return list(value) if isinstance(value, tuple) else value


def _toml_value(value: object) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _quote(value)
    raise TypeError(f"cannot render {value!r} as TOML")
