"""The client's real address, when connections come through proxies the operator trusts.

A proxy can say who its client is in two ways. Both are believed only from a peer in
``server.trusted_proxies`` (:class:`TrustedProxies`: addresses and networks); anyone else
could write anything there.

``X-Forwarded-For`` (de facto; RFC 7239 section 5.2 standardises the same list as
``Forwarded: for=``)
    Each proxy appends the address it got the request from, so the list reads ``client,
    proxy1, proxy2`` and the TCP peer is the last proxy. Only the right end can be checked:
    everything left of the first untrusted hop was written by that hop, maybe forged.
    :func:`forwarded_client` walks from the right past trusted hops and stops at the
    first untrusted one. Several headers are one list, in order (RFC 9110 section 5.3);
    empty elements are skipped (RFC 9110 section 5.6.1). An element that is not an IP
    address (``unknown``, an obfuscated name, garbage) ends the walk at the nearest good
    hop, so the answer is always an address.

PROXY protocol (https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt)
    A TCP proxy puts one header before the connection's first byte: a text line in
    version 1 (section 2.1), binary in version 2 (section 2.2). :func:`read_proxy_header`
    reads either, from bytes as they arrive. Section 2 forbids guessing whether a header
    is present, so bytes that are no PROXY header (a plain HTTP request) are an error,
    and section 2.1 says to abort on any mismatch as soon as possible. Version 2 allows
    16 + 65535 bytes; this reader refuses more than 4096 so that a peer cannot make the
    server buffer 64 KiB before the first request (real headers fit in one 536-byte
    segment, section 2). TLVs (section 2.2) are skipped.

Addresses are returned normalised: ``ipaddress``'s text form, an IPv4-mapped IPv6
address (``::ffff:1.2.3.4``, as a dual-stack socket reports IPv4 peers) as its IPv4
address. Trusted entries are mapped the same way, so ``127.0.0.1`` matches both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Final

__all__ = [
    "ProxyHeader",
    "ProxyHeaderError",
    "TrustedProxies",
    "forwarded_client",
    "read_proxy_header",
]

_Address = IPv4Address | IPv6Address
_Network = IPv4Network | IPv6Network

_MAPPED: Final = IPv6Network("::ffff:0:0/96")  # IPv4-mapped IPv6 (RFC 4291 section 2.5.5.2)
_OWS: Final = b" \t"

_V1_SIGNATURE: Final = b"PROXY "
_V1_MAX_LENGTH: Final = 107  # "PROXY UNKNOWN <two IPv6> 65535 65535\r\n", section 2.1
_V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED: Final = 16  # signature, version/command, family/protocol, length
_V2_MAX_LENGTH: Final = 4096
_V2_ADDRESS_SIZES: Final = {0: 0, 1: 12, 2: 36, 3: 216}  # by family: UNSPEC, INET, INET6, UNIX
_V2_FAMILIES: Final = {0: "AF_UNSPEC", 1: "AF_INET", 2: "AF_INET6", 3: "AF_UNIX"}
_LOCAL, _PROXY = 0, 1


class TrustedProxies:
    """Addresses and networks whose word about the client is believed."""

    __slots__ = ("_networks",)

    def __init__(self, networks: Iterable[_Network] = ()) -> None:
        self._networks = tuple(_unmap_network(network) for network in networks)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TrustedProxies:
        """From config entries such as ``127.0.0.1``, ``10.0.0.0/8``, ``::1``, ``fd00::/8``.

        Raises :exc:`ValueError` naming the first entry that is not an address or network
        (host bits under the prefix are ignored: ``10.0.0.1/8`` is ``10.0.0.0/8``).
        """
        if isinstance(entries, str):  # a bare string would be read character by character
            raise ValueError(f"server.trusted_proxies: expected a list, got the string {entries!r}")
        networks: list[_Network] = []
        for entry in entries:
            try:
                networks.append(ip_network(entry.strip(), strict=False))
            except (AttributeError, ValueError):  # AttributeError: not a string at all
                msg = (
                    f"server.trusted_proxies: {entry!r} is not an IP address or network "
                    "(e.g. 10.0.0.1 or 10.0.0.0/8)"
                )
                raise ValueError(msg) from None
        return cls(networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: str) -> bool:
        """Whether ``address`` (as ``getpeername`` gives it) is trusted; False if unparsable."""
        parsed = _peer_address(address)
        return parsed is not None and self._contains(parsed)

    def _contains(self, address: _Address) -> bool:
        return any(address in network for network in self._networks)


def forwarded_client(peer: str, forwarded_for: Sequence[bytes], trusted: TrustedProxies) -> str:
    """The client's address, given the TCP ``peer`` and each ``X-Forwarded-For`` value.

    ``peer`` itself unless it is trusted; then the rightmost untrusted hop of the list,
    or its leftmost hop if all are trusted. A malformed element (not an IP address; an
    IPv6 address may be in brackets, either may carry ``:port``) stops the walk: the
    nearest good hop seen so far is returned. An unparsable ``peer`` (a UNIX socket
    path) is returned as it is; every other answer is a normalised address.
    """
    nearest = _peer_address(peer)
    if nearest is None:
        return peer
    if trusted._contains(nearest):
        elements = [e for value in forwarded_for for e in value.split(b",") if e.strip(_OWS)]
        for element in reversed(elements):
            hop = _hop_address(element)
            if hop is None:
                break  # left of an unreadable hop nothing can be checked
            nearest = hop
            if not trusted._contains(hop):
                break
    return str(nearest)


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete PROXY protocol header."""

    length: int
    """Bytes of the header: strip exactly these before the HTTP request."""
    source: str | None
    """The client's address; ``None`` when the header gives none (v1 ``UNKNOWN``; v2
    ``LOCAL``, ``AF_UNSPEC``, ``AF_UNIX`` or protocol ``UNSPEC``): use the TCP peer."""
    source_port: int | None = None
    """The client's port, when ``source`` is an address."""


