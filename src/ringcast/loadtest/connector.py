"""TCP connects without blocking: `Connector` makes each socket, starts its connect and
watches it on an epoll of its own until the kernel says how the connect ended; the
caller then hands the socket to its ringio loop (or closes it).

Source addresses. A connect that leaves the source to the kernel gets one port of the
ephemeral range per (source, destination) pair: about 28,000 here. Past that, sources
are spread over 127.0.0.x (the whole 127.0.0.0/8 is loopback on Linux), each socket
bound with IP_BIND_ADDRESS_NO_PORT so that the kernel still picks the port at connect
time, when it knows the destination (binding the port first would make every port
unique per source, whatever the destination).

Explicit pairs (`PairPlan`, ``--bind explicit``). Past some 850,000 open sockets on one
host, a connect that leaves the port to the kernel finds only about half the ephemeral
range per source address (it keeps even ports for connect) and spends ~10 ms per call
searching it; IP_BIND_ADDRESS_NO_PORT does not help there. So each socket is bound to an
(address, port) pair of its own before connect (SO_REUSEADDR, so that a pair in
TIME_WAIT from an earlier run or a storm's drop can be bound again). Process k of a team
owns the addresses 127.(k+1).x.y and every port of ``--source-ports`` on them: no two
processes ever use the same pair, and within a process the pairs are taken in order
(address after address, port after port), so a run is deterministic. A pair the kernel
refuses (EADDRINUSE at bind: a listener on 0.0.0.0 at that port; EADDRNOTAVAIL at
connect: that four-tuple is in use) is skipped and counted, and the next is taken.
"""

from __future__ import annotations

import errno
import select
import socket
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ringcast.loadtest.target import Target

__all__ = ["DEFAULT_PORTS", "Connector", "PairPlan", "Pending", "pair_plan", "source_addresses"]

IP_BIND_ADDRESS_NO_PORT = 24
OUT_OF_FILES = frozenset((errno.EMFILE, errno.ENFILE))
DEFAULT_PORTS = (10000, 32767)
"""``--source-ports``: 22,768 ports per source address, below the kernel's default
ephemeral range (32768-60999), which the kernel's own port choice for other programs'
connects then never finds taken by ours."""
MAX_SKIPS = 256
"""Pairs one connect may skip (refused by the kernel) before it fails."""
PAIR_REFUSED = frozenset((errno.EADDRINUSE, errno.EADDRNOTAVAIL))


@dataclass(frozen=True)
class PairPlan:
    """The (address, port) pairs of one process of a team: addresses 127.(process+1).x.y
    (y in 1..254), each with every port of ``ports``."""

    process: int
    addresses: int
    ports: tuple[int, int]          # first, last (inclusive)

    @property
    def port_count(self) -> int:
        return self.ports[1] - self.ports[0] + 1

    @property
    def capacity(self) -> int:
        return self.addresses * self.port_count

    def address(self, a: int) -> str:
        return f"127.{self.process + 1}.{a // 254}.{a % 254 + 1}"

    def pair(self, j: int) -> tuple[str, int]:
        """The j-th pair (wrapping round after the last)."""
        a, p = divmod(j % self.capacity, self.port_count)
        return self.address(a), self.ports[0] + p

    def describe(self) -> dict[str, object]:
        return {"process": self.process, "first_address": self.address(0),
                "last_address": self.address(self.addresses - 1),
                "addresses": self.addresses, "ports": list(self.ports),
                "capacity": self.capacity}


def pair_plan(process: int, need: int, addresses: int, ports: tuple[int, int]) -> PairPlan:
    """Process ``process``'s pairs for ``need`` connections: ``addresses`` source
    addresses (0: as few as hold them). Raises ValueError, saying why, when they cannot."""
    lo, hi = ports
    if not 1 <= lo <= hi <= 65535:
        raise ValueError(f"--source-ports {lo}-{hi}: expected FIRST-LAST within 1-65535")
    if not 0 <= process < 255:
        raise ValueError("explicit source pairs: at most 255 client processes")
    per = hi - lo + 1
    k = addresses or -(-need // per)
    if k > 254 * 256:
        raise ValueError(f"client process {process + 1} would need {k:,} source addresses "
                         f"(127.{process + 1}.0.0/16 holds {254 * 256:,})")
    plan = PairPlan(process, max(1, k), ports)
    if plan.capacity < need:
        raise ValueError(
            f"client process {process + 1} needs {need:,} (address, port) pairs but "
            f"--source-addresses {plan.addresses} x --source-ports {lo}-{hi} ({per:,} ports) "
            f"hold only {plan.capacity:,}: give more addresses (or 0: as many as needed), a "
            "wider port range, or more --processes")
    return plan


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

    def __init__(self, target: Target, sources: Sequence[str], *,
                 pairs: PairPlan | None = None) -> None:
        self.target = target
        self.sources = list(sources)
        self.pairs = pairs
        self.next_pair = 0              # pairs taken so far (the next one's number)
        self.skipped: Counter[str] = Counter()     # pairs the kernel refused, by errno
        self._ep = select.epoll()
        self._pending: dict[int, Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def start(self, kind: str, index: int, now: float, *, retry: bool = False) -> int:
        """Start connecting; 0 when under way, else the errno that ended it at once
        (`OUT_OF_FILES`: no socket could be made; stop starting more)."""
        for _ in range(MAX_SKIPS):
            rc, sock = self._start_one(index)
            if sock is not None or rc not in PAIR_REFUSED or self.pairs is None:
                break
            self.skipped[errno.errorcode.get(rc, str(rc))] += 1
        if sock is None:
            return rc
        self._pending[sock.fileno()] = Pending(kind, index, sock, now, retry)
        self._ep.register(sock.fileno(), select.EPOLLOUT)
        return 0

    def _start_one(self, index: int) -> tuple[int, socket.socket | None]:
        """One socket, bound as asked and connecting: (0, socket) or (errno, None)."""
        t = self.target
        try:
            sock = socket.socket(t.family, socket.SOCK_STREAM)
        except OSError as exc:
            return exc.errno or errno.EIO, None
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.pairs is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                pair = self.pairs.pair(self.next_pair)
                self.next_pair += 1
                sock.bind(pair)
            elif self.sources:
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((self.sources[index % len(self.sources)], 0))
            rc = sock.connect_ex((t.address, t.port))
        except OSError as exc:
            sock.close()
            return exc.errno or errno.EIO, None
        if rc not in (0, errno.EINPROGRESS):
            sock.close()
            return rc, None
        return 0, sock

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
