"""ProtocolSettings refuses values no session could work with."""

from __future__ import annotations

import dataclasses
import re

import pytest

from ringcast.server.protocol import ProtocolSettings

from .harness import SETTINGS, settings
from .tokens import SECRET, ec_key, private_pem, public_pem, rsa_key


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
            "publish_tokens",
            "subscribe_tokens",
            "require_subscribe_auth",
            "require_publish_auth",
            "jwt_secret",
            "jwt_public_key",
            "jwt_algorithms",
            "jwt_audience",
            "jwt_issuer",
            "jwt_leeway",
            "allowed_origins",
            "max_messages_per_second",
            "message_burst",
            "max_message_frames",
            "max_subscriptions",
            "max_control_frames_per_second",
            "control_frame_burst",
            "message_timeout",
            "max_request_line",
            "max_header_size",
            "max_headers",
            "path_prefix",
            "trusted_proxies",
            "proxy_protocol",
            "status_enabled",
            "compression",
            "fast_path",
            "authenticator",
            "origins",
            "proxies",
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


class TestTokenSettings:
    def test_defaults_are_all_off(self) -> None:
        auth = SETTINGS.authenticator
        assert not auth.enabled
        assert not auth.publish_configured
        assert SETTINGS.origins.allows_any

    def test_secrets_are_not_in_the_repr(self) -> None:
        text = repr(
            settings(publish_token="legacy-token", publish_tokens=("p" * 16,), jwt_secret=SECRET)
        )
        assert "legacy-token" not in text
        assert "p" * 16 not in text
        assert SECRET not in text

    def test_arrays_must_be_tuples(self) -> None:
        with pytest.raises(TypeError, match="publish_tokens must be a tuple"):
            settings(publish_tokens=["x" * 16])

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"message_burst": 0}, "message_burst is 0, expected at least 1"),
            ({"max_request_line": 15}, "max_request_line is 15, expected at least 16"),
            ({"max_header_size": 0}, "max_header_size is 0, expected at least 1"),
            ({"max_headers": 0}, "max_headers is 0, expected at least 1"),
            ({"max_messages_per_second": -1.0}, "max_messages_per_second is -1.0"),
            ({"max_messages_per_second": float("inf")}, "max_messages_per_second is inf"),
            ({"jwt_leeway": float("nan")}, "jwt_leeway is nan"),
            ({"publish_tokens": ("has space",)}, "printable ASCII without spaces"),
            ({"subscribe_tokens": ("",)}, "printable ASCII without spaces"),
            ({"publish_token": "t\x00k"}, "printable ASCII without spaces"),
            ({"require_subscribe_auth": True}, "require_subscribe_auth is set, but no token"),
            (
                {"require_publish_auth": True, "subscribe_tokens": ("s" * 16,)},
                "require_publish_auth is set, but no publish token",
            ),
            ({"jwt_secret": SECRET, "jwt_algorithms": ("RS256",)}, "lists no HS256"),
            ({"jwt_secret": SECRET, "jwt_algorithms": ("HS256", "ES256")}, "but no JWT public"),
            ({"jwt_secret": SECRET, "jwt_algorithms": ("none",)}, "'none' is not one of"),
            ({"jwt_secret": SECRET, "jwt_algorithms": ()}, "jwt_algorithms is empty"),
            ({"jwt_secret": "short"}, "the key for HS256 is too weak"),
            ({"jwt_secret": SECRET, "jwt_algorithms": ("HS512",)}, "the key for HS512 is too weak"),
        ],
    )
    def test_invalid_token_settings(self, changes: dict[str, object], message: str) -> None:
        with pytest.raises(ValueError, match=re.escape(message)):
            settings(**changes)

    def test_public_key_without_a_public_algorithm(self) -> None:
        with pytest.raises(ValueError, match="lists no RS"):
            settings(jwt_public_key=public_pem(rsa_key()))  # algorithms: HS256 only

    def test_an_algorithm_the_key_cannot_verify(self) -> None:
        with pytest.raises(ValueError, match="the key for ES256 is not usable"):
            settings(jwt_public_key=public_pem(rsa_key()), jwt_algorithms=("ES256",))
        with pytest.raises(ValueError, match="the key for ES384 is not usable"):
            settings(jwt_public_key=public_pem(ec_key()), jwt_algorithms=("ES384",))

    def test_a_private_key_is_refused(self) -> None:
        with pytest.raises(ValueError, match="holds a private key"):
            settings(jwt_public_key=private_pem(rsa_key()), jwt_algorithms=("RS256",))

    def test_a_short_rsa_key_is_refused(self) -> None:
        with pytest.raises(ValueError, match="the key for RS256 is too weak"):
            settings(jwt_public_key=public_pem(rsa_key(1024)), jwt_algorithms=("RS256",))

    def test_garbage_is_not_a_key(self) -> None:
        with pytest.raises(ValueError, match="the key for RS256 is not usable"):
            settings(jwt_public_key="not a pem", jwt_algorithms=("RS256",))

    def test_a_pem_is_not_an_hmac_secret(self) -> None:
        with pytest.raises(ValueError, match="the key for HS256 is not usable"):
            settings(jwt_secret=public_pem(rsa_key()))

    def test_both_families(self) -> None:
        both = settings(
            jwt_secret=SECRET,
            jwt_public_key=public_pem(ec_key()),
            jwt_algorithms=("HS256", "ES256"),
            require_subscribe_auth=True,
            require_publish_auth=True,
        )
        assert both.authenticator.enabled
        assert both.authenticator.publish_configured

    def test_replace_rebuilds_the_derived_fields(self) -> None:
        changed = dataclasses.replace(SETTINGS, publish_tokens=("p" * 16,))
        assert changed.authenticator.enabled
        assert not SETTINGS.authenticator.enabled
        assert changed != SETTINGS
