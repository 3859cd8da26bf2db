"""Accepting: multishot accept, the id table filling up, and ids coming back."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable

import pytest

from ringcast.ringio import Engine, EventKind

from .helpers import Server, kinds, stats_settle

pytestmark = pytest.mark.kernel


def test_n_connections_are_accepted_with_fd_and_listener_id(
        make_server: Callable[..., Server]) -> None:
    srv = make_server()
    n = 64
    clients = srv.connect(n, batch=n)
    accepts = kinds(srv.log, EventKind.ACCEPT)
    assert len(accepts) == n
    assert len({e.conn for e in accepts}) == n, "every connection gets its own id"
    assert srv.lid not in {e.conn for e in accepts}
    for e in accepts:
        assert e.aux == srv.lid
        assert stat.S_ISSOCK(os.fstat(e.res).st_mode), f"ACCEPT res {e.res} is not a socket fd"
    assert sorted(c.conn for c in clients) == sorted(e.conn for e in accepts)
    st = srv.loop.stats()
    assert st["accepts"] == n
    assert st["conns_live"] == n + 1  # the listener holds an id too
    assert st["refused"] == 0


def test_accepted_connections_have_tcp_nodelay(make_server: Callable[..., Server]) -> None:
    """Frames leave at once (no Nagle delay): set on the listener by rio_listen, and
    inherited by every connection accepted from it."""
    srv = make_server()
    srv.connect(4, batch=4)
    accepts = kinds(srv.log, EventKind.ACCEPT)
    assert len(accepts) == 4
    for e in accepts:
        sock = socket.socket(fileno=e.res)          # borrowed: the loop owns the fd
        try:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        finally:
            sock.detach()


def test_multishot_accept_keeps_accepting_across_many_reaps(
        make_server: Callable[..., Server], engine: Engine) -> None:
    srv = make_server()
    rounds, per_round = 25, 4
    for _ in range(rounds):
        srv.connect(per_round, batch=per_round)  # each batch waits in its own reaps
    st = srv.loop.stats()
    assert st["accepts"] == rounds * per_round
    assert st["waits"] >= rounds
    assert not kinds(srv.log, EventKind.ACCEPT_ERROR)
    if engine is Engine.IO_URING:
        # One multishot accept served every connection: it never had to be re-armed.
        assert st["rearms"] == 0


def test_refused_when_id_table_full_and_accepting_resumes_once_ids_free(
        make_server: Callable[..., Server]) -> None:
    srv = make_server(max_conns=4)           # the listener + 3 connections
    first = srv.connect(3)
    assert srv.loop.stats()["conns_live"] == 4

    extra = [srv.peers.connect(srv.port) for _ in range(2)]
    ev = srv.pump(lambda ev: len(kinds(ev, EventKind.REFUSED)) == 2
                  and all(c.done for c in extra), what="2 REFUSED and the peers closed")
    refused = kinds(ev, EventKind.REFUSED)
    assert all(e.conn == srv.lid for e in refused)
    assert not kinds(ev, EventKind.ACCEPT)
    for c in extra:
        assert c.rx == b"", "a refused connection is closed without a byte"
    assert srv.loop.stats()["refused"] == 2
    assert srv.loop.stats()["conns_live"] == 4

    freed = [first[0].conn, first[1].conn]
    for conn in freed:
        srv.loop.close_connection(conn)
    stats_settle(srv.loop, conns_live=2)

    again = srv.connect(2)
    assert sorted(c.conn for c in again) == sorted(freed), "freed ids are handed out again"
    assert srv.loop.stats()["refused"] == 2
    assert srv.loop.stats()["accepts"] == 5
