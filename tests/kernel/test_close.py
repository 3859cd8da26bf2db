"""Closing connections: dropping or flushing the queue, freeing ids and slot references,
and never letting a reused id see bytes meant for its previous owner."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

import pytest

from ringcast.ringio import Event, EventKind

from .helpers import Client, Server, ids, kinds, pattern, stats_settle

pytestmark = pytest.mark.kernel

SMALL_BUF = 4096


def _stalled(srv: Server, frames: int, size: int) -> tuple[Client, bytes]:
    """A client that reads nothing, ``frames`` slots of ``size`` bytes queued to it and
    the kernel's buffers given time to fill; returns it and the stream queued."""
    (c,) = srv.connect(1, rcvbuf=SMALL_BUF)
    srv.peers.pause(c)
    stream = _queue(srv, c, frames, size)
    srv.pump_for(0.05)
    return c, stream


def _queue(srv: Server, c: Client, frames: int, size: int, seq0: int = 0) -> bytes:
    """Fan out ``frames`` slots to one client (slots released at once); return the stream."""
    sent = []
    for i in range(frames):
        data = pattern(seq0 + i, size)
        slot = srv.loop.slot(data)
        assert srv.loop.fanout(slot, ids([c.conn]), 1) == 1
        srv.loop.release(slot)
        sent.append(data)
    srv.log += srv.loop.reap(0)
    return b"".join(sent)


@pytest.mark.parametrize("zc_threshold", [0, 16384], ids=["plain-send", "zero-copy"])
def test_close_drops_queued_data_frees_slot_refs_and_peer_sees_eof(
        make_server: Callable[..., Server], zc_threshold: int) -> None:
    # Regression (io_uring): a send in flight at close() completed short, and the unsent
    # entries behind it were freed with the queue without giving back their references.
    srv = make_server(sndbuf=SMALL_BUF, zc_threshold=zc_threshold, zc_loopback=True)
    loop = srv.loop
    base = loop.stats()["conns_live"]
    c, stream = _stalled(srv, 16, 64 << 10)     # 1 MiB in 64 KiB slots
    assert loop.queued(c.conn) > 512 << 10
    loop.close_connection(c.conn)
    srv.peers.resume(c)
    srv.pump(lambda _ev: c.done, what="EOF at the client")
    assert c.eof and not c.error
    assert 0 < len(c.rx) < len(stream), "close() without flush must drop what is queued"
    assert bytes(c.rx) == stream[:len(c.rx)], "what did arrive is an exact prefix"
    # (a zero-copy send's last reference goes with its notification, a little later)
    st = stats_settle(loop, conns_live=base, slots_live=0, queued_bytes=0)
    assert st["arena_used"] == 0


def test_close_with_flush_delivers_everything_queued_then_eof_and_lingers(
        make_server: Callable[..., Server]) -> None:
    srv = make_server(sndbuf=SMALL_BUF)
    loop = srv.loop
    base = loop.stats()["conns_live"]
    c, stream = _stalled(srv, 64, 16 << 10)     # 1 MiB
    loop.close_connection(c.conn, flush=True)
    late = loop.slot(b"late")
    assert loop.fanout(late, ids([c.conn]), 1) == 0, "no new frames once closing"
    loop.release(late)
    srv.peers.resume(c)
    srv.pump(lambda _ev: c.done, timeout=10, what="all bytes then EOF")
    assert c.eof and not c.error
    assert len(c.rx) == len(stream)
    assert c.rx == stream
    stats_settle(loop, queued_bytes=0, slots_live=0)
    # Flushed and shut down for writing, the id lingers (reading and discarding) until the
    # peer closes too, so unread input can never turn the close into an RST.
    srv.peers.send(c, b"the client still talks")
    ev = srv.pump_for(0.2)
    assert loop.stats()["conns_live"] == base + 1
    srv.peers.drop(c)
    stats_settle(loop, conns_live=base)
    ev += srv.pump_for(0.05)
    assert not [e for e in ev if e.conn == c.conn and e.kind in (EventKind.DATA, EventKind.HUP)]
    assert loop.stats()["deliveries"] == 64


def test_close_without_flush_ends_a_lingering_connection_at_once(
        make_server: Callable[..., Server]) -> None:
    srv = make_server()
    loop = srv.loop
    base = loop.stats()["conns_live"]
    (c,) = srv.connect(1)
    assert loop.send(c.conn, b"bye") is True
    loop.close_connection(c.conn, flush=True)
    srv.pump(lambda _ev: c.eof, what="EOF after the last bytes")
    assert c.rx == b"bye"
    srv.pump_for(0.05)
    assert loop.stats()["conns_live"] == base + 1       # lingering: the peer has not closed
    loop.close_connection(c.conn)
    stats_settle(loop, conns_live=base)


