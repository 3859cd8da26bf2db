"""No event is ever lost when the event array is full and cannot grow.

``event_limit`` caps the array the way a failed realloc does. With room for three
events, bursts of accepts, data, overflows, hang-ups and closes all get through: the
engines leave completions and ready sockets for the next reap, and connections hold
their OVERFLOW, HUP and CLOSED until there is room (``events_deferred`` counts both).
Nothing leaks: every connection is accounted for, and every id comes back.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

from ringcast.ringio import ConnId, Engine, Event, EventKind, Loop, LoopParams, RingioError

from .helpers import Server, ids, kinds, pattern, stats_settle

pytestmark = pytest.mark.kernel

LIMIT = 3           # the smallest limit: one step's worth of events
CLIENTS = 12
SMALL_BUF = 4096


def _limited(loop: Loop, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record how many events each reap returns."""
    batches: list[int] = []
    reap = loop.reap

    def counted(timeout: float | None) -> list[Event]:
        events = reap(timeout)
        batches.append(len(events))
        return events

    monkeypatch.setattr(loop, "reap", counted)
    return batches


def _story(log: list[Event], conn: ConnId) -> list[EventKind]:
    """The kinds of one connection's events, in order, with runs of DATA as one."""
    out: list[EventKind] = []
    for e in log:
        if e.conn == conn and not (out and out[-1] is e.kind is EventKind.DATA):
            out.append(e.kind)
    return out


