"""Slow readers: queued frames coalesce behind a blocked send; a cap drops frames for
the slow reader only, with one OVERFLOW per episode; force bypasses the cap."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable

import pytest

from ringcast.ringio import Engine, EventKind

from .helpers import Client, Server, ids, kinds, pattern, stats_settle

pytestmark = pytest.mark.kernel

SMALL_BUF = 4096        # client SO_RCVBUF and listener SO_SNDBUF: queues build at once
CAP = 64 << 10


def frames(data: bytes, size: int) -> list[int]:
    """The sequence numbers of consecutive ``size``-byte frames made by ``pattern``."""
    assert len(data) % size == 0, f"{len(data)} bytes is not a whole number of frames"
    out = []
    for off in range(0, len(data), size):
        seq, n = struct.unpack_from("!II", data, off)
        assert n == size and data[off:off + size] == pattern(seq, size), f"frame at {off} corrupt"
        out.append(seq)
    return out


def test_blocked_client_gets_2mb_queued_in_order_and_sends_coalesce(
        make_server: Callable[..., Server], engine: Engine) -> None:
    srv = make_server(sndbuf=SMALL_BUF, arena_size=4 << 20)
    loop = srv.loop
    (c,) = srv.connect(1, rcvbuf=SMALL_BUF)
    srv.peers.pause(c)
    size, count = 4096, 512                     # 2 MiB in 4 KiB frames, cap 0 = unlimited
    conn = ids([c.conn])
    for i in range(count):
        slot = loop.slot(pattern(i, size))
        assert loop.fanout(slot, conn, 1, cap=0) == 1
        loop.release(slot)
        if i % 64 == 0:
            srv.log += loop.reap(0)
    srv.pump_for(0.05)
    assert loop.queued(c.conn) > 1 << 20, "the client is not reading: most of it must wait"
    assert loop.stats()["queued_bytes"] == loop.queued(c.conn)
    srv.peers.resume(c)
    srv.received([c], size * count, timeout=10)
    srv.pump_for(0.05)
    assert frames(bytes(c.rx), size) == list(range(count))
    st = stats_settle(loop, slots_live=0, queued_bytes=0)
    assert st["coalesced"] > 0, "frames queued behind a blocked send must go out together"
    assert st["send_bytes"] == size * count, "every queued byte must go out exactly once"
    if engine is Engine.IO_URING:
        # One send in flight; the frames queued behind it leave up to 32 to a sendmsg.
        assert st["sends"] <= count // 8, (
            f"{st['sends']} sends for {count} frames: what queued behind the blocked send "
            "did not coalesce")
    else:
        # epoll writes what the socket takes (and counts every EAGAIN'd attempt as a
        # send): a 4 KiB socket takes 2 MiB only in short writes, resumed mid-frame.
        assert st["short_sends"] > 0, "the blocked socket never cut a write short"
    assert st["drops"] == 0 and st["overflows"] == 0
    assert not kinds(srv.log, EventKind.OVERFLOW)


def _flood(srv: Server, slow: Client, fast: Client, *, count: int, size: int, first_seq: int,
           force: bool = False) -> int:
    """Fan out ``count`` frames to both; keep the fast reader drained. Returns queued-to."""
    loop = srv.loop
    both = ids([slow.conn, fast.conn])
    total = 0
    for i in range(count):
        slot = loop.slot(pattern(first_seq + i, size))
        total += loop.fanout(slot, both, 2, cap=CAP, force=force)
        loop.release(slot)
        srv.pump(lambda _ev: loop.queued(fast.conn) == 0, what="the fast reader to drain")
    return total


def test_cap_drops_for_the_slow_reader_only_with_one_overflow_event(
        make_server: Callable[..., Server]) -> None:
    srv = make_server(sndbuf=SMALL_BUF)
    loop = srv.loop
    slow, fast = srv.connect(2, rcvbuf=SMALL_BUF)
    srv.peers.pause(slow)
    size, count = 1024, 300                     # 300 KiB to a 64 KiB cap
    queued_to = _flood(srv, slow, fast, count=count, size=size, first_seq=0)
    assert queued_to < 2 * count, "the slow reader went past the cap without a drop"
    st = loop.stats()
    assert st["drops"] == 2 * count - queued_to
    assert loop.queued(slow.conn) <= CAP
    overflows = kinds(srv.log, EventKind.OVERFLOW)
    assert [e.conn for e in overflows] == [slow.conn], "exactly one OVERFLOW, for the slow one"
    assert 0 < overflows[0].aux <= CAP                 # bytes queued when it overflowed
    assert st["overflows"] == 1

    # The fast reader lost nothing.
    srv.received([fast], count * size)
    assert frames(bytes(fast.rx), size) == list(range(count))

    # The slow one gets whole frames, in order, with a gap where it overflowed.
    srv.peers.resume(slow)
    srv.pump(lambda _ev: loop.queued(slow.conn) == 0, what="the slow queue to drain")
    srv.pump_for(0.1)
    seqs = frames(bytes(slow.rx), size)
    assert all(a < b for a, b in itertools.pairwise(seqs)), "frames duplicated or reordered"
    assert len(seqs) == queued_to - count < count, "what was queued arrived; the rest dropped"
    assert seqs[0] == 0

    # Drained: a new episode reports a new OVERFLOW (one again).
    srv.peers.pause(slow)
    _flood(srv, slow, fast, count=count, size=size, first_seq=count)
    overflows = kinds(srv.log, EventKind.OVERFLOW)
    assert [e.conn for e in overflows] == [slow.conn, slow.conn]
    assert loop.stats()["overflows"] == 2


def test_force_bypasses_the_cap(make_server: Callable[..., Server]) -> None:
    srv = make_server(sndbuf=SMALL_BUF)
    loop = srv.loop
    slow, fast = srv.connect(2, rcvbuf=SMALL_BUF)
    srv.peers.pause(slow)
    size, count = 1024, 200
    assert _flood(srv, slow, fast, count=count, size=size, first_seq=0, force=True) == 2 * count
    st = loop.stats()
    assert st["drops"] == 0 and st["overflows"] == 0
    assert loop.queued(slow.conn) > CAP, "force must queue past the cap"
    assert not kinds(srv.log, EventKind.OVERFLOW)
    assert loop.send(slow.conn, b"x" * size, cap=CAP) is False    # without force: refused
    assert loop.send(slow.conn, pattern(count, size), cap=CAP, force=True) is True
    srv.peers.resume(slow)
    srv.received([slow, fast], [(count + 1) * size, count * size])
    assert frames(bytes(slow.rx), size) == list(range(count + 1))
    stats_settle(loop, slots_live=0, queued_bytes=0)


def test_cap_bounds_the_backlog_not_the_frame_size(make_server: Callable[..., Server]) -> None:
    srv = make_server(sndbuf=SMALL_BUF)
    loop = srv.loop
    (c,) = srv.connect(1, rcvbuf=SMALL_BUF)
    srv.peers.pause(c)
    big = pattern(1, 64 << 10)
    # An empty queue takes the next frame even when the frame alone is over the cap ...
    assert loop.send(c.conn, big, cap=1024) is True
    srv.pump_for(0.05)
    # ... but once something waits behind the blocked socket, the cap applies.
    assert loop.queued(c.conn) > 0
    assert loop.send(c.conn, pattern(2, 1024), cap=1024) is False
    assert loop.stats()["drops"] == 1
    srv.peers.resume(c)
    srv.received([c], len(big))
    srv.pump_for(0.05)
    assert c.rx == big
    stats_settle(loop, slots_live=0, queued_bytes=0)
