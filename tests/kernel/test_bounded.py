"""Nothing grows without bound: ids, slots and queued bytes return to their baseline
after rounds of connections come and go."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ringcast.ringio import ConnId, Event, EventKind

from .helpers import Client, Server, ids, kinds, pattern, stats_settle

pytestmark = pytest.mark.kernel


def test_three_rounds_of_200_connections_return_to_baseline(
        make_server: Callable[..., Server]) -> None:
    srv = make_server(max_conns=256)            # 3 x 200 only fits if ids are reused
    loop = srv.loop
    base = loop.stats()
    seen_ids: set[int] = set()
    for rnd in range(3):
        clients = srv.connect(200, batch=100)
        seen_ids |= {c.conn for c in clients}
        msg = pattern(rnd, 2000)
        slot = loop.slot(msg)
        assert loop.fanout(slot, ids(c.conn for c in clients), 200) == 200
        loop.release(slot)
        srv.received(clients, len(msg))
        assert all(c.rx == msg for c in clients)
        # Half hang up from their side (the server closes on HUP), half are closed by
        # the server with data still queued.
        by_peer, by_server = clients[:100], clients[100:]
        peer_closed = {c.conn for c in by_peer}
        for c in by_peer:
            srv.peers.drop(c)
        slot = loop.slot(pattern(100 + rnd, 50000))
        loop.fanout(slot, ids(c.conn for c in by_server), 100)
        loop.release(slot)
        for c in by_server:
            loop.close_connection(c.conn)
        hups: set[ConnId] = set()

        def all_hung_up(ev: list[Event], hups: set[ConnId] = hups,
                        peer_closed: set[ConnId] = peer_closed) -> bool:
            for e in kinds(ev, EventKind.HUP):
                if e.conn not in hups:
                    hups.add(e.conn)
                    loop.close_connection(e.conn)
            return peer_closed <= hups

        srv.pump(all_hung_up, what="100 HUPs")
        def closed_seen(_ev: list[Event], group: list[Client] = by_server) -> bool:
            return all(c.done for c in group)

        srv.pump(closed_seen, what="the server-closed clients to see EOF")
        for c in by_server:
            srv.peers.drop(c)
        st = stats_settle(loop, conns_live=base["conns_live"], slots_live=0, queued_bytes=0)
        assert st["arena_used"] == 0 and st["slots_heap"] == 0
        assert st["accepts"] == 200 * (rnd + 1)
    assert max(seen_ids) < 256
    assert loop.stats()["refused"] == 0