def test_a_three_event_array_loses_nothing_and_leaks_nothing(
        make_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch) -> None:
    # One id for the listener and one per client: a leaked id would refuse a client below.
    srv = make_server(sndbuf=SMALL_BUF, event_limit=LIMIT, max_conns=CLIENTS + 1)
    loop = srv.loop
    batches = _limited(loop, monkeypatch)

    # A burst of connections, all at once: every one is accepted, none refused.
    clients = srv.connect(CLIENTS, rcvbuf=SMALL_BUF, batch=CLIENTS)
    first_ids = {c.conn for c in clients}
    assert len(first_ids) == CLIENTS
    st = loop.stats()
    assert st["accepts"] == CLIENTS and st["refused"] == 0
    assert st["events_deferred"] > 0, "twelve accepts cannot fit three at a time"

    # Every byte each client sends arrives, in order, under its own id.
    sent = {c.conn: pattern(i, 3000) for i, c in enumerate(clients)}
    for c in clients:
        srv.peers.send(c, sent[c.conn])

    def got(events: list[Event], conn: ConnId) -> bytes:
        return b"".join(e.data for e in kinds(events, EventKind.DATA) if e.conn == conn)

    srv.pump(lambda ev: all(len(got(srv.log + ev, c.conn)) >= len(sent[c.conn])
                            for c in clients), what="every client's bytes")
    assert all(got(srv.log, c.conn) == sent[c.conn] for c in clients)

    # One fan-out overflows every queue at once: twelve OVERFLOWs outside any reap, with
    # room for three at most. The rest are held, and each arrives exactly once.
    for c in clients:
        srv.peers.pause(c)
    big = loop.slot(pattern(99, 256 << 10))
    assert loop.fanout(big, ids(first_ids), CLIENTS) == CLIENTS
    loop.release(big)
    srv.pump_for(0.05)
    deferred = loop.stats()["events_deferred"]
    small = loop.slot(b"over the cap")
    assert loop.fanout(small, ids(first_ids), CLIENTS, cap=1024) == 0
    loop.release(small)
    assert loop.stats()["events_deferred"] >= deferred + CLIENTS - LIMIT
    srv.pump(lambda ev: len(kinds(srv.log + ev, EventKind.OVERFLOW)) >= CLIENTS,
             what="an OVERFLOW for every client")
    overflows = kinds(srv.log, EventKind.OVERFLOW)
    assert sorted(e.conn for e in overflows) == sorted(first_ids)
    assert all(0 < e.aux <= 256 << 10 for e in overflows), "aux: bytes queued at the time"
    assert loop.stats()["overflows"] == CLIENTS and loop.stats()["drops"] == CLIENTS

    # Half the peers reset: one HUP each, for them only.
    gone, kept = clients[:CLIENTS // 2], clients[CLIENTS // 2:]
    for c in gone:
        srv.peers.drop(c, reset=True)
    srv.pump(lambda ev: len(kinds(srv.log + ev, EventKind.HUP)) >= len(gone),
             what="a HUP for every reset peer")
    srv.pump_for(0.05)
    assert sorted(e.conn for e in kinds(srv.log, EventKind.HUP)) == sorted(c.conn for c in gone)

    # Close all twelve back to back: twelve CLOSEDs (epoll frees the ids at once, so most
    # are held), every id free again, every slot reference back.
    deferred = loop.stats()["events_deferred"]
    for c in clients:
        loop.close_connection(c.conn)
    srv.pump(lambda ev: len(kinds(srv.log + ev, EventKind.CLOSED)) >= CLIENTS,
             what="a CLOSED for every connection")
    assert sorted(e.conn for e in kinds(srv.log, EventKind.CLOSED)) == sorted(first_ids)
    assert loop.stats()["events_deferred"] > deferred
    stats_settle(loop, conns_live=1, slots_live=0, queued_bytes=0)
    for c in kept:
        srv.peers.resume(c)
    srv.pump(lambda _ev: all(c.eof for c in kept), what="EOF at the clients kept")

    # Each connection's events came in their order, CLOSED last.
    for c in clients:
        middle = [EventKind.HUP] if c in gone else []
        assert _story(srv.log, c.conn) == [
            EventKind.ACCEPT, EventKind.DATA, EventKind.OVERFLOW, *middle, EventKind.CLOSED,
        ], f"conn {c.conn}"

    # Every id came back: a second burst gets exactly the same ids, none refused.
    again = srv.connect(CLIENTS, batch=CLIENTS)
    assert {c.conn for c in again} == first_ids
    assert loop.stats()["refused"] == 0
    assert max(batches) <= LIMIT, "a reap returned more events than the array holds"


def test_held_events_keep_their_order_and_hold_their_id(
        make_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch) -> None:
    srv = make_server(sndbuf=SMALL_BUF, event_limit=LIMIT, max_conns=CLIENTS + 1)
    loop = srv.loop
    batches = _limited(loop, monkeypatch)
    clients = srv.connect(CLIENTS, rcvbuf=SMALL_BUF, batch=CLIENTS)
    conns = [c.conn for c in clients]
    for c in clients:
        srv.peers.pause(c)
    big = loop.slot(pattern(1, 256 << 10))
    assert loop.fanout(big, ids(conns), CLIENTS) == CLIENTS
    loop.release(big)
    srv.pump_for(0.05)
    # With no reap in between: OVERFLOWs (most of them held), then every close. A CLOSED
    # never overtakes its connection's OVERFLOW, and every id comes back.
    deferred = loop.stats()["events_deferred"]
    small = loop.slot(b"over the cap")
    assert loop.fanout(small, ids(conns), CLIENTS, cap=1024) == 0
    loop.release(small)
    for conn in conns:
        loop.close_connection(conn)
    assert loop.stats()["events_deferred"] >= deferred + CLIENTS - LIMIT
    srv.pump(lambda ev: len(kinds(srv.log + ev, EventKind.CLOSED)) >= CLIENTS,
             what="a CLOSED for every connection")
    for conn in conns:
        assert _story(srv.log, conn) == [
            EventKind.ACCEPT, EventKind.OVERFLOW, EventKind.CLOSED], f"conn {conn}"
    stats_settle(loop, conns_live=1, slots_live=0, queued_bytes=0)
    assert {c.conn for c in srv.connect(CLIENTS, batch=CLIENTS)} == set(conns)
    assert max(batches) <= LIMIT


@pytest.mark.parametrize("limit", [1, 2])
def test_an_event_limit_below_one_step_is_refused(engine: Engine, limit: int) -> None:
    with pytest.raises(RingioError) as exc:
        Loop(LoopParams(engine=engine, event_limit=limit, arena_size=1 << 16))
    assert exc.value.errno == errno.EINVAL
    assert "event_limit" in str(exc.value)
