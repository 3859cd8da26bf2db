"""Where the load goes: the URL, its addresses, and the loopback guard."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


class TargetError(ValueError):
    """The URL cannot be used as a target (say why in the message)."""


@dataclass(frozen=True)
class Target:
    url: str
    host: str              # as written in the URL (for the Host header)
    address: str           # the resolved address connections go to
    family: int
    port: int
    path: str              # request path of the subscription, e.g. "/bench"
    channel: str           # the path without its leading "/"
    loopback: bool

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 80 else f"{host}:{self.port}"


def parse_target(url: str, *, allow_remote: bool = False) -> Target:
    """Parse ``ws://host[:port]/path``; refuse a non-loopback host unless allowed."""
    parts = urlsplit(url)
    if parts.scheme == "wss":
        raise TargetError("wss:// (TLS) is not supported: point the loadtest at ws://")
    if parts.scheme != "ws":
        raise TargetError(f"{url!r}: expected a ws://host:port/path URL")
    if not parts.hostname:
        raise TargetError(f"{url!r}: no host")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise TargetError(f"{url!r}: {exc}") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TargetError(f"cannot resolve {parts.hostname!r}: {exc.strerror}") from None
    # Prefer IPv4 (source addresses can be spread over 127.0.0.0/8).
    infos.sort(key=lambda i: i[0] != socket.AF_INET)
    family, _, _, _, sockaddr = infos[0]
    address = str(sockaddr[0])
    loopback = all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)
    if not loopback and not allow_remote:
        raise TargetError(
            f"{parts.hostname} ({address}) is not a loopback address. The loadtest opens "
            "many connections and sends as fast as the server takes: point it only at a "
            "host you own, and say so with --i-own-this-host"
        )
    return Target(url=url, host=parts.hostname, address=address, family=int(family),
                  port=port, path=path, channel=parts.path.lstrip("/"), loopback=loopback)


def ephemeral_ports() -> int:
    """How many local ports the kernel hands out per (source, destination) pair."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return hi - lo + 1
    except (OSError, ValueError):
        return 28232