class ProxyHeaderError(ValueError):
    """The bytes cannot start a valid PROXY protocol header: close the connection."""


def read_proxy_header(data: bytes) -> ProxyHeader | None:
    """The PROXY protocol header (v1 or v2) at the start of ``data``.

    ``None``: all of ``data`` could still begin a valid header; call again with more
    bytes. Raises :exc:`ProxyHeaderError` as soon as the bytes cannot start a valid
    header, including when they start no PROXY header at all (a plain HTTP request) or a
    v2 header longer than 4096 bytes. Bytes after the header are not looked at.
    """
    for signature, read in ((_V1_SIGNATURE, _read_v1), (_V2_SIGNATURE, _read_v2)):
        if signature.startswith(data[: len(signature)]):  # both readers wait on a prefix
            return read(data)
    msg = f"not a PROXY protocol header: the connection starts with {data[:16]!r}"
    raise ProxyHeaderError(msg)


def _read_v1(data: bytes) -> ProxyHeader | None:
    window = data[:_V1_MAX_LENGTH]
    end = window.find(b"\r\n")
    if end >= 0:
        return _parse_v1_line(window[len(_V1_SIGNATURE) : end], end + 2)
    if len(window) == _V1_MAX_LENGTH:
        raise ProxyHeaderError(f"PROXY protocol v1 header longer than {_V1_MAX_LENGTH} bytes")
    if b"\n" in window and not window.startswith(b"PROXY UNKNOWN"):
        # A lone LF must not end the line (section 2.1); UNKNOWN lines may hold anything.
        raise ProxyHeaderError("PROXY protocol v1 line ends with LF; CRLF is required")
    return None


def _parse_v1_line(line: bytes, length: int) -> ProxyHeader:
    if line == b"UNKNOWN" or line.startswith(b"UNKNOWN "):
        return ProxyHeader(length, None, None)
    parts = line.split(b" ")
    if len(parts) != 5 or parts[0] not in (b"TCP4", b"TCP6"):
        msg = (
            f"PROXY protocol v1 line {line!r} is not 'TCP4|TCP6 <source> <destination> "
            "<source port> <destination port>' or 'UNKNOWN ...'"
        )
        raise ProxyHeaderError(msg)
    _, source, destination, source_port, destination_port = parts
    version = 4 if parts[0] == b"TCP4" else 6
    _v1_address(destination, version)  # validated, not used: the destination is us
    _v1_port(destination_port)
    return ProxyHeader(length, str(_unmap(_v1_address(source, version))), _v1_port(source_port))


