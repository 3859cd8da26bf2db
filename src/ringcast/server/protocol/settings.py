"""The knobs of the protocol core, one frozen object shared by every session of a worker."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ProtocolSettings"]


@dataclass(frozen=True, slots=True)
class ProtocolSettings:
    """Limits, timeouts and switches of the sans-I/O protocol core.

    Sizes are in bytes and durations in seconds, on the runtime's clock (whatever it
    passes as ``now``). The runtime builds this from ``Config``; the values below are
    checked again here so a mistake in that mapping fails at start, not per connection.
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
    publish_token: str
    """If not empty, ``POST /publish`` needs ``Authorization: Bearer <token>``."""
    metrics_enabled: bool
    """Whether ``GET /metrics`` exists (404 otherwise)."""
    max_channel_name: int
    """Longest channel name, in characters."""
    echo: bool
    """Whether a client's own messages come back to it. Not used by the protocol core:
    carried here for the runtime, which does the fan-out."""

    def __post_init__(self) -> None:
        for name in ("max_message_size", "max_http_body"):
            value = getattr(self, name)
            if value < 0:
                msg = f"{name} is {value}, expected at least 0"
                raise ValueError(msg)
        for name in ("handshake_timeout", "ping_timeout", "close_timeout"):
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
