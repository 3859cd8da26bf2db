"""Fixed files (io_uring): each connection sits in the ring's sparse file table at its id.

What the kernel holds is read back from ``/proc/self/fdinfo`` of the ring, whose
``UserFiles`` section lists every installed table entry as ``index: socket:[inode]``.
"""

from __future__ import annotations

import os
import re
import resource
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from ringcast.ringio import Engine, Event, EventKind, Loop, Probe, RingUnavailable

from .helpers import Client, Peers, Server, ids, pattern

pytestmark = [pytest.mark.kernel,
              pytest.mark.parametrize("engine", [Engine.IO_URING], indirect=True)]


@pytest.fixture(autouse=True)
def _needs_fixed_files(uring_probe: Probe | RingUnavailable) -> None:
    if isinstance(uring_probe, Probe) and not uring_probe.fixed_files:
        pytest.skip(f"ringio uses no fixed files here: {uring_probe}")

_ENTRY = re.compile(r"^\s*(\d+): (.*)$")


def _ring_tables() -> list[dict[int, str]]:
    """The file table of every io_uring instance this process has open."""
    tables = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") != "anon_inode:[io_uring]":
                continue
            with open(f"/proc/self/fdinfo/{name}") as f:
                text = f.read()
        except OSError:
            continue    # closed meanwhile (the listdir fd itself)
        table: dict[int, str] = {}
        in_files = False
        for line in text.splitlines():
            if line.startswith("UserFiles:"):
                in_files = True
            elif in_files and (m := _ENTRY.match(line)):
                table[int(m.group(1))] = m.group(2)
            elif in_files:
                break
        tables.append(table)
    return tables


def _server_inode(c: Client) -> int:
    """The inode of the server-side socket of client ``c`` (owned by the loop)."""
    want = (c.sock.getpeername(), c.sock.getsockname())
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            s = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        with s:
            try:
                if (s.getsockname(), s.getpeername()) == want:
                    return os.fstat(s.fileno()).st_ino
            except OSError:
                continue
    raise AssertionError(f"no server-side socket for client {c.port}")


def _tcp_inodes() -> set[int]:
    """Inodes of the TCP sockets that still have a file (orphans show 0)."""
    with open("/proc/net/tcp") as f:
        next(f)
        return {int(line.split()[9]) for line in f}


def _table_of(conns: list[Client]) -> dict[int, str]:
    """The one ring table that holds the first connection at its id."""
    want = f"socket:[{_server_inode(conns[0])}]"
    found = [t for t in _ring_tables() if t.get(conns[0].conn) == want]
    assert len(found) == 1, f"expected one ring with {want} at index {conns[0].conn}: {found}"
    return found[0]


def _broadcast(srv: Server, clients: list[Client], data: bytes) -> None:
    """Fan ``data`` out to ``clients`` (which have received nothing yet) and check it."""
    slot = srv.loop.slot(data)
    assert srv.loop.fanout(slot, ids(c.conn for c in clients), len(clients)) == len(clients)
    srv.loop.release(slot)
    srv.received(clients, len(data))
    for c in clients:
        assert bytes(c.rx) == data


@contextmanager
def _soft_nofile(limit: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_connections_are_installed_at_their_id_and_removed_on_close(
        make_server: Callable[..., Server]) -> None:
    srv = make_server(max_conns=64)
    assert srv.loop.probe().fixed_files == 64
    clients = srv.connect(4)
    table = _table_of(clients)
    for c in clients:
        assert table.get(c.conn) == f"socket:[{_server_inode(c)}]"

    gone, rest = clients[0], clients[1:]
    inode = _server_inode(gone)
    assert inode in _tcp_inodes()
    srv.loop.close_connection(gone.conn)
    srv.pump(lambda _ev: gone.done, what="EOF at the closed client")
    assert gone.eof
    table = _table_of(rest)
    assert gone.conn not in table
    # The socket's file is released although the others' multishot receives, issued
    # before the close, are still pending on the ring: the kernel orphans the socket
    # (its inode in /proc/net/tcp goes to 0) instead of holding it for them.
    srv.pump(lambda _ev: inode not in _tcp_inodes(), what="the closed socket's release")

    _broadcast(srv, rest, pattern(1, 100))


def test_table_fits_rlimit_nofile_and_connections_beyond_it_use_their_fd(
        make_loop: Callable[..., Loop], peers: Peers) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = len(os.listdir("/proc/self/fd")) + 64
    if limit + 80 > min(soft, hard):
        pytest.skip(f"RLIMIT_NOFILE {soft} leaves no room for the test")
    with _soft_nofile(limit):
        loop = make_loop(max_conns=limit + 64)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (limit, hard), \
            "creating the ring must not raise RLIMIT_NOFILE"
    assert loop.probe().fixed_files == limit
    # (listening only now: a multishot accept keeps the fd limit it was armed under)
    srv = Server(loop, peers)

    # Past the table, ids fall back to their fd: everything still flows.
    clients = srv.connect(limit + 8)
    beyond = [c for c in clients if c.conn >= limit]
    assert beyond, "some ids must lie past the table"
    table = _table_of(clients)
    assert all(c.conn not in table for c in beyond)
    assert len(table) == len(clients) - len(beyond)

    _broadcast(srv, clients, pattern(2, 300))
    talkers = {c.conn: c for c in beyond[:2]}
    for c in talkers.values():
        srv.peers.send(c, b"ping %d" % c.conn)

    def heard(events: list[Event]) -> bool:
        got = {e.conn: e.data for e in events if e.kind == EventKind.DATA and e.conn in talkers}
        return got == {conn: b"ping %d" % conn for conn in talkers}

    srv.pump(heard, what="bytes from clients past the table")
