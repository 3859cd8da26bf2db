"""The client's real address behind trusted proxies: the PROXY protocol (HAProxy's
proxy-protocol.txt, sections 2.1 and 2.2) and X-Forwarded-For (RFC 7239 section 5.2 for
the same list, RFC 9110 sections 5.3 and 5.6.1 for combining headers and empty elements).

Version 2 headers are built here with ``struct``, never with the module under test."""

from __future__ import annotations

import re
import struct
from ipaddress import IPv4Address, IPv6Address
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringcast.server.protocol.client_address import (
    ProxyHeader,
    ProxyHeaderError,
    TrustedProxies,
    forwarded_client,
    read_proxy_header,
)

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PROXY_V2, LOCAL_V2 = 0x21, 0x20  # version 2 with command PROXY / LOCAL
TCP4, UDP4, TCP6, UNIX_STREAM, UNSPEC = 0x11, 0x12, 0x21, 0x31, 0x00


def v2(ver_cmd: int, family: int, block: bytes = b"", *, length: int | None = None) -> bytes:
    """A version 2 header: signature, the two bytes, the length (of ``block`` by default)."""
    size = len(block) if length is None else length
    return SIGNATURE + struct.pack("!BBH", ver_cmd, family, size) + block


def inet(source: str = "192.0.2.1", destination: str = "198.51.100.2", port: int = 51234) -> bytes:
    return struct.pack(
        "!4s4sHH", IPv4Address(source).packed, IPv4Address(destination).packed, port, 443
    )


def inet6(
    source: str = "2001:db8::1", destination: str = "2001:db8::2", port: int = 51234
) -> bytes:
    return struct.pack(
        "!16s16sHH", IPv6Address(source).packed, IPv6Address(destination).packed, port, 443
    )


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


TLVS = tlv(0x01, b"h2") + tlv(0x02, b"ws.example.com") + tlv(0x04, b"\x00\x00\x00")
REQUEST = b"GET /news HTTP/1.1\r\nHost: ws.example.com\r\n\r\n"


def rejected(data: bytes, match: str) -> None:
    with pytest.raises(ProxyHeaderError, match=match):
        read_proxy_header(data)


