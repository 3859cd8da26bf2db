"""Receiving: DATA events carry every byte, in order per connection; HUP on EOF and RST."""

from __future__ import annotations

import errno
import socket
import time
from collections import defaultdict
from collections.abc import Callable

import pytest

from ringcast.ringio import Event, EventKind, Loop

from .helpers import DEFAULT_TIMEOUT, Server, kinds, pattern

pytestmark = pytest.mark.kernel


def collect(events: list[Event], into: dict[int, bytearray]) -> None:
    for e in events:
        if e.kind == EventKind.DATA:
            into[e.conn] += e.data


def test_bytes_from_many_clients_arrive_intact_and_in_order_per_connection(
        make_server: Callable[..., Server]) -> None:
    srv = make_server()
    clients = srv.connect(40)
    expected = {c.conn: bytearray() for c in clients}
    for rnd in range(25):                      # interleave rounds of writes across clients
        for i, c in enumerate(clients):
            msg = pattern(rnd * 1000 + i, 1 + (rnd * 97 + i * 13) % 3000)
            expected[c.conn] += msg
            srv.peers.send(c, msg)
    got: dict[int, bytearray] = defaultdict(bytearray)
    seen = 0

    def complete(ev: list[Event]) -> bool:
        nonlocal seen
        collect(ev[seen:], got)
        seen = len(ev)
        return all(len(got[k]) >= len(v) for k, v in expected.items())

    srv.pump(complete, what="all client bytes")
    for conn, want in expected.items():
        assert got[conn] == want, f"conn {conn}: bytes differ"
    assert srv.loop.stats()["recv_bytes"] == sum(map(len, expected.values()))
    assert not kinds(srv.log, EventKind.HUP)


def test_large_payloads_split_across_many_buffers_are_reassembled_exactly(
        make_server: Callable[..., Server]) -> None:
    buf_size = 4096
    srv = make_server(buf_size=buf_size, buf_count=256, data_capacity=1 << 20)
    clients = srv.connect(4)
    size = 4 << 20                              # 4 MiB per client, 16 MiB in all
    expected = {c.conn: pattern(c.conn + 1, size) for c in clients}
    for c in clients:
        srv.peers.send(c, expected[c.conn])
    got: dict[int, bytearray] = defaultdict(bytearray)
    pieces: dict[int, int] = defaultdict(int)
    biggest = 0
    seen = 0

    def complete(ev: list[Event]) -> bool:
        nonlocal seen, biggest
        for e in ev[seen:]:
            if e.kind == EventKind.DATA:
                got[e.conn] += e.data
                pieces[e.conn] += 1
                biggest = max(biggest, len(e.data))
        seen = len(ev)
        return all(len(got[k]) >= size for k in expected)

    srv.pump(complete, timeout=10, what="4 x 4 MiB")
    for conn, want in expected.items():
        assert len(got[conn]) == size
        assert got[conn] == want, f"conn {conn}: payload corrupted"
        assert pieces[conn] >= size // buf_size, "each DATA event is at most one buffer"
    assert biggest <= buf_size


def test_reap_returns_at_most_data_capacity_bytes_at_a_time(
        make_server: Callable[..., Server]) -> None:
    cap = 16384
    srv = make_server(buf_size=4096, data_capacity=cap)
    (c,) = srv.connect(1)
    payload = pattern(7, 1 << 20)
    srv.peers.send(c, payload)
    got = bytearray()
    reaps_with_data = 0
    deadline = time.monotonic() + DEFAULT_TIMEOUT
    while len(got) < len(payload):
        assert time.monotonic() < deadline, f"timed out: {len(got)} of {len(payload)} bytes"
        srv.peers.service(0)
        one = srv.loop.reap(0.01)
        data = b"".join(e.data for e in kinds(one, EventKind.DATA))
        assert len(data) <= cap, f"one reap returned {len(data)} bytes, data_capacity is {cap}"
        reaps_with_data += bool(data)
        got += data
    assert got == payload
    assert reaps_with_data >= len(payload) // cap


def test_peer_eof_gives_one_hup_with_res_0(make_server: Callable[..., Server]) -> None:
    srv = make_server()
    a, b = srv.connect(2)
    srv.peers.send(a, b"last words")
    conn = a.conn
    srv.peers.drop(a)
    ev = srv.pump(lambda ev: bool(kinds(ev, EventKind.HUP)), what="HUP")
    ev += srv.pump_for(0.1)
    hups = kinds(ev, EventKind.HUP)
    assert [(e.conn, e.res) for e in hups] == [(conn, 0)]
    assert b"".join(e.data for e in kinds(ev, EventKind.DATA) if e.conn == conn) == b"last words"
    # The data came before the hang-up.
    order = [e.kind for e in ev if e.conn == conn]
    assert order[-1] == EventKind.HUP
    assert b.conn not in {e.conn for e in hups}


def test_peer_reset_gives_hup_with_econnreset_or_0(make_server: Callable[..., Server]) -> None:
    srv = make_server()
    (a,) = srv.connect(1)
    conn = a.conn
    srv.peers.drop(a, reset=True)               # SO_LINGER 0: close sends an RST
    ev = srv.pump(lambda ev: bool(kinds(ev, EventKind.HUP)), what="HUP after RST")
    ev += srv.pump_for(0.1)
    hups = kinds(ev, EventKind.HUP)
    assert len(hups) == 1
    assert hups[0].conn == conn
    assert hups[0].res in (errno.ECONNRESET, 0)


def test_reap_raw_gives_each_data_event_its_bytes_where_they_lie(
        make_server: Callable[..., Server]) -> None:
    # The load tester's path: the bytes stay in the loop's buffer, each DATA event says where;
    # `event` turns a raw event into the Event `reap` would have made.
    srv = make_server()
    clients = srv.connect(8)
    expected = {c.conn: pattern(c.conn, 1000 + 37 * i) for i, c in enumerate(clients)}
    for c in clients:
        srv.peers.send(c, expected[c.conn])
    got: dict[int, bytearray] = defaultdict(bytearray)
    deadline = time.monotonic() + DEFAULT_TIMEOUT
    while any(len(got[k]) < len(v) for k, v in expected.items()):
        assert time.monotonic() < deadline, "timed out waiting for the clients' bytes"
        raw, received = srv.loop.reap_raw(0.05)
        for ev in raw:
            kind, conn, _res, length, aux = ev
            event = srv.loop.event(ev)
            assert (event.kind, event.conn) == (kind, conn)
            if kind == EventKind.DATA:
                assert bytes(received[aux:aux + length]) == event.data
                got[conn] += event.data
    assert got == expected


def test_one_reap_reads_every_connection_that_has_data(make_loop: Callable[..., Loop]) -> None:
    """300 sockets with bytes waiting: one reap returns them all. A DEFER_TASKRUN ring runs
    at most 20 receives' task_work a pass inside io_uring_enter (6.13+), so the loop enters
    again while an enter completed a pass's worth; before, this took 15 reaps, and a
    caller judging silence in between (keepalive) judged bytes that had arrived as
    missing."""
    loop = make_loop(max_conns=512)
    peers = []
    for _ in range(300):
        ours, theirs = socket.socketpair()
        loop.adopt(ours)
        peers.append(theirs)
    loop.reap(0)
    for i, p in enumerate(peers):
        p.send(b"%d" % i)
    # Every byte is in the kernel before the reap: a socketpair's send is synchronous.
    events = loop.reap(0)
    assert len(kinds(events, EventKind.DATA)) == 300
    assert not loop.behind
    for p in peers:
        p.close()
