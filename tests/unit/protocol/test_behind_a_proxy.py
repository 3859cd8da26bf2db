"""Behind a proxy: ``server.trusted_proxies`` name the client (X-Forwarded-For, or a PROXY
protocol header with ``server.proxy_protocol``), and ``server.path_prefix`` serves the
routes under a prefix. The runtime counts a :class:`ClientAddress` that is the
connection's in the per-address limits (tests/e2e/test_behind_a_proxy.py)."""

from __future__ import annotations

import dataclasses
import struct
from ipaddress import IPv4Address

import pytest

from ringcast.server.protocol import (
    ClientAddress,
    HttpPublish,
    ProtocolSettings,
    Refusal,
    Session,
    Subscribe,
)

from .harness import http_request, parse_response, refusals, sent, settings, upgrade_request

PROXY = "10.0.0.5"
TRUSTED = settings(trusted_proxies=("10.0.0.0/24",))
WITH_HEADER = dataclasses.replace(TRUSTED, proxy_protocol=True)
V1 = b"PROXY TCP4 203.0.113.7 10.0.0.5 51000 8080\r\n"


def both_paths(protocol: ProtocolSettings) -> list[ProtocolSettings]:
    return [protocol, dataclasses.replace(protocol, fast_path=False)]


def receive(protocol: ProtocolSettings, *pieces: bytes, peer: str = PROXY) -> list[object]:
    session = Session(protocol, 0.0, peer=peer)
    actions: list[object] = []
    for piece in pieces:
        actions += session.receive_data(piece, 0.0)
    return actions


class TestXForwardedFor:
    @pytest.mark.parametrize("protocol", both_paths(TRUSTED), ids=["fast", "h11"])
    def test_a_handshake_through_a_trusted_proxy_names_its_client_before_the_101(
            self, protocol: ProtocolSettings) -> None:
        actions = receive(protocol, upgrade_request(
            "/news", X_Forwarded_For="198.51.100.1, 203.0.113.7"))
        assert actions[0] == ClientAddress("203.0.113.7", of_connection=True)
        assert sent(actions[1:]).startswith(b"HTTP/1.1 101 ")
        assert actions[-1] == Subscribe("news")

    @pytest.mark.parametrize("protocol", both_paths(TRUSTED), ids=["fast", "h11"])
    def test_without_the_header_the_proxy_is_the_client(self, protocol: ProtocolSettings) -> None:
        assert receive(protocol, upgrade_request("/news"))[0] == ClientAddress(PROXY, True)

    @pytest.mark.parametrize("protocol", both_paths(TRUSTED), ids=["fast", "h11"])
    def test_a_publish_names_its_client_for_the_logs_only(
            self, protocol: ProtocolSettings) -> None:
        request = http_request("POST", "/publish/news", [("X-Forwarded-For", "203.0.113.9")],
                               b"hi")
        assert receive(protocol, request) == [ClientAddress("203.0.113.9", of_connection=False),
                                              HttpPublish("news", b"hi", False)]

    @pytest.mark.parametrize("protocol", both_paths(TRUSTED), ids=["fast", "h11"])
    def test_anyone_else_is_not_believed(self, protocol: ProtocolSettings) -> None:
        actions = receive(protocol, upgrade_request("/news", X_Forwarded_For="203.0.113.7"),
                          peer="192.0.2.1")
        assert not [a for a in actions if isinstance(a, ClientAddress)]
        assert actions[-1] == Subscribe("news")


def v2_header(source: str, port: int = 51000) -> bytes:
    body = IPv4Address(source).packed + IPv4Address(PROXY).packed + struct.pack("!HH", port, 8080)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


class TestProxyProtocol:
    """HAProxy's PROXY protocol, sections 2.1 (v1) and 2.2 (v2)."""

    @pytest.mark.parametrize("header", [V1, v2_header("203.0.113.7")], ids=["v1", "v2"])
    def test_the_header_names_the_client_then_the_handshake_goes_on(self, header: bytes) -> None:
        data = header + upgrade_request("/news", X_Forwarded_For="198.51.100.66")
        for cut in (len(header) - 3, len(header), len(header) + 10):
            actions = receive(WITH_HEADER, data[:cut], data[cut:])
            # The header's word, not X-Forwarded-For's.
            assert actions[0] == ClientAddress("203.0.113.7", of_connection=True), cut
            assert actions[-1] == Subscribe("news")

    def test_a_connection_without_the_header_is_refused_with_400(self) -> None:
        actions = receive(WITH_HEADER, upgrade_request("/news"))
        assert parse_response(sent(actions)).status == 400
        assert [r.reason for r in refusals(actions)] == [Refusal.BAD_PROXY_HEADER]

    def test_from_anyone_else_a_header_is_not_believed(self) -> None:
        actions = receive(WITH_HEADER, V1 + upgrade_request("/news"), peer="192.0.2.1")
        assert not [a for a in actions if isinstance(a, ClientAddress)]
        assert parse_response(sent(actions)).status == 400

    def test_closed_before_the_header_is_whole_ends_quietly(self) -> None:
        actions = receive(WITH_HEADER, V1[:10], b"")
        assert sent(actions) == b""
        assert not refusals(actions)


class TestPathPrefix:
    PREFIXED = settings(path_prefix="/ws")

    @pytest.mark.parametrize("protocol", both_paths(PREFIXED), ids=["fast", "h11"])
    @pytest.mark.parametrize("target", ["/ws/news", "/news"])
    def test_channels_are_served_with_and_without_it(self, protocol: ProtocolSettings,
                                                     target: str) -> None:
        assert receive(protocol, upgrade_request(target), peer="192.0.2.1")[-1] \
            == Subscribe("news")

    @pytest.mark.parametrize("protocol", both_paths(PREFIXED), ids=["fast", "h11"])
    def test_publish_under_the_prefix(self, protocol: ProtocolSettings) -> None:
        request = http_request("POST", "/ws/publish/news", [("Content-Type", "text/plain")],
                               b"hi")
        assert receive(protocol, request, peer="192.0.2.1") == [HttpPublish("news", b"hi", True)]

    @pytest.mark.parametrize("protocol", both_paths(PREFIXED), ids=["fast", "h11"])
    def test_only_a_whole_segment_is_the_prefix(self, protocol: ProtocolSettings) -> None:
        """``/wsx/news`` is not under ``/ws``: it names the channel ``wsx/news`` (refused)."""
        actions = receive(protocol, upgrade_request("/wsx/news"), peer="192.0.2.1")
        assert parse_response(sent(actions)).status == 400
        assert [r.reason for r in refusals(actions)] == [Refusal.BAD_CHANNEL]

    def test_a_prefix_must_start_with_a_slash_and_not_end_with_one(self) -> None:
        for bad in ("ws", "/ws/"):
            with pytest.raises(ValueError, match="path_prefix"):
                settings(path_prefix=bad)
