"""The slot arena: when it is full (or too small) slots live on the heap and still work."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .helpers import Server, ids, pattern, stats_settle

pytestmark = pytest.mark.kernel


def test_slots_bigger_than_a_tiny_arena_fall_back_to_the_heap(
        make_server: Callable[..., Server]) -> None:
    srv = make_server(arena_size=4096)
    loop = srv.loop
    clients = srv.connect(2)
    conns = ids(c.conn for c in clients)
    big = pattern(1, 64 << 10)
    slot = loop.slot(big)
    st = loop.stats()
    assert (st["slots_heap"], st["arena_used"]) == (1, 0)
    assert loop.fanout(slot, conns, 2) == 2
    loop.release(slot)
    srv.received(clients, len(big))
    for c in clients:
        assert c.rx == big
    st = stats_settle(loop, slots_live=0)
    assert (st["slots_heap"], st["arena_used"], st["queued_bytes"]) == (0, 0, 0)


def test_a_full_arena_spills_to_the_heap_and_frees_both(
        make_server: Callable[..., Server]) -> None:
    srv = make_server(arena_size=4096)          # 8 chunks of 512 bytes
    loop = srv.loop
    (c,) = srv.connect(1)
    msgs = [pattern(i, 500) for i in range(12)]
    slots = [loop.slot(m) for m in msgs]
    st = loop.stats()
    assert st["arena_used"] == 4096
    assert st["slots_heap"] == 4
    assert st["slots_live"] == 12
    for s in slots:
        assert loop.fanout(s, ids([c.conn]), 1) == 1
        loop.release(s)
    srv.received([c], 12 * 500)
    assert c.rx == b"".join(msgs)
    st = stats_settle(loop, slots_live=0)
    assert (st["slots_heap"], st["arena_used"]) == (0, 0)
    again = loop.slot(pattern(99, 4096))         # the whole arena is free again
    assert loop.stats()["arena_used"] == 4096 and loop.stats()["slots_heap"] == 0
    loop.release(again)
