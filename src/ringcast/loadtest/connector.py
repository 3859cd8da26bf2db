"""TCP connects without blocking: `Connector` makes each socket, starts its connect and
watches it on an epoll of its own until the kernel says how the connect ended; the
caller then hands the socket to its ringio loop (or closes it).

Source addresses. A connect that leaves the source to the kernel gets one port of the
ephemeral range per (source, destination) pair: about 28,000 here. Past that, sources
are spread over 127.0.0.x (the whole 127.0.0.0/8 is loopback on Linux), each socket
bound with IP_BIND_ADDRESS_NO_PORT so that the kernel still picks the port at connect
time, when it knows the destination (binding the port first would make every port
unique per source, whatever the destination).
"""

from __future__ import annotations

import errno
import select
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ringcast.loadtest.target import Target

__all__ = ["Connector", "Pending", "source_addresses"]

IP_BIND_ADDRESS_NO_PORT = 24
OUT_OF_FILES = frozenset((errno.EMFILE, errno.ENFILE))


@dataclass(slots=True)
class Pending:
    """A connect under way: who asked for it, and when."""

    kind: str
    index: int
    sock: socket.socket
    started: float
    retry: bool = False             # a reconnect after a storm, retried until it holds


def source_addresses(target: Target, total: int, wanted: int, ports: int) -> list[str]:
    """The source addresses ``total`` connections to ``target`` are spread over ([]: let
    the kernel choose). ``wanted`` > 0 asks for that many; 0 for as many as ``ports``
    ephemeral ports per source need, with a fifth spare."""
    if not (target.loopback and target.family == socket.AF_INET):
        return []
    k = wanted
    if k <= 0:
        per = int(ports * 0.8)
        k = -(-total // per) if total > per else 0
    return [f"127.0.0.{i + 1}" for i in range(min(k, 254))] if k > 1 else []


class Connector:
    """Connects in flight. `start` one; `ready` yields those that ended; `expire` the
    ones that took too long. Every socket that is not handed out is closed here."""

    def __init__(self, target: Target, sources: Sequence[str]) -> None:
        self.target = target
        self.sources = list(sources)
        self._ep = select.epoll()
        self._pending: dict[int, Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def start(self, kind: str, index: int, now: float, *, retry: bool = False) -> int:
        """Start connecting; 0 when under way, else the errno that ended it at once
        (`OUT_OF_FILES`: no socket could be made; stop starting more)."""
        t = self.target
        try:
            sock = socket.socket(t.family, socket.SOCK_STREAM)
        except OSError as exc:
            return exc.errno or errno.EIO
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.sources:
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((self.sources[index % len(self.sources)], 0))
            rc = sock.connect_ex((t.address, t.port))
        except OSError as exc:
            sock.close()
            return exc.errno or errno.EIO
        if rc not in (0, errno.EINPROGRESS):
            sock.close()
            return rc
        self._pending[sock.fileno()] = Pending(kind, index, sock, now, retry)
        self._ep.register(sock.fileno(), select.EPOLLOUT)
        return 0

    def ready(self, timeout: float) -> Iterator[tuple[Pending, int]]:
        """The connects that ended within ``timeout`` s, each with 0 (connected: the
        socket is the caller's now) or its errno (the socket is closed)."""
        for fd, _mask in self._ep.poll(timeout):
            p = self._pending.pop(fd)
            self._ep.unregister(fd)
            err = p.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                p.sock.close()
            yield p, err

    def expire(self, started_before: float) -> list[Pending]:
        """Give up on the connects started before ``started_before`` (closed)."""
        late = [p for p in self._pending.values() if p.started < started_before]
        for p in late:
            self._drop(p)
        return late

    def abandon(self) -> list[Pending]:
        """Give up on every connect in flight (closed)."""
        return self.expire(float("inf"))

    def close(self) -> None:
        self.abandon()
        self._ep.close()

    def _drop(self, p: Pending) -> None:
        fd = p.sock.fileno()
        del self._pending[fd]
        self._ep.unregister(fd)
        p.sock.close()
