"""The server's view of the configuration: the protocol core's settings made from it, and
the one place the runtime's parts read what is in force now (a SIGHUP may change it).
"""

from __future__ import annotations

from dataclasses import dataclass

from ringcast.config import Config
from ringcast.server.protocol.settings import ProtocolSettings

__all__ = ["Current", "protocol_settings"]


def protocol_settings(config: Config) -> ProtocolSettings:
    """The protocol core's settings; ValueError when keys disagree (e.g. a JWT
    algorithm without its key), which callers report as a configuration error."""
    lim = config.limits
    auth = config.auth
    return ProtocolSettings(
        max_message_size=lim.max_message_size,
        max_http_body=lim.max_http_body,
        handshake_timeout=lim.handshake_timeout,
        # The runtime's loop keeps WebSockets alive (see .protocol.keepalive and
        # Server.keep_alive): the sessions' own keepalive stays off.
        ping_interval=0,
        ping_timeout=lim.ping_timeout,
        close_timeout=lim.close_timeout,
        client_publish=config.channels.client_publish,
        http_enabled=config.http.enabled,
        publish_token=config.http.publish_token,
        metrics_enabled=config.metrics.enabled,
        status_enabled=config.status.enabled,
        compression=config.compression.enabled,
        path_prefix=config.server.path_prefix,
        trusted_proxies=config.server.trusted_proxies,
        proxy_protocol=config.server.proxy_protocol,
        max_channel_name=config.channels.max_name_length,
        echo=config.server.echo,
        publish_tokens=auth.publish_tokens,
        subscribe_tokens=auth.subscribe_tokens,
        require_subscribe_auth=auth.require_subscribe_auth,
        require_publish_auth=auth.require_publish_auth,
        jwt_secret=auth.jwt_secret,
        jwt_public_key=auth.read_jwt_public_key(),
        jwt_algorithms=auth.jwt_algorithms,
        jwt_audience=auth.jwt_audience,
        jwt_issuer=auth.jwt_issuer,
        jwt_leeway=auth.jwt_leeway,
        allowed_origins=config.http.allowed_origins,
        max_messages_per_second=lim.max_messages_per_second,
        message_burst=lim.message_burst,
        max_message_frames=lim.max_message_frames,
        max_subscriptions=lim.max_subscriptions,
        max_control_frames_per_second=lim.max_control_frames_per_second,
        control_frame_burst=lim.control_frame_burst,
        message_timeout=lim.message_timeout,
        max_request_line=lim.max_request_line,
        max_header_size=lim.max_header_size,
        max_headers=lim.max_headers,
    )


@dataclass(slots=True)
class Current:
    """The configuration in force and the protocol settings made from it. Every part of
    the runtime holds this one object and reads it when it acts, so a reload that swaps
    both (together: they must agree) reaches them all at once."""

    config: Config
    settings: ProtocolSettings

    @classmethod
    def of(cls, config: Config) -> Current:
        """Raises ValueError as `protocol_settings` does."""
        return cls(config, protocol_settings(config))
