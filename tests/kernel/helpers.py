"""Client-side plumbing for the ringio kernel tests: real loopback sockets.

The loop only makes progress inside ``reap()``, so every wait here interleaves
``loop.reap()`` with non-blocking reads and writes on the client sockets, and
every wait has a deadline: a test fails with a message saying what it was
waiting for, it never hangs and never sleeps hoping something happened.
"""

from __future__ import annotations

import array
import errno
import selectors
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ringcast.ringio import ConnId, Event, EventKind, Loop

DEFAULT_TIMEOUT = 5.0
LOCALHOST = "127.0.0.1"
SO_LINGER_RESET = struct.pack("ii", 1, 0)
UNACCEPTED = ConnId(-1)     # a Client's conn until the loop's ACCEPT names it


def ids(conns: Iterable[int]) -> array.array[int]:
    """A uint32 array of connection ids, as `Loop.fanout` wants it."""
    return array.array("I", conns)


def kinds(events: Iterable[Event], kind: int) -> list[Event]:
    return [e for e in events if e.kind == kind]


def wait_for(loop: Loop, predicate: Callable[[list[Event]], bool], timeout: float = DEFAULT_TIMEOUT,
             what: str = "condition") -> list[Event]:
    """Reap until ``predicate(events so far)`` holds; return the events; fail at the deadline."""
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    while not predicate(events):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                 f"events: {events[-10:]}; stats: {loop.stats()}")
        events.extend(loop.reap(min(0.02, left)))
    return events


def reap_for(loop: Loop, seconds: float) -> list[Event]:
    """Reap for a fixed time (to show that something does NOT happen)."""
    events: list[Event] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        events.extend(loop.reap(min(0.02, left)))
    return events


def stats_settle(loop: Loop, timeout: float = DEFAULT_TIMEOUT, **want: int) -> dict[str, int]:
    """Reap until every named stat has the wanted value; return the stats."""
    wait_for(loop, lambda _ev: all(loop.stats()[k] == v for k, v in want.items()), timeout,
             what=f"stats {want}")
    return loop.stats()


def pattern(tag: int, size: int) -> bytes:
    """``size`` bytes that differ from any other tag's and show their own offsets."""
    head = struct.pack("!II", tag, size)
    body = bytes((tag * 31 + i) & 0xFF for i in range(min(size, 251)))
    unit = (head + body) if size > 8 else head
    reps = size // len(unit) + 1
    return (unit * reps)[:size]


@dataclass(eq=False)
class Client:
    """One loopback client socket (non-blocking) and what it has seen."""

    sock: socket.socket
    conn: ConnId = UNACCEPTED       # the server-side id, once accepted
    rx: bytearray = field(default_factory=bytearray)
    tx: bytearray = field(default_factory=bytearray)
    eof: bool = False
    error: int = 0                  # errno of a failed read (ECONNRESET), 0 if none
    reading: bool = True

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def done(self) -> bool:
        return self.eof or self.error != 0


