"""Closing a listener, and adopting an already connected socket."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from ringcast.ringio import Event, EventKind, Loop

from .helpers import LOCALHOST, Peers, Server, ids, kinds, reap_for, stats_settle

pytestmark = pytest.mark.kernel


def test_closed_listener_stops_accepting_and_further_reaps_are_quiet(
        make_server: Callable[..., Server]) -> None:
    srv = make_server()
    loop = srv.loop
    (kept,) = srv.connect(1)
    before = loop.stats()
    loop.close_connection(srv.lid)
    stats_settle(loop, conns_live=before["conns_live"] - 1)
    for _ in range(3):
        probe_sock = socket.socket()
        probe_sock.settimeout(2)
        try:
            with pytest.raises(ConnectionRefusedError):
                probe_sock.connect((LOCALHOST, srv.port))
        finally:
            probe_sock.close()
    ev = reap_for(loop, 0.2)
    assert not kinds(ev, EventKind.ACCEPT) and not kinds(ev, EventKind.ACCEPT_ERROR)
    assert loop.stats()["accepts"] == before["accepts"]
    loop.close_connection(srv.lid)                        # closing it again is harmless
    with pytest.raises(OSError):
        loop.resume_accept(srv.lid)            # not a listener any more
    # Connections accepted before still work both ways.
    assert loop.send(kept.conn, b"still here") is True
    srv.peers.send(kept, b"me too")
    ev = srv.pump(lambda ev: len(kept.rx) == 10 and bool(kinds(ev, EventKind.DATA)),
                  what="traffic on the kept connection")
    assert kept.rx == b"still here"
    assert b"".join(e.data for e in kinds(ev, EventKind.DATA)) == b"me too"


def test_adopted_socketpair_end_receives_data_and_can_be_sent_to(
        make_loop: Callable[..., Loop], peers: Peers) -> None:
    loop = make_loop()
    ours, theirs = socket.socketpair()
    conn = loop.adopt(ours)
    assert ours.fileno() == -1, "the loop owns the fd now"
    peer = peers.add(theirs)
    assert loop.stats()["conns_live"] == 1

    peers.send(peer, b"ping" * 1000)
    got = bytearray()

    def pinged(ev: list[Event]) -> bool:
        got[:] = b"".join(e.data for e in kinds(ev, EventKind.DATA) if e.conn == conn)
        return len(got) >= 4000

    peers.pump(loop, pinged, what="DATA from the adopted socket")
    assert got == b"ping" * 1000

    slot = loop.slot(b"pong" * 5000)
    assert loop.fanout(slot, ids([conn]), 1) == 1
    loop.release(slot)
    assert loop.send(conn, b"!") is True
    peers.received(loop, [peer], 20001)
    assert peer.rx == b"pong" * 5000 + b"!"

    peers.drop(peer)
    ev = peers.pump(loop, lambda ev: bool(kinds(ev, EventKind.HUP)), what="HUP")
    assert [(e.conn, e.res) for e in kinds(ev, EventKind.HUP)] == [(conn, 0)]
    loop.close_connection(conn)
    stats_settle(loop, conns_live=0, slots_live=0, queued_bytes=0)
