"""Heartbeats (rio_heartbeat_config): the loop keeps idle connections alive by itself —
the heartbeat's bytes to each connection idle for the interval, a report for one still
silent after the timeout, and the replies an absorber recognises taken without an event.

The absorber here is the server's own (``hs_absorb_pongs``): WebSocket pongs. The loop
knows nothing of them; these tests check that it calls the absorber only from a boundary
the absorber vouched for."""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable

import pytest

from ringcast.ringio import EventKind
from ringcast.server.protocol.keepalive import PING, pong_absorber

from .helpers import Server, kinds

pytestmark = pytest.mark.kernel

INTERVAL = 0.1
TIMEOUT = 0.2


def masked(opcode: int, payload: bytes) -> bytes:
    """A client's frame (FIN set, masked), as RFC 6455 section 5.2 writes it."""
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + key + body


PONG = masked(0xA, b"")
TEXT = masked(0x1, b"hello")


def data_events(events: list[object]) -> list[bytes]:
    return [e.data for e in kinds(events, EventKind.DATA)]  # type: ignore[arg-type]


def test_an_idle_connection_gets_the_heartbeat_and_a_silent_one_is_reported(
        make_server: Callable[..., Server]) -> None:
    srv = make_server()
    srv.loop.heartbeat_config(INTERVAL, TIMEOUT, b"PING", 0)
    quiet, other = srv.connect(2)
    assert srv.loop.heartbeat(quiet.conn, True)
    srv.received([quiet], 4)                       # after about INTERVAL of silence
    assert bytes(quiet.rx) == b"PING"
    events = srv.pump(lambda ev: bool(kinds(ev, EventKind.HEARTBEAT_TIMEOUT)),
                      what="the heartbeat timeout")
    (timeout,) = kinds(events, EventKind.HEARTBEAT_TIMEOUT)
    assert timeout.conn == quiet.conn
    assert other.rx == b""                         # heartbeats were off for it
    stats = srv.loop.stats()
    assert stats["heartbeats"] == 1 and stats["heartbeat_timeouts"] == 1
    # Reported once: its heartbeats are off now.
    assert not kinds(srv.pump_for(3 * (INTERVAL + TIMEOUT)), EventKind.HEARTBEAT_TIMEOUT)


def test_the_reply_to_a_heartbeat_is_absorbed_and_nothing_else(
        make_server: Callable[..., Server]) -> None:
    srv = make_server()
    srv.loop.heartbeat_config(INTERVAL, TIMEOUT, PING, pong_absorber())
    (c,) = srv.connect(1)
    srv.loop.heartbeat(c.conn, True)
    for answered in range(5):                      # answer five pings, each when it comes
        srv.received([c], len(PING) * (answered + 1))
        srv.peers.send(c, PONG)
    srv.pump_for(INTERVAL)
    assert not kinds(srv.log, EventKind.HEARTBEAT_TIMEOUT)  # answered: alive
    assert data_events(srv.log) == []              # the replies never became events
    assert srv.loop.stats()["heartbeat_replies"] == 5
    # A pong nobody asked for goes up (its session pays for it), and so does anything that
    # is not one pong alone.
    srv.peers.send(c, PONG)
    assert data_events(srv.pump(lambda ev: bool(data_events(ev)), what="a pong")) == [PONG]
    srv.received([c], len(PING) * 6)
    srv.peers.send(c, PONG + TEXT)
    got = srv.pump(lambda ev: bool(data_events(ev)), what="a pong and a text frame")
    assert b"".join(data_events(got)) == PONG + TEXT
    assert srv.loop.stats()["heartbeat_replies"] == 5


