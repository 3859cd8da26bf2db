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
    assert (bytes(a.rx), bytes(b.rx), bytes(c.rx)) == (b"hellohello", b"", b"hello")
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


def test_1000_connections_x_2000_frames_with_stalled_receivers_arrive_exactly_and_in_order(
        make_server: Callable[..., Server]) -> None:
    """The issue's ordering and completeness property at full size.

    1,000 receivers, 2,000 frames of mixed sizes fanned out one by one; every
    tenth receiver stops reading until its socket buffers are full (small
    SO_RCVBUF and SO_SNDBUF) and resumes half way. Each must end with exactly
    the bytes sent, in order: short sends resumed, queues coalesced, nothing
    lost or repeated.
    """
    srv = make_server(max_conns=1100, sndbuf=8192)
    loop = srv.loop
    clients = srv.connect(900, batch=100)
    stalled = srv.connect(100, rcvbuf=4096, batch=100)
    everyone = clients + stalled
    for c in stalled:
        srv.peers.pause(c)
    rng = random.Random(2000)
    frames = [pattern(i, rng.choice([1, 7, 40, 64, 125, 126, 300, 1400])) for i in range(2000)]
    conns = ids(c.conn for c in everyone)
    for i, frame in enumerate(frames):
        slot = loop.slot(frame)
        assert loop.fanout(slot, conns, len(conns)) == len(everyone)
        loop.release(slot)
        if i % 50 == 0:
            srv.peers.service(0)
            srv.log += loop.reap(0)
        if i == 1000:
            assert any(loop.queued(c.conn) for c in stalled), "the stalled receivers never filled"
            for c in stalled:
                srv.peers.resume(c)
    stream = b"".join(frames)
    srv.received(everyone, len(stream), timeout=60)
    srv.pump_for(0.1)
    bad = [c.conn for c in everyone if c.rx != stream]
    assert not bad, f"{len(bad)} receivers got the wrong bytes, e.g. conn {bad[0]}"
    st = stats_settle(loop, slots_live=0, queued_bytes=0)
    assert st["deliveries"] == 2000 * len(everyone)
    assert st["drops"] == 0
    assert st["arena_used"] == 0