class TestSection2_1HumanReadableHeaderFormatV1:
    def test_tcp4(self) -> None:
        line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        assert read_proxy_header(line) == ProxyHeader(len(line), "192.168.0.1", 56324)

    def test_tcp6_is_normalised(self) -> None:
        line = b"PROXY TCP6 2001:0DB8:0:0:0:0:0:0001 2001:db8::2 56324 443\r\n"
        assert read_proxy_header(line) == ProxyHeader(len(line), "2001:db8::1", 56324)

    def test_tcp6_ipv4_mapped_source_is_reported_as_ipv4(self) -> None:
        line = b"PROXY TCP6 ::ffff:192.0.2.1 ::ffff:192.0.2.2 1 2\r\n"
        assert read_proxy_header(line) == ProxyHeader(len(line), "192.0.2.1", 1)

    def test_longest_tcp6_line_is_accepted(self) -> None:
        full = ":".join(["ffff"] * 8)
        line = f"PROXY TCP6 {full} {full} 65535 65535\r\n".encode()
        assert len(line) == 104  # the section's own count
        assert read_proxy_header(line) == ProxyHeader(
            104, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535
        )

    def test_port_zero_is_allowed(self) -> None:
        line = b"PROXY TCP4 192.0.2.1 192.0.2.2 0 0\r\n"
        assert read_proxy_header(line) == ProxyHeader(len(line), "192.0.2.1", 0)

    def test_unknown_short_form(self) -> None:
        assert read_proxy_header(b"PROXY UNKNOWN\r\n") == ProxyHeader(15, None, None)

    def test_unknown_ignores_anything_before_the_crlf(self) -> None:
        line = b"PROXY UNKNOWN \xff whatever\n it says\r\n"
        assert read_proxy_header(line + REQUEST) == ProxyHeader(len(line), None, None)

    def test_unknown_worst_case_of_107_bytes_is_accepted(self) -> None:
        full = ":".join(["ffff"] * 8)
        line = f"PROXY UNKNOWN {full} {full} 65535 65535\r\n".encode()
        assert len(line) == 107
        assert read_proxy_header(line) == ProxyHeader(107, None, None)

    def test_107_bytes_without_crlf_is_too_long(self) -> None:
        rejected(b"PROXY UNKNOWN " + b"x" * 93, "PROXY protocol v1 header longer than 107 bytes")

    def test_106_bytes_without_crlf_may_still_end(self) -> None:
        assert read_proxy_header(b"PROXY UNKNOWN " + b"x" * 92) is None

    def test_crlf_ending_at_byte_108_is_too_long(self) -> None:
        line = b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n"
        assert len(line) == 108
        rejected(line, "longer than 107 bytes")

    def test_lone_lf_does_not_end_the_line(self) -> None:
        rejected(b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n", "CRLF is required")

    def test_lone_cr_does_not_end_the_line(self) -> None:
        rejected(b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\rX\r\n", "b'2\\\\rX' is not a port")

    @pytest.mark.parametrize(
        ("source", "destination", "family"),
        [
            (b"10.0.0.300", b"192.0.2.2", b"TCP4"),
            (b"010.0.0.1", b"192.0.2.2", b"TCP4"),  # leading zero: octal confusion
            (b"2001:db8::1", b"192.0.2.2", b"TCP4"),
            (b"192.0.2.1", b"2001:db8::2", b"TCP6"),
            (b"fe80::1%eth0", b"2001:db8::2", b"TCP6"),
            (b"192.0.2.1", b"192.0.2", b"TCP4"),  # the destination is validated too
            (b"example.com", b"192.0.2.2", b"TCP4"),
        ],
    )
    def test_bad_address(self, source: bytes, destination: bytes, family: bytes) -> None:
        version = family[-1:].decode()
        line = b"PROXY %s %s %s 1 2\r\n" % (family, source, destination)
        rejected(line, f"is not an IPv{version} address")

    @pytest.mark.parametrize(
        "port", [b"65536", b"-1", b"+80", b"080", b"8o", b"\xd9\xa8", b"99999999"]
    )
    def test_bad_port(self, port: bytes) -> None:
        rejected(b"PROXY TCP4 192.0.2.1 192.0.2.2 %s 443\r\n" % port, "is not a port")
        rejected(b"PROXY TCP4 192.0.2.1 192.0.2.2 443 %s\r\n" % port, "is not a port")

    @pytest.mark.parametrize(
        "line",
        [
            b"PROXY TCP4 192.0.2.1  192.0.2.2 1 2\r\n",  # two spaces
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2 \r\n",
            b"PROXY tcp4 192.0.2.1 192.0.2.2 1 2\r\n",
            b"PROXY UDP4 192.0.2.1 192.0.2.2 1 2\r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY \r\n",
        ],
    )
    def test_malformed_line(self, line: bytes) -> None:
        rejected(line, "is not 'TCP4|TCP6")

    def test_data_after_the_line_is_not_consumed(self) -> None:
        line = b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n"
        header = read_proxy_header(line + REQUEST)
        assert header is not None
        assert (line + REQUEST)[header.length :] == REQUEST


class TestSection2_2BinaryHeaderFormatV2:
    def test_proxy_tcp_over_ipv4(self) -> None:
        assert read_proxy_header(v2(PROXY_V2, TCP4, inet())) == ProxyHeader(28, "192.0.2.1", 51234)

    def test_udp_over_ipv4_reports_the_source_too(self) -> None:
        header = read_proxy_header(v2(PROXY_V2, UDP4, inet(port=53)))
        assert header == ProxyHeader(28, "192.0.2.1", 53)

    def test_tlvs_are_skipped(self) -> None:
        data = v2(PROXY_V2, TCP4, inet() + TLVS)
        assert read_proxy_header(data + REQUEST) == ProxyHeader(28 + len(TLVS), "192.0.2.1", 51234)

    def test_proxy_tcp_over_ipv6(self) -> None:
        header = read_proxy_header(v2(PROXY_V2, TCP6, inet6(port=7)))
        assert header == ProxyHeader(52, "2001:db8::1", 7)

    def test_proxy_tcp_over_ipv6_with_tlvs(self) -> None:
        data = v2(PROXY_V2, TCP6, inet6() + TLVS)
        assert read_proxy_header(data) == ProxyHeader(52 + len(TLVS), "2001:db8::1", 51234)

    def test_ipv4_mapped_source_is_reported_as_ipv4(self) -> None:
        header = read_proxy_header(v2(PROXY_V2, TCP6, inet6(source="::ffff:192.0.2.9")))
        assert header == ProxyHeader(52, "192.0.2.9", 51234)

    def test_local_has_no_source(self) -> None:
        assert read_proxy_header(v2(LOCAL_V2, UNSPEC) + REQUEST) == ProxyHeader(16, None, None)

    def test_local_skips_its_address_block_and_ignores_the_family(self) -> None:
        assert read_proxy_header(v2(LOCAL_V2, TCP4, inet())) == ProxyHeader(28, None, None)
        assert read_proxy_header(v2(LOCAL_V2, 0xFF, b"\x00" * 5)) == ProxyHeader(21, None, None)

    def test_unspec_has_no_source_and_its_bytes_are_skipped(self) -> None:
        assert read_proxy_header(v2(PROXY_V2, UNSPEC)) == ProxyHeader(16, None, None)
        assert read_proxy_header(v2(PROXY_V2, UNSPEC, inet())) == ProxyHeader(28, None, None)

    def test_unspec_protocol_over_ipv4_has_no_source(self) -> None:
        assert read_proxy_header(v2(PROXY_V2, 0x10, inet())) == ProxyHeader(28, None, None)

    def test_unix_has_no_source(self) -> None:
        block = b"/run/haproxy.sock".ljust(108, b"\x00") + b"/run/ringcast.sock".ljust(108, b"\x00")
        assert read_proxy_header(v2(PROXY_V2, UNIX_STREAM, block)) == ProxyHeader(232, None, None)

    @pytest.mark.parametrize("ver_cmd", [0x11, 0x31, 0x01, 0xF1])
    def test_bad_version(self, ver_cmd: int) -> None:
        rejected(v2(ver_cmd, TCP4, inet()), f"has version {ver_cmd >> 4}, not 2")

    @pytest.mark.parametrize("ver_cmd", [0x22, 0x2F])
    def test_bad_command(self, ver_cmd: int) -> None:
        rejected(v2(ver_cmd, TCP4, inet()), "neither LOCAL")

    @pytest.mark.parametrize("family", [0x41, 0x13, 0xF0, 0x03])
    def test_unknown_family_or_protocol(self, family: int) -> None:
        rejected(v2(PROXY_V2, family, b"\x00" * 216), "family/protocol .* is unknown")

    @pytest.mark.parametrize(
        ("family", "size", "name"),
        [(TCP4, 12, "AF_INET"), (TCP6, 36, "AF_INET6"), (UNIX_STREAM, 216, "AF_UNIX")],
    )
    def test_short_address_block(self, family: int, size: int, name: str) -> None:
        message = f"address block of {size - 1} bytes is too short for {name} \\({size} bytes\\)"
        rejected(v2(PROXY_V2, family, b"\x00" * (size - 1)), message)
        # Known from the fixed 16 bytes alone: no waiting for the block.
        rejected(v2(PROXY_V2, family, length=size - 1), message)

    def test_4096_bytes_is_the_most_accepted(self) -> None:
        data = v2(PROXY_V2, TCP4, inet() + tlv(0x04, b"\x00" * (4096 - 28 - 3)))
        assert len(data) == 4096
        assert read_proxy_header(data) == ProxyHeader(4096, "192.0.2.1", 51234)

    @pytest.mark.parametrize("length", [4096 - 16 + 1, 65535])
    def test_over_the_cap_is_refused_before_it_arrives(self, length: int) -> None:
        rejected(v2(PROXY_V2, TCP4, length=length), f"of {length + 16} bytes exceeds the 4096-byte")
        rejected(v2(LOCAL_V2, UNSPEC, length=length), "exceeds the 4096-byte limit")

    def test_incomplete_header_waits(self) -> None:
        data = v2(PROXY_V2, TCP6, inet6() + TLVS)
        assert read_proxy_header(SIGNATURE[:10]) is None
        assert read_proxy_header(data[:16]) is None
        assert read_proxy_header(data[:-1]) is None

    def test_data_after_the_header_is_not_consumed(self) -> None:
        data = v2(PROXY_V2, TCP4, inet() + TLVS)
        header = read_proxy_header(data + REQUEST)
        assert header is not None
        assert (data + REQUEST)[header.length :] == REQUEST


class TestSection2_2IdentifyingTheProtocolVersion:
    @pytest.mark.parametrize("data", [b"", b"P", b"PRO", b"PROXY", b"PROXY ", b"\r\n\r", SIGNATURE])
    def test_a_prefix_of_either_signature_waits(self, data: bytes) -> None:
        assert read_proxy_header(data) is None

    @pytest.mark.parametrize(
        "data",
        [
            REQUEST,
            b"G",
            b"POST /publish/news HTTP/1.1\r\n",
            b"PROPFIND / HTTP/1.1\r\n",
            b"PROXY\r\n",
            b"\x16\x03\x01\x02\x00",  # a TLS ClientHello
            b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c",
            b"\r\n\r\n\x01",
        ],
    )
    def test_anything_else_is_refused_as_soon_as_it_differs(self, data: bytes) -> None:
        rejected(data, "not a PROXY protocol header: the connection starts with")


def _v1_tcp(version: Literal[4, 6]) -> st.SearchStrategy[tuple[bytes, ProxyHeader]]:
    def build(
        source: IPv4Address | IPv6Address, destination: object, ports: tuple[int, int]
    ) -> tuple[bytes, ProxyHeader]:
        line = f"PROXY TCP{version} {source} {destination} {ports[0]} {ports[1]}\r\n".encode()
        mapped = source.ipv4_mapped if isinstance(source, IPv6Address) else None
        return line, ProxyHeader(len(line), str(mapped or source), ports[0])

    ports = st.tuples(st.integers(0, 65535), st.integers(0, 65535))
    return st.builds(build, st.ip_addresses(v=version), st.ip_addresses(v=version), ports)


def _v2_inet(version: Literal[4, 6]) -> st.SearchStrategy[tuple[bytes, ProxyHeader]]:
    def build(
        source: IPv4Address | IPv6Address, port: int, extra: bytes, family: int
    ) -> tuple[bytes, ProxyHeader]:
        fmt = "!4s4sHH" if version == 4 else "!16s16sHH"
        block = struct.pack(fmt, source.packed, source.packed, port, 443) + extra
        mapped = source.ipv4_mapped if isinstance(source, IPv6Address) else None
        data = v2(PROXY_V2, family, block)
        return data, ProxyHeader(len(data), str(mapped or source), port)

    families = st.sampled_from([0x11, 0x12] if version == 4 else [0x21, 0x22])
    extras = st.binary(max_size=64)
    return st.builds(build, st.ip_addresses(v=version), st.integers(0, 65535), extras, families)


VALID_HEADERS = st.one_of(
    _v1_tcp(4),
    _v1_tcp(6),
    st.just((b"PROXY UNKNOWN\r\n", ProxyHeader(15, None, None))),
    _v2_inet(4),
    _v2_inet(6),
    st.binary(max_size=40).map(
        lambda b: (v2(LOCAL_V2, UNSPEC, b), ProxyHeader(16 + len(b), None, None))
    ),
)


class TestSection2HeadersArriveInPieces:
    """Section 2: TCP may deliver the header one byte at a time; the reader waits."""

    @given(VALID_HEADERS, st.binary(max_size=64))
    def test_every_prefix_waits_and_the_whole_header_is_read_exactly(
        self, case: tuple[bytes, ProxyHeader], after: bytes
    ) -> None:
        data, expected = case
        for cut in range(len(data)):
            assert read_proxy_header(data[:cut]) is None, cut
        assert read_proxy_header(data) == expected
        assert read_proxy_header(data + after) == expected


TRUSTED = TrustedProxies.parse(["10.0.0.0/8", "127.0.0.1", "fd00::/8"])


class TestTrustedProxies:
    def test_parse_error_names_the_entry(self) -> None:
        expected = (
            "server.trusted_proxies: '10.0.0.300' is not an IP address or network "
            "(e.g. 10.0.0.1 or 10.0.0.0/8)"
        )
        with pytest.raises(ValueError) as info:
            TrustedProxies.parse(["127.0.0.1", "10.0.0.300"])
        assert str(info.value) == expected

    @pytest.mark.parametrize(
        "entry", ["10.0.0.0/33", "fd00::/129", "example.com", "", "10.0.0.0/8/8", "*"]
    )
    def test_parse_refuses(self, entry: str) -> None:
        with pytest.raises(
            ValueError, match=f"^server.trusted_proxies: {re.escape(repr(entry))} is not an IP"
        ):
            TrustedProxies.parse([entry])

    def test_parse_refuses_a_non_string_entry(self) -> None:
        with pytest.raises(ValueError, match="10 is not an IP address"):
            TrustedProxies.parse([10])  # type: ignore[list-item]

    def test_parse_refuses_a_bare_string(self) -> None:
        with pytest.raises(ValueError, match="expected a list"):
            TrustedProxies.parse("10.0.0.1")

    def test_bool(self) -> None:
        assert not TrustedProxies.parse([])
        assert TrustedProxies.parse(["::1"])

    @pytest.mark.parametrize(
        ("address", "trusted"),
        [
            ("10.1.2.3", True),
            ("11.0.0.1", False),
            ("127.0.0.1", True),
            ("127.0.0.2", False),
            ("fd12::1", True),
            ("fe80::1", False),
            ("::ffff:10.1.2.3", True),  # a dual-stack socket's view of an IPv4 peer
            ("", False),
            ("localhost", False),
            ("/run/ringcast.sock", False),
        ],
    )
    def test_trusts(self, address: str, trusted: bool) -> None:
        assert TRUSTED.trusts(address) is trusted

    def test_entries_are_stripped_and_host_bits_ignored(self) -> None:
        assert TrustedProxies.parse([" 10.0.0.1/8 "]).trusts("10.200.0.1")

    def test_ipv4_mapped_entry_matches_ipv4_peers(self) -> None:
        proxies = TrustedProxies.parse(["::ffff:10.0.0.0/104", "::ffff:192.0.2.7"])
        assert proxies.trusts("10.9.9.9")
        assert proxies.trusts("192.0.2.7")
        assert not proxies.trusts("192.0.2.8")

    def test_ipv6_networks_do_not_cover_ipv4(self) -> None:
        assert not TrustedProxies.parse(["::/0"]).trusts("192.0.2.1")

    def test_scoped_peer(self) -> None:
        assert TrustedProxies.parse(["fe80::/10"]).trusts("fe80::1%eth0")


class TestXForwardedFor:
    """X-Forwarded-For: believed only from a trusted peer, walked from the right."""

    def test_untrusted_peer_ignores_the_header(self) -> None:
        assert forwarded_client("203.0.113.9", [b"198.51.100.1"], TRUSTED) == "203.0.113.9"

    def test_untrusted_peer_is_normalised(self) -> None:
        assert forwarded_client("::ffff:203.0.113.9", [b"198.51.100.1"], TRUSTED) == "203.0.113.9"

    def test_no_trusted_proxies_means_the_peer(self) -> None:
        assert (
            forwarded_client("10.0.0.1", [b"198.51.100.1"], TrustedProxies.parse([])) == "10.0.0.1"
        )

    def test_trusted_peer_without_header_is_the_client(self) -> None:
        assert forwarded_client("10.0.0.1", [], TRUSTED) == "10.0.0.1"

    def test_trusted_peer_gives_the_rightmost_untrusted_hop(self) -> None:
        values = [b"192.0.2.66, 203.0.113.7, 10.0.0.2, 127.0.0.1"]  # 192.0.2.66 may be forged
        assert forwarded_client("10.0.0.1", values, TRUSTED) == "203.0.113.7"

    def test_several_headers_are_one_list_in_order(self) -> None:
        assert (
            forwarded_client("10.0.0.1", [b"203.0.113.7", b"198.51.100.1"], TRUSTED)
            == "198.51.100.1"
        )
        assert (
            forwarded_client("10.0.0.1", [b"198.51.100.1", b"203.0.113.7, 10.0.0.2"], TRUSTED)
            == "203.0.113.7"
        )

    def test_all_trusted_gives_the_leftmost(self) -> None:
        assert (
            forwarded_client("10.0.0.1", [b"10.0.0.3, 10.0.0.2", b"fd00::5"], TRUSTED) == "10.0.0.3"
        )

    def test_empty_elements_are_skipped(self) -> None:
        values = [b"198.51.100.1, ,\t, 10.0.0.2", b""]
        assert forwarded_client("10.0.0.1", values, TRUSTED) == "198.51.100.1"

    @pytest.mark.parametrize(
        "bad", [b"unknown", b"_hidden", b"198.51.100.\xb9", b"fe80::1%eth0", b"1.2.3"]
    )
    def test_malformed_element_stops_at_the_nearest_good_hop(self, bad: bytes) -> None:
        values = [b"198.51.100.1, " + bad + b", 10.0.0.2"]
        assert forwarded_client("10.0.0.1", values, TRUSTED) == "10.0.0.2"
        assert forwarded_client("10.0.0.1", [b"198.51.100.1, " + bad], TRUSTED) == "10.0.0.1"

    @pytest.mark.parametrize(
        "element", [b"[2001:db8::1]:4711", b"[2001:db8::1]", b"2001:db8::1", b" 2001:DB8:0::1\t"]
    )
    def test_ipv6_bracketed_or_not_is_normalised(self, element: bytes) -> None:
        assert forwarded_client("10.0.0.1", [element], TRUSTED) == "2001:db8::1"

    @pytest.mark.parametrize(
        "element",
        [
            b"[198.51.100.1]",
            b"[2001:db8::1",
            b"[2001:db8::1]4711",
            b"[2001:db8::1]:",
            b"[2001:db8::1]:http",
        ],
    )
    def test_malformed_brackets(self, element: bytes) -> None:
        assert forwarded_client("10.0.0.1", [element], TRUSTED) == "10.0.0.1"

    def test_ipv4_with_port(self) -> None:
        assert forwarded_client("10.0.0.1", [b"198.51.100.1:8080"], TRUSTED) == "198.51.100.1"

    @pytest.mark.parametrize(
        "element", [b"198.51.100.1:99999", b"198.51.100.1:", b"198.51.100.1:-1", b"host:80"]
    )
    def test_ipv4_with_bad_port(self, element: bytes) -> None:
        assert forwarded_client("10.0.0.1", [element], TRUSTED) == "10.0.0.1"

    def test_ipv4_mapped_hops_are_ipv4(self) -> None:
        assert forwarded_client("10.0.0.1", [b"::ffff:198.51.100.1"], TRUSTED) == "198.51.100.1"
        # A mapped trusted hop is recognised as the trusted IPv4 proxy and skipped.
        assert (
            forwarded_client("::ffff:10.0.0.1", [b"198.51.100.1, ::ffff:10.0.0.2"], TRUSTED)
            == "198.51.100.1"
        )

    def test_unparsable_peer_is_returned_unchanged(self) -> None:
        assert (
            forwarded_client("/run/ringcast.sock", [b"198.51.100.1"], TRUSTED)
            == "/run/ringcast.sock"
        )