def test_after_part_of_a_frame_nothing_is_absorbed_until_realigned(
        make_server: Callable[..., Server]) -> None:
    srv = make_server()
    srv.loop.heartbeat_config(INTERVAL, 5.0, PING, pong_absorber())
    (c,) = srv.connect(1)
    srv.loop.heartbeat(c.conn, True)

    def next_ping(n: int) -> None:
        srv.received([c], len(PING) * n)

    next_ping(1)
    # Half of a text frame: what follows continues it, and must not be taken for a pong.
    srv.peers.send(c, TEXT[:4])
    srv.pump(lambda ev: bool(data_events(ev)), what="the first half")
    next_ping(2)
    srv.peers.send(c, TEXT[4:])
    assert data_events(srv.pump(lambda ev: bool(data_events(ev)), what="the rest")) \
        == [TEXT[4:]]
    next_ping(3)
    srv.peers.send(c, PONG)                        # not aligned: the caller has not said so
    assert data_events(srv.pump(lambda ev: bool(data_events(ev)), what="a pong")) == [PONG]
    srv.loop.heartbeat(c.conn, True, aligned=True)  # its session read a whole frame
    next_ping(4)
    srv.peers.send(c, PONG)
    srv.pump_for(INTERVAL / 2)
    assert srv.loop.stats()["heartbeat_replies"] == 1
    assert not kinds(srv.log, EventKind.HEARTBEAT_TIMEOUT)


def test_a_reply_that_came_while_the_caller_was_busy_is_an_answer(
        make_server: Callable[..., Server]) -> None:
    """The loop judges silence only after reading what has arrived: a pong that waited in
    the kernel while the caller did not reap (a long fan-out, say) keeps the connection."""
    srv = make_server()
    srv.loop.heartbeat_config(INTERVAL, TIMEOUT, PING, pong_absorber())
    (c,) = srv.connect(1)
    srv.loop.heartbeat(c.conn, True)
    srv.received([c], len(PING))
    srv.peers.send(c, PONG)
    time.sleep(3 * TIMEOUT)                        # busy: no reap while the pong waits
    events = srv.loop.reap(0)
    assert not kinds(events, EventKind.HEARTBEAT_TIMEOUT), events
    assert srv.loop.stats()["heartbeat_replies"] == 1


def test_nobody_is_judged_silent_while_the_loop_has_not_read_all_that_arrived(
        make_server: Callable[..., Server]) -> None:
    """Twelve clients answer their pings while the caller is busy; then each reap has room
    for one step's events only (a storm's worth of bytes waiting, or a starved process),
    so the first reaps cannot read every answer. No connection is reported silent: the
    loop judges silence only once it has caught up (rio_behind), and then all answered."""
    srv = make_server(event_limit=3, max_conns=16)
    srv.loop.heartbeat_config(INTERVAL, TIMEOUT, PING, pong_absorber())
    clients = srv.connect(12)
    for c in clients:
        srv.loop.heartbeat(c.conn, True)
    srv.received(clients, len(PING))
    for c in clients:                              # a pong and a message: goes up as DATA
        srv.peers.send(c, PONG + TEXT)
    time.sleep(3 * TIMEOUT)                        # busy: no reap while the answers wait
    events = srv.loop.reap(0)
    assert srv.loop.behind, "twelve answers cannot fit in three events"
    got = srv.pump(lambda ev: not srv.loop.behind
                   and len(data_events(events + ev)) >= len(clients), what="every answer")
    assert not kinds(events + got, EventKind.HEARTBEAT_TIMEOUT)
    assert srv.loop.stats()["heartbeat_unjudged"] >= 1
    assert b"".join(data_events(events + got)) == (PONG + TEXT) * len(clients)


def test_off_means_off(make_server: Callable[..., Server]) -> None:
    srv = make_server()
    srv.loop.heartbeat_config(INTERVAL, TIMEOUT, b"PING", 0)
    (c,) = srv.connect(1)
    srv.loop.heartbeat(c.conn, True)
    srv.loop.heartbeat_config(0, 0)                # turned off for the whole loop
    events = srv.pump_for(3 * (INTERVAL + TIMEOUT))
    assert c.rx == b"" and not kinds(events, EventKind.HEARTBEAT_TIMEOUT)
    assert srv.loop.stats()["heartbeats"] == 0


@pytest.mark.parametrize("configured", [False, True], ids=["never", "on"])
def test_a_wait_without_timeout_still_returns_the_next_event(
        make_server: Callable[..., Server], configured: bool) -> None:
    """``reap(None)`` waits for as long as it takes, with heartbeats or without."""
    srv = make_server()
    if configured:
        srv.loop.heartbeat_config(INTERVAL, TIMEOUT, PING, pong_absorber())
    (c,) = srv.connect(1)
    srv.peers.send(c, TEXT)
    srv.peers.service(0)
    events = srv.loop.reap(None)
    while not data_events(events):
        events = srv.loop.reap(None)
    assert b"".join(data_events(events)) == TEXT