def _v1_address(part: bytes, version: int) -> _Address:
    address = _wire_address(part.decode("latin-1"), version)
    if address is None:
        raise ProxyHeaderError(f"PROXY protocol v1: {part!r} is not an IPv{version} address")
    return address


def _v1_port(part: bytes) -> int:
    port = part.decode("latin-1")
    if not _is_port(port):
        msg = f"PROXY protocol v1: {part!r} is not a port (0 to 65535, no leading zeros)"
        raise ProxyHeaderError(msg)
    return int(port)


def _read_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < _V2_FIXED:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        raise ProxyHeaderError(f"PROXY protocol v2 header has version {version}, not 2")
    if command not in (_LOCAL, _PROXY):
        msg = f"PROXY protocol v2 command {command:#x} is neither LOCAL (0x0) nor PROXY (0x1)"
        raise ProxyHeaderError(msg)
    length = _V2_FIXED + int.from_bytes(data[14:16], "big")
    if length > _V2_MAX_LENGTH:
        msg = f"PROXY protocol v2 header of {length} bytes exceeds the {_V2_MAX_LENGTH}-byte limit"
        raise ProxyHeaderError(msg)
    family, protocol = data[13] >> 4, data[13] & 0x0F
    if command == _PROXY:  # LOCAL: the family byte and addresses are ignored (section 2.2)
        if family not in _V2_FAMILIES or protocol > 2:
            raise ProxyHeaderError(f"PROXY protocol v2 family/protocol {data[13]:#04x} is unknown")
        needed = _V2_ADDRESS_SIZES[family]
        if length - _V2_FIXED < needed:
            msg = (
                f"PROXY protocol v2 address block of {length - _V2_FIXED} bytes is too short "
                f"for {_V2_FAMILIES[family]} ({needed} bytes)"
            )
            raise ProxyHeaderError(msg)
    if len(data) < length:
        return None
    if command == _LOCAL or protocol == 0 or family not in (1, 2):
        return ProxyHeader(length, None, None)  # no address to believe: use the TCP peer
    size = 4 if family == 1 else 16
    raw = data[_V2_FIXED : _V2_FIXED + size]
    source = IPv4Address(raw) if family == 1 else _unmap(IPv6Address(raw))
    port_at = _V2_FIXED + 2 * size  # after the source and destination addresses
    return ProxyHeader(length, str(source), int.from_bytes(data[port_at : port_at + 2], "big"))


def _hop_address(element: bytes) -> _Address | None:
    """An ``X-Forwarded-For`` element as an address: ``a``, ``[v6]``, ``[v6]:p``, ``v4:p``."""
    text = element.strip(_OWS).decode("latin-1")
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or (rest and not (rest[0] == ":" and _is_port(rest[1:]))):
            return None
        address = _wire_address(host, 6)
    elif text.count(":") == 1:  # IPv4 with a port; an IPv6 address has at least two colons
        host, _, port = text.partition(":")
        address = _wire_address(host, 4) if _is_port(port) else None
    else:
        address = _wire_address(text, None)
    return None if address is None else _unmap(address)


def _wire_address(text: str, version: int | None) -> _Address | None:
    """``text`` as an address of ``version`` (any if ``None``); no IPv6 zone (``%eth0``):
    it means nothing off the host and would let a peer put any text in the answer."""
    if "%" in text:
        return None
    try:
        address = ip_address(text)
    except ValueError:
        return None
    return address if version in (None, address.version) else None


def _peer_address(text: str) -> _Address | None:
    try:
        return _unmap(ip_address(text))
    except ValueError:
        return None


def _is_port(text: str) -> bool:
    """0 to 65535 in decimal, no sign, space or leading zero (section 2.1)."""
    digits = text.isascii() and text.isdigit() and len(text) <= 5
    return digits and int(text) <= 65535 and (text == "0" or text[0] != "0")


def _unmap(address: _Address) -> _Address:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _unmap_network(network: _Network) -> _Network:
    if isinstance(network, IPv6Network) and network.subnet_of(_MAPPED):
        low = int(network.network_address) & 0xFFFFFFFF
        return IPv4Network((low, network.prefixlen - 96))
    return network
