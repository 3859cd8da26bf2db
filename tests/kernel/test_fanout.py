"""Fan-out: one slot to many connections, many slots in order, and the books balance."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from ringcast.ringio import NO_CONN

from .helpers import Server, ids, pattern, stats_settle

pytestmark = pytest.mark.kernel


def test_one_slot_reaches_1000_connections_exactly_once(
        make_server: Callable[..., Server]) -> None:
    srv = make_server(max_conns=1100)
    clients = srv.connect(1000, batch=100)
    loop = srv.loop
    payload = pattern(42, 1500)
    slot = loop.slot(payload)
    assert loop.fanout(slot, ids(c.conn for c in clients), len(clients)) == 1000
    loop.release(slot)
    srv.received(clients, len(payload), timeout=10)
    srv.pump_for(0.2)                           # anything extra would show up now
    for c in clients:
        assert c.rx == payload, f"conn {c.conn} got {len(c.rx)} bytes"
    st = stats_settle(loop, slots_live=0, queued_bytes=0)
    assert st["deliveries"] == 1000
    assert st["send_bytes"] == 1000 * len(payload)
    assert st["arena_used"] == 0
    assert st["drops"] == 0


def test_many_slots_of_varying_size_arrive_in_order_per_connection(
        make_server: Callable[..., Server]) -> None:
    srv = make_server(arena_size=4 << 20)
    loop = srv.loop
    clients = srv.connect(8)
    rng = random.Random(1234)
    sizes = [rng.choice([1, 2, 17, 100, 1400, 4096, 9000, 16384, 65536]) for _ in range(200)]
    sizes[50] = sizes[150] = sizes[199] = 100 << 10     # 100 KiB frames among the small ones
    messages = [pattern(i, n) for i, n in enumerate(sizes)]
    conns = ids(c.conn for c in clients)
    for i, msg in enumerate(messages):
        slot = loop.slot(msg)
        assert loop.fanout(slot, conns, len(conns)) == len(clients)
        loop.release(slot)
        if i % 10 == 0:                         # let some go out while others are queued
            srv.peers.service(0)
            srv.log += loop.reap(0)
    stream = b"".join(messages)
    srv.received(clients, len(stream), timeout=10)
    srv.pump_for(0.1)
    for c in clients:
        assert len(c.rx) == len(stream)
        assert c.rx == stream, f"conn {c.conn}: frames out of order or corrupted"
    st = stats_settle(loop, slots_live=0, queued_bytes=0)
    assert st["deliveries"] == 200 * len(clients)
    assert st["arena_used"] == 0
    assert st["slots_heap"] == 0


def test_fanout_skips_the_excluded_connection(make_server: Callable[..., Server]) -> None:
    srv = make_server()
    a, b, c = srv.connect(3)
    slot = srv.loop.slot(b"hello")
    assert srv.loop.fanout(slot, ids([a.conn, b.conn, c.conn]), 3, exclude=b.conn) == 2
    assert srv.loop.fanout(slot, ids([a.conn]), 1, exclude=NO_CONN) == 1
    srv.loop.release(slot)
    srv.received([a, c], [10, 5])
    srv.pump_for(0.1)
    assert (a.rx, b.rx, c.rx) == (b"hellohello", b"", b"hello")
    assert srv.loop.stats()["deliveries"] == 3


def test_slot_memory_is_freed_only_after_the_last_reference(
        make_server: Callable[..., Server]) -> None:
    srv = make_server()
    loop = srv.loop
    clients = srv.connect(5)
    slot = loop.slot(pattern(1, 3000))
    assert loop.stats()["slots_live"] == 1
    assert loop.stats()["arena_used"] >= 3000
    loop.fanout(slot, ids(c.conn for c in clients), len(clients))
    srv.received(clients, 3000)
    assert loop.stats()["slots_live"] == 1, "the caller still holds its reference"
    loop.release(slot)
    st = loop.stats()
    assert (st["slots_live"], st["arena_used"]) == (0, 0)
    loop.release(slot)                          # a second release of a dead slot is ignored
    assert loop.stats()["slots_live"] == 0


def test_fanout_count_beyond_the_id_buffer_is_rejected(make_server: Callable[..., Server]) -> None:
    # Regression: `count` used to reach C unchecked, which read ids past the buffer.
    srv = make_server()
    a, b = srv.connect(2)
    slot = srv.loop.slot(b"only for a")
    both = ids([a.conn, b.conn])
    view = memoryview(both)[:1]                 # the caller passes one id ...
    try:
        with pytest.raises(ValueError):
            srv.loop.fanout(slot, view, 2)      # ... but claims two
    finally:
        srv.loop.release(slot)
        srv.pump_for(0.1)
    assert b.rx == b"", "a connection outside the given ids received the frame"
