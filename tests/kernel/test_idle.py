"""reap(timeout) waits: a connection the caller has not closed yet must not turn the
loop into a busy spin (reap returning at once, with nothing, over and over)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from ringcast.ringio import EventKind, Loop

from .helpers import Server, ids, kinds, pattern

pytestmark = pytest.mark.kernel


def reaps_in(loop: Loop, seconds: float, timeout: float) -> int:
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert not kinds(loop.reap(timeout), EventKind.DATA)
        n += 1
    return n


def test_reap_waits_its_timeout_while_a_reset_connection_awaits_close(
        make_server: Callable[..., Server]) -> None:
    # Regression (epoll): EPOLLHUP|EPOLLERR cannot be masked, so a reset socket left in
    # the set woke every epoll_wait until the caller closed the id.
    srv = make_server()
    (c,) = srv.connect(1)
    srv.peers.drop(c, reset=True)
    srv.pump(lambda ev: bool(kinds(ev, EventKind.HUP)), what="HUP after RST")
    n = reaps_in(srv.loop, 0.3, 0.1)
    assert n <= 6, f"{n} reaps in 0.3 s with a 0.1 s timeout: the loop is spinning"


def test_reap_waits_its_timeout_while_a_flushing_connection_has_unread_input(
        make_server: Callable[..., Server]) -> None:
    # Regression (epoll): a draining connection kept EPOLLIN (level-triggered) but was
    # never read, so unread input woke every epoll_wait until the queue drained.
    srv = make_server(sndbuf=4096)
    (c,) = srv.connect(1, rcvbuf=4096)
    srv.peers.pause(c)
    for i in range(8):
        slot = srv.loop.slot(pattern(i, 64 << 10))
        srv.loop.fanout(slot, ids([c.conn]), 1)
        srv.loop.release(slot)
    srv.pump_for(0.05)
    srv.loop.close_connection(c.conn, flush=True)          # stays open until the client reads
    srv.peers.send(c, b"chatter from a slow reader")
    n = reaps_in(srv.loop, 0.3, 0.1)
    assert n <= 6, f"{n} reaps in 0.3 s with a 0.1 s timeout: the loop is spinning"
    srv.peers.resume(c)
    srv.pump(lambda _ev: c.done, timeout=10, what="the flush to finish")
    assert len(c.rx) == 8 * (64 << 10)
