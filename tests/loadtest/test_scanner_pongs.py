"""The scanner answers pings in C (RFC 6455 section 5.5.3), through a real loop.

A load client holding a million idle subscribers answers tens of thousands of pings a
second; `Scanner.answer_pings` has the C scanner queue each pong on the loop itself
(`Loop.send_hook`), so no ping makes a Python call. Checked over a socketpair: what the
peer reads is one masked pong per ping, carrying the ping's payload, and no note.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from ringcast.loadtest import scanner as sc
from ringcast.loadtest.scanner import Scanner
from ringcast.ringio import Engine, Loop, LoopParams, RingUnavailable, probe
from tests.support.rawws import OP_BINARY, OP_CONT, OP_PING, OP_PONG, frame, parse_frames

SIZE = 64


@pytest.fixture(params=[Engine.IO_URING, Engine.EPOLL], ids=["io_uring", "epoll"])
def loop(request: pytest.FixtureRequest) -> Iterator[Loop]:
    if request.param is Engine.IO_URING:
        p = probe(Engine.IO_URING)
        if isinstance(p, RingUnavailable):
            pytest.skip(f"io_uring unavailable: {p.cause}")
    with Loop(LoopParams(engine=request.param, max_conns=16, arena_size=1 << 20)) as lp:
        yield lp


def read_frames(loop: Loop, peer: socket.socket, n: int) -> list[tuple[int, bytes, bool]]:
    """Run the loop until the peer has read ``n`` whole frames (5 s at most)."""
    buf = bytearray()
    got: list[tuple[int, bytes, bool]] = []
    peer.setblocking(False)
    deadline = time.monotonic() + 5.0
    while len(got) < n:
        assert time.monotonic() < deadline, f"the peer read {got}, expected {n} frames"
        loop.reap(0.01)
        try:
            buf += peer.recv(65536)
        except BlockingIOError:
            continue
        got += [(f.opcode, f.payload, f.masked) for f in parse_frames(buf)]
    return got


def test_5_5_3_each_ping_is_answered_by_a_masked_pong_with_its_payload(loop: Loop) -> None:
    ours, peer = socket.socketpair()
    conn = loop.adopt(ours)
    s = Scanner(16, 1, SIZE)
    s.set_role(conn, sc.ROLE_SUB)
    s.answer_pings(loop.send_hook())
    payloads = [b"", b"a", b"are you there?", bytes(range(125))]
    s.feed(conn, b"".join(frame(OP_PING, p, masked=False) for p in payloads))
    assert s.notes() == []
    assert s.counts()["pings"] == len(payloads)
    assert read_frames(loop, peer, len(payloads)) == [(OP_PONG, p, True) for p in payloads]
    peer.close()


def test_a_ping_inside_a_fragmented_message_is_answered_and_the_message_counted(
        loop: Loop) -> None:
    ours, peer = socket.socketpair()
    conn = loop.adopt(ours)
    s = Scanner(16, 1, SIZE)
    s.set_role(conn, sc.ROLE_SUB)
    s.answer_pings(loop.send_hook())
    s.publish(0, 0, 1000, 1)
    p = sc.payload(0, 0, 1000, SIZE)
    s.feed(conn, frame(OP_BINARY, p[:10], fin=False, masked=False)
           + frame(OP_PING, b"mid", masked=False)
           + frame(OP_CONT, p[10:], masked=False))
    c = s.counts()
    assert c["delivered"] == 1 and c["corrupted"] == 0 and s.notes() == []
    assert read_frames(loop, peer, 1) == [(OP_PONG, b"mid", True)]
    peer.close()


def test_without_a_send_hook_pings_are_notes() -> None:
    s = Scanner(4, 1, SIZE)
    s.set_role(0, sc.ROLE_SUB)
    s.answer_pings(None)
    s.feed(0, frame(OP_PING, b"abc", masked=False))
    assert s.notes() == [sc.Note(0, sc.NOTE_PING, 0, b"abc")]


def test_a_ping_on_a_connection_the_loop_has_closed_is_not_answered(loop: Loop) -> None:
    s = Scanner(16, 1, SIZE)
    s.answer_pings(loop.send_hook())
    s.set_role(3, sc.ROLE_SUB)          # an id the loop has not open: nobody to answer
    s.feed(3, frame(OP_PING, b"xyz", masked=False))
    assert s.notes() == [] and s.counts()["pings"] == 1
    assert loop.stats()["conns_live"] == 0
