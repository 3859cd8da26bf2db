"""Zero-copy sends (io_uring, kernel >= 6.10): bytes arrive intact, and a peer for which
the kernel reports it copied anyway (always so on loopback) stops getting SEND_ZC."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Any

import pytest

from ringcast.ringio import Engine, Loop

from .helpers import Client, Peers, Server, ids, pattern, stats_settle

pytestmark = pytest.mark.kernel

ZC_ARENA = 8 << 20


def _zc_server(make_loop: Callable[..., Loop], peers: Peers, zc_loopback: bool = True,
               **params: Any) -> Server:
    """A loop whose arena is registered. RLIMIT_MEMLOCK is shared by every ring of this user
    and freed only when a closed ring's teardown has run, so give it a moment; if 8 MiB will
    not fit, 1 MiB is enough for this test."""
    p = None
    for size in (ZC_ARENA, 1 << 20):
        deadline = time.monotonic() + 2
        while True:
            loop = make_loop(zc_threshold=4096, arena_size=size, zc_loopback=zc_loopback,
                             **params)
            p = loop.probe()
            if p.arena_registered or time.monotonic() > deadline:
                break
            loop.close()
            time.sleep(0.05)  # nothing to reap: waiting for the kernel's ring teardown
        if p.arena_registered:
            break
        loop.close()
    assert p is not None
    if (p.kernel_major, p.kernel_minor) < (6, 10):
        pytest.skip(f"zero-copy needs kernel >= 6.10, this is {p.kernel_major}.{p.kernel_minor}")
    if not p.arena_registered:
        memlock = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
        pytest.skip(f"the arena could not be registered (errno {p.arena_errno}; "
                    f"RLIMIT_MEMLOCK {memlock} bytes):\n{p}")
    if not p.zc_enabled:
        pytest.skip(f"zero-copy is off on this ring:\n{p}")
    return Server(loop, peers)


def _fan_out(srv: Server, clients: list[Client], messages: int) -> bytes:
    """Fan ``messages`` messages of 64 KiB out to ``clients``, each received whole and its
    notifications in before the next; the stream every client got, intact."""
    loop = srv.loop
    conns = ids(c.conn for c in clients)
    stream = b""
    for i in range(messages):
        msg = pattern(i, 64 << 10)
        stream += msg
        slot = loop.slot(msg)
        assert loop.fanout(slot, conns, len(clients)) == len(clients)
        loop.release(slot)
        srv.received(clients, len(stream))
        stats_settle(loop, slots_live=0)
    for c in clients:
        assert c.rx == stream
    return stream


@pytest.mark.parametrize("engine", [Engine.IO_URING], indirect=True)
def test_zero_copy_fanout_arrives_intact_and_stops_for_a_copying_peer(
        make_loop: Callable[..., Loop], peers: Peers) -> None:
    srv = _zc_server(make_loop, peers)
    loop = srv.loop
    clients = srv.connect(3)
    conns = ids(c.conn for c in clients)
    size = 64 << 10

    first = pattern(0, size)
    slot = loop.slot(first)
    assert loop.stats()["slots_heap"] == 0, "the 64 KiB slot must be in the registered arena"
    assert loop.fanout(slot, conns, 3) == 3
    loop.release(slot)
    srv.received(clients, size)
    st = stats_settle(loop, slots_live=0)       # the notifications gave the last references back
    assert st["zc_sends"] >= 3, f"no SEND_ZC was issued: {st}"
    assert st["zc_copied"] >= 1, "loopback always copies: the notification must say so"
    for c in clients:
        assert c.rx == first

    # Every peer has reported a copy now: zero-copy is off for them.
    assert st["zc_copied"] == st["zc_sends"], st
    zc_before = st["zc_sends"]
    stream = first
    for i in range(1, 6):
        msg = pattern(i, size)
        stream += msg
        slot = loop.slot(msg)
        assert loop.fanout(slot, conns, 3) == 3
        loop.release(slot)
        srv.received(clients, len(stream))
    st = stats_settle(loop, slots_live=0, queued_bytes=0, arena_used=0)
    assert st["zc_sends"] == zc_before, "SEND_ZC kept being used for peers that copy"
    assert st["send_bytes"] == 3 * len(stream)
    for c in clients:
        assert c.rx == stream


@pytest.mark.parametrize("engine", [Engine.IO_URING], indirect=True)
def test_zc_keep_goes_on_with_zero_copy_after_copied_notifications(
        make_loop: Callable[..., Loop], peers: Peers) -> None:
    # The control for the test above: what stops SEND_ZC is the copied report.
    srv = _zc_server(make_loop, peers, zc_keep=True)
    clients = srv.connect(2)
    stream = _fan_out(srv, clients, 4)
    st = srv.loop.stats()
    assert st["zc_sends"] >= 4 * 2
    assert st["zc_copied"] == st["zc_sends"]
    assert st["send_bytes"] == 2 * len(stream)


@pytest.mark.parametrize("engine", [Engine.IO_URING], indirect=True)
def test_an_accepted_loopback_peer_never_gets_zero_copy_by_default(
        make_loop: Callable[..., Loop], peers: Peers) -> None:
    # Without zc_loopback, an accepted peer on loopback is known to copy: asked (once) at
    # its first frame past the threshold, not at accept, and never sent SEND_ZC.
    srv = _zc_server(make_loop, peers, zc_loopback=False)
    clients = srv.connect(2)
    stream = _fan_out(srv, clients, 3)
    st = stats_settle(srv.loop, slots_live=0, queued_bytes=0)
    assert st["zc_sends"] == 0, st
    assert st["send_bytes"] == 2 * len(stream)