class Peers:
    """The client side of a test: sockets, their buffers, and the pump."""

    def __init__(self) -> None:
        self.clients: list[Client] = []
        self._sel = selectors.DefaultSelector()
        self._registered: dict[Client, int] = {}

    def close(self) -> None:
        for c in self.clients:
            self._unregister(c)
            c.sock.close()
        self.clients.clear()
        self._sel.close()

    # -- sockets -------------------------------------------------------------

    def connect(self, port: int, rcvbuf: int | None = None) -> Client:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:  # before connect, so the window is small from the start
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.settimeout(DEFAULT_TIMEOUT)
            s.connect((LOCALHOST, port))
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        c = Client(s)
        self.clients.append(c)
        self._update(c)
        return c

    def add(self, sock: socket.socket) -> Client:
        """Track an already connected socket (e.g. a socketpair end)."""
        sock.setblocking(False)
        c = Client(sock)
        self.clients.append(c)
        self._update(c)
        return c

    def drop(self, c: Client, reset: bool = False) -> None:
        """Close a client socket; with ``reset`` the peer gets an RST (SO_LINGER 0)."""
        if reset:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, SO_LINGER_RESET)
        self._unregister(c)
        c.sock.close()
        self.clients.remove(c)

    def pause(self, c: Client) -> None:
        c.reading = False
        self._update(c)

    def resume(self, c: Client) -> None:
        c.reading = True
        self._update(c)

    def send(self, c: Client, data: bytes) -> None:
        """Queue bytes for the client to write while the loop is pumped."""
        c.tx += data
        self._flush(c)
        self._update(c)

    def _unregister(self, c: Client) -> None:
        if self._registered.pop(c, 0):
            self._sel.unregister(c.sock)

    def _update(self, c: Client) -> None:
        mask = 0
        if c.reading and not c.done:
            mask |= selectors.EVENT_READ
        if c.tx and not c.done:
            mask |= selectors.EVENT_WRITE
        old = self._registered.get(c, 0)
        if mask == old:
            return
        if not mask:
            self._unregister(c)
        elif not old:
            self._sel.register(c.sock, mask, c)
            self._registered[c] = mask
        else:
            self._sel.modify(c.sock, mask, c)
            self._registered[c] = mask

    def _flush(self, c: Client) -> int:
        sent = 0
        while c.tx:
            try:
                n = c.sock.send(c.tx[:1 << 20])
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                c.error = exc.errno or errno.EPIPE
                break
            del c.tx[:n]
            sent += n
        return sent

    def _read(self, c: Client) -> int:
        got = 0
        while True:
            try:
                chunk = c.sock.recv(1 << 18)
            except (BlockingIOError, InterruptedError):
                return got
            except OSError as exc:
                c.error = exc.errno or errno.EIO
                return got + 1
            if not chunk:
                c.eof = True
                return got + 1
            c.rx += chunk
            got += len(chunk)

    def service(self, timeout: float = 0.0) -> int:
        """One round of client I/O; returns how much happened."""
        progress = 0
        for key, mask in self._sel.select(timeout):
            c: Client = key.data
            if mask & selectors.EVENT_WRITE:
                progress += self._flush(c)
            if mask & selectors.EVENT_READ:
                progress += self._read(c)
            self._update(c)
        return progress

    def pump(self, loop: Loop, until: Callable[[list[Event]], bool],
             timeout: float = DEFAULT_TIMEOUT, what: str = "condition") -> list[Event]:
        """Reap and do client I/O until ``until(events so far)``; fail at the deadline."""
        events: list[Event] = []
        deadline = time.monotonic() + timeout
        while not until(events):
            if time.monotonic() > deadline:
                lens = sorted({len(c.rx) for c in self.clients})[:8]
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                     f"client rx lengths: {lens}; last events: {events[-5:]}; "
                                     f"stats: {loop.stats()}")
            new = loop.reap(0)
            events.extend(new)
            if not self.service(0) and not new:
                # Idle: give the kernel a moment, without blocking the loop for long.
                if self._registered:
                    self.service(0.001)
                else:
                    events.extend(loop.reap(0.002))
        return events

    def pump_for(self, loop: Loop, seconds: float) -> list[Event]:
        end = time.monotonic() + seconds
        return self.pump(loop, lambda _ev: time.monotonic() >= end, timeout=seconds + 5)

    def received(self, loop: Loop, clients: Sequence[Client], sizes: int | Sequence[int],
                 timeout: float = DEFAULT_TIMEOUT) -> list[Event]:
        """Pump until each client holds (at least) its expected number of bytes."""
        want = [sizes] * len(clients) if isinstance(sizes, int) else list(sizes)
        return self.pump(loop, lambda _ev: all(len(c.rx) >= n for c, n in zip(clients, want,
                                                                               strict=True)),
                         timeout, what=f"{len(clients)} clients to receive their bytes")


def peer_port(fd: int) -> int:
    """The remote port of a socket the loop owns, without taking ownership."""
    s = socket.socket(fileno=fd)
    try:
        return int(s.getpeername()[1])
    finally:
        s.detach()


class Server:
    """A loop with one loopback listener, and the clients connected to it."""

    def __init__(self, loop: Loop, peers: Peers, backlog: int = 1024,
                 sndbuf: int | None = None) -> None:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if sndbuf is not None:  # accepted sockets inherit it: small = queues build fast
                ls.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            ls.bind((LOCALHOST, 0))
            ls.listen(backlog)
            self.port = int(ls.getsockname()[1])
            self.lid = loop.listen(ls)
        finally:
            if ls.fileno() >= 0:  # listen() failed: the loop did not take it
                ls.close()
        self.loop = loop
        self.peers = peers
        self.log: list[Event] = []   # every event any wait of this server has seen

    def pump(self, until: Callable[[list[Event]], bool], timeout: float = DEFAULT_TIMEOUT,
             what: str = "condition") -> list[Event]:
        ev = self.peers.pump(self.loop, until, timeout, what)
        self.log.extend(ev)
        return ev

    def pump_for(self, seconds: float) -> list[Event]:
        ev = self.peers.pump_for(self.loop, seconds)
        self.log.extend(ev)
        return ev

    def received(self, clients: Sequence[Client], sizes: int | Sequence[int],
                 timeout: float = DEFAULT_TIMEOUT) -> list[Event]:
        ev = self.peers.received(self.loop, clients, sizes, timeout)
        self.log.extend(ev)
        return ev

    def connect(self, n: int = 1, rcvbuf: int | None = None, batch: int = 64,
                timeout: float = DEFAULT_TIMEOUT) -> list[Client]:
        """Connect ``n`` clients (in batches, reaping between) and wait until all are accepted.

        Clients are matched to ids by the peer port of the fd in each ACCEPT event.
        """
        out: list[Client] = []
        for start in range(0, n, batch):
            group = [self.peers.connect(self.port, rcvbuf) for _ in range(min(batch, n - start))]
            self._accept(group, timeout)
            out.extend(group)
        return out

    def _accept(self, group: list[Client], timeout: float) -> None:
        by_port = {c.port: c for c in group}
        seen = 0

        def matched(events: list[Event]) -> bool:
            nonlocal seen
            for e in events[seen:]:
                if e.kind == EventKind.ACCEPT and e.aux == self.lid:
                    c = by_port.get(peer_port(e.res))
                    assert c is not None, f"ACCEPT {e} matches no client of this batch"
                    c.conn = e.conn
            seen = len(events)
            return all(c.conn >= 0 for c in group)

        self.pump(matched, timeout, what=f"{len(group)} accepts")