def test_reused_id_never_receives_bytes_meant_for_the_old_connection(
        make_server: Callable[..., Server]) -> None:
    srv = make_server(sndbuf=SMALL_BUF)
    loop = srv.loop
    base = loop.stats()["conns_live"]
    old, old_stream = _stalled(srv, 32, 32 << 10)  # 1 MiB stuck behind a full socket
    old_id = old.conn
    loop.close_connection(old_id)
    stats_settle(loop, conns_live=base)         # io_uring frees the id after its last CQE
    (new,) = srv.connect(1)
    assert new.conn == old_id, "the freed id is the next one handed out"
    srv.pump_for(0.3)
    assert new.rx == b"", "the new connection received bytes queued to the old one"
    marker = pattern(999, 3000)
    assert loop.send(new.conn, marker) is True
    srv.received([new], len(marker))
    srv.pump_for(0.1)
    assert new.rx == marker
    srv.peers.resume(old)
    srv.pump(lambda _ev: old.done, what="EOF at the old client")
    assert bytes(old.rx) == old_stream[:len(old.rx)], "the old client got only its own frames"
    assert not new.done


def test_fanout_to_a_closed_id_is_skipped(make_server: Callable[..., Server]) -> None:
    srv = make_server()
    loop = srv.loop
    base = loop.stats()["conns_live"]
    gone, live = srv.connect(2)
    gone_id = gone.conn
    loop.close_connection(gone_id)
    slot = loop.slot(b"frame")
    assert loop.fanout(slot, ids([gone_id, live.conn]), 2) == 1     # closing, not yet freed
    stats_settle(loop, conns_live=base + 1)
    assert loop.fanout(slot, ids([gone_id, live.conn]), 2) == 1     # freed
    assert loop.send(gone_id, b"x") is False or loop.queued(gone_id) == 0
    loop.release(slot)
    srv.received([live], 10)
    srv.pump(lambda _ev: gone.done, what="EOF at the closed client")
    assert gone.rx == b""
    assert live.rx == b"frameframe"
    st = stats_settle(loop, slots_live=0, queued_bytes=0)
    assert st["drops"] == 0
    assert loop.queued(gone_id) == 0


def test_half_closed_peer_still_receives_then_flush_close_ends_it(
        make_server: Callable[..., Server]) -> None:
    srv = make_server(sndbuf=SMALL_BUF)
    loop = srv.loop
    base = loop.stats()["conns_live"]
    (c,) = srv.connect(1, rcvbuf=SMALL_BUF)
    c.sock.shutdown(socket.SHUT_WR)             # the peer is done talking, still listening
    ev = srv.pump(lambda ev: bool(kinds(ev, EventKind.HUP)), what="HUP for the half-close")
    assert [(e.kind, e.conn, e.res) for e in ev] == [(EventKind.HUP, c.conn, 0)]
    srv.peers.pause(c)
    stream = _queue(srv, c, 16, 64 << 10)       # 1 MiB: must wait for socket space
    srv.pump_for(0.05)
    assert loop.queued(c.conn) > 0
    srv.peers.resume(c)
    srv.received([c], len(stream), timeout=10)
    assert c.rx == stream and not c.done
    loop.close_connection(c.conn, flush=True)      # nothing queued, peer already closed: done
    srv.pump(lambda _ev: c.done, what="EOF")
    assert c.eof
    st = stats_settle(loop, conns_live=base)
    assert (st["slots_live"], st["queued_bytes"]) == (0, 0)


