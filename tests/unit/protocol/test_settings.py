"""ProtocolSettings refuses values no session could work with."""

from __future__ import annotations

import dataclasses

import pytest

from ringcast.server.protocol import ProtocolSettings

from .harness import SETTINGS, settings


class TestProtocolSettings:
    def test_fields_in_order(self) -> None:
        assert [f.name for f in dataclasses.fields(ProtocolSettings)] == [
            "max_message_size",
            "max_http_body",
            "handshake_timeout",
            "ping_interval",
            "ping_timeout",
            "close_timeout",
            "client_publish",
            "http_enabled",
            "publish_token",
            "metrics_enabled",
            "max_channel_name",
            "echo",
        ]

    def test_frozen(self) -> None:
        with pytest.raises(dataclasses.FrozenInstanceError):
            SETTINGS.echo = True  # type: ignore[misc]

    def test_zero_sizes_and_no_keepalive_are_allowed(self) -> None:
        settings(max_message_size=0, max_http_body=0, ping_interval=0.0)

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("max_message_size", -1, "max_message_size is -1, expected at least 0"),
            ("max_http_body", -5, "max_http_body is -5, expected at least 0"),
            ("handshake_timeout", 0.0, "handshake_timeout is 0.0, expected more than 0"),
            ("ping_timeout", -1.0, "ping_timeout is -1.0, expected more than 0"),
            ("close_timeout", float("nan"), "close_timeout is nan, expected more than 0"),
            ("ping_interval", -1.0, "ping_interval is -1.0, expected 0 (off) or more"),
            ("max_channel_name", 0, "max_channel_name is 0, expected at least 1"),
        ],
    )
    def test_invalid_values(self, field: str, value: float, message: str) -> None:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            settings(**{field: value})
