"""A ring much smaller than the work: the SQ fills while a fan-out is prepared (submit and
drain mid-way), and the CQ overflows (multishot receives end and are re-armed)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ringcast.ringio import Engine, EventKind

from .helpers import Server, ids, kinds, pattern

pytestmark = pytest.mark.kernel


def test_tiny_ring_handles_accepts_fanout_and_receives_bigger_than_its_queues(
        make_server: Callable[..., Server], engine: Engine) -> None:
    # 8 SQ / 16 CQ entries against 300 accepts, recv arms and sends: the SQ fills while
    # a fan-out is prepared (submit + drain mid-way) and the CQ would overflow.
    srv = make_server(sq_entries=8, cq_entries=16, max_conns=400)
    clients = srv.connect(300, batch=150)
    payload = pattern(5, 3000)
    for _ in range(3):
        slot = srv.loop.slot(payload)
        assert srv.loop.fanout(slot, ids(c.conn for c in clients), 300) == 300
        srv.loop.release(slot)
    srv.received(clients, 3 * len(payload), timeout=10)
    srv.pump_for(0.1)
    assert all(c.rx == payload * 3 for c in clients)
    for i, c in enumerate(clients[:50]):
        srv.peers.send(c, pattern(1000 + i, 700))
    want = srv.loop.stats()["recv_bytes"] + 50 * 700
    ev = srv.pump(lambda _ev: srv.loop.stats()["recv_bytes"] >= want,
                  what="client data through the tiny ring")
    got: dict[int, bytes] = {}
    for e in kinds(ev, EventKind.DATA):
        got[e.conn] = got.get(e.conn, b"") + e.data
    for i, c in enumerate(clients[:50]):
        assert got[c.conn] == pattern(1000 + i, 700)
    if engine is Engine.IO_URING:
        # 50 receives completing at once into a 16-entry CQ: multishots ended and were re-armed.
        assert srv.loop.stats()["rearms"] > 0, "the CQ never overflowed: nothing was proved"