@pytest.mark.parametrize("zc_threshold", [0, 16384], ids=["plain-send", "zero-copy"])
def test_trim_drops_what_has_not_started_and_the_next_frame_follows_whole_frames(
        make_server: Callable[..., Server], zc_threshold: int) -> None:
    # What a slow consumer's close frame relies on: after trim(), the next thing queued
    # comes right after the frames already on their way, and no frame is cut.
    srv = make_server(sndbuf=SMALL_BUF, zc_threshold=zc_threshold, zc_loopback=True)
    loop = srv.loop
    frames = 128
    c, stream = _stalled(srv, frames, 8 << 10)  # 1 MiB in 8 KiB frames
    before = loop.queued(c.conn)
    assert before > 512 << 10
    dropped = loop.trim(c.conn)
    assert dropped > 0
    srv.pump_for(0.05)
    assert loop.queued(c.conn) <= before - dropped
    assert loop.send(c.conn, b"<close frame>")
    loop.close_connection(c.conn, flush=True)
    srv.peers.resume(c)
    srv.pump(lambda _ev: c.done, what="the marker then EOF")
    assert c.eof and not c.error
    rx = bytes(c.rx)
    assert rx.endswith(b"<close frame>")
    body = rx[:-len(b"<close frame>")]
    whole, rest = divmod(len(body), 8 << 10)
    assert rest == 0, f"a frame was cut: {len(body)} bytes before the marker"
    assert body == stream[:len(body)], "the frames before the marker are the first ones"
    assert whole < frames // 2, f"{whole} of {frames} frames went out: trim dropped few"
    stats_settle(loop, queued_bytes=0, slots_live=0)


def test_abort_resets_the_peer_instead_of_leaving_its_data_behind(
        make_server: Callable[..., Server]) -> None:
    srv = make_server(sndbuf=SMALL_BUF)
    loop = srv.loop
    base = loop.stats()["conns_live"]
    c, _ = _stalled(srv, 16, 64 << 10)
    loop.close_connection(c.conn, abort=True)
    stats_settle(loop, conns_live=base, slots_live=0, queued_bytes=0)
    srv.peers.resume(c)
    srv.pump(lambda _ev: c.done, what="the reset at the client")
    assert c.error == errno.ECONNRESET, (c.eof, c.error)
    with pytest.raises(ValueError):
        loop.close_connection(c.conn, flush=True, abort=True)


def _closed(events: list[Event], conn: int) -> list[Event]:
    return [e for e in events if e.kind == EventKind.CLOSED and e.conn == conn]


def test_closed_is_reported_once_the_lingering_id_is_free(
        make_server: Callable[..., Server]) -> None:
    # What lets the server count a closing connection against its limits until it is
    # really gone (a lingering connection still holds an id and a file).
    srv = make_server()
    loop = srv.loop
    (c,) = srv.connect(1)
    assert loop.send(c.conn, b"bye") is True
    loop.close_connection(c.conn, flush=True)
    ev = srv.pump(lambda _ev: c.eof, what="EOF after the last bytes")
    ev += srv.pump_for(0.1)
    assert _closed(ev, c.conn) == [], "still lingering: the peer has not closed"
    srv.peers.drop(c)
    ev = srv.pump(lambda ev: bool(_closed(ev, c.conn)), what="CLOSED once the peer closed")
    assert len(_closed(ev, c.conn)) == 1
    assert loop.generation(c.conn) == -1


@pytest.mark.parametrize("how", ["hard", "abort"])
def test_closed_follows_a_hard_close_or_an_abort(
        make_server: Callable[..., Server], how: str) -> None:
    srv = make_server(sndbuf=SMALL_BUF)
    c, _ = _stalled(srv, 8, 64 << 10)           # a send in flight, more queued
    srv.loop.close_connection(c.conn, abort=how == "abort")
    ev = srv.pump(lambda ev: bool(_closed(ev, c.conn)), what="CLOSED")
    assert len(_closed(ev, c.conn)) == 1


def test_closed_comes_before_the_id_is_reused(make_server: Callable[..., Server]) -> None:
    srv = make_server()
    (old,) = srv.connect(1)
    srv.loop.close_connection(old.conn)
    # The id comes back once its close is over (at once, or after a few more accepts).
    for _ in range(8):
        (new,) = srv.connect(1)
        if new.conn == old.conn:
            break
    assert new.conn == old.conn
    log = [(e.kind, e.conn) for e in srv.log]
    closed_at = log.index((EventKind.CLOSED, old.conn))
    reaccepted_at = max(i for i, e in enumerate(log) if e == (EventKind.ACCEPT, new.conn))
    assert closed_at < reaccepted_at


def test_no_closed_for_a_connection_the_caller_did_not_close(
        make_server: Callable[..., Server]) -> None:
    srv = make_server()
    (c,) = srv.connect(1)
    srv.peers.drop(c)
    ev = srv.pump(lambda ev: bool(kinds(ev, EventKind.HUP)), what="HUP")
    ev += srv.pump_for(0.1)
    assert _closed(ev, c.conn) == []            # the caller has not let go of it yet
    srv.loop.close_connection(c.conn)
    srv.pump(lambda ev: bool(_closed(ev, c.conn)), what="CLOSED after close()")
