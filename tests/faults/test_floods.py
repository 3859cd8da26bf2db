"""Frame floods and unfinished messages, with the server's default settings, while healthy
subscribers get a steady publish.

Every frame costs the server a parse, so a client that sends frames carrying no message
(unsolicited pongs, pings, empty continuation frames) must be closed rather than served
for ever, and a message left unfinished must cost at most about ``max_message_size`` and
end at ``limits.message_timeout``. Attackers here reconnect as soon as they are closed,
for a few seconds; each of their connections must end with a 1008 and its reason, and
every healthy subscriber must get every message in order. The healthy subscribers'
latency during the attack is recorded beside the baseline, not asserted.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import select
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import pytest

from tests.support.rawws import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    frame,
    handshake_request,
    parse_frames,
)
from tests.support.waiting import wait_until

from . import wsload as W
from .conftest import MakeSwarm, StartServer
from .report import record

pytestmark = pytest.mark.timeout(120)

HEALTHY = 50
RATE = 50               # messages per second to the healthy subscribers
ATTACK_FOR = 3.0        # seconds each attacker keeps reconnecting and flooding
ATTACKERS = 2           # per kind of flood
FLOODS = {
    "pongs": (frame(OP_PONG, b"", key=b"abcd") * 2000, "control frame rate limit exceeded"),
    "pings": (frame(OP_PING, b"p", key=b"abcd") * 2000, "control frame rate limit exceeded"),
    "empty fragments": (
        frame(OP_BINARY, b"", fin=False, key=b"abcd")
        + frame(OP_CONT, b"", fin=False, key=b"abcd") * 2000,
        "message in more than 1024 frames",
    ),
}


@dataclass
class Attacker:
    """Floods, and reconnects each time the server closes it, until ``until``."""

    port: int
    flood: bytes
    until: float
    closes: list[tuple[int, bytes]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        while time.monotonic() < self.until:
            try:
                self.closes.append(self._one_connection())
            except (OSError, AssertionError) as exc:
                self.errors.append(repr(exc))

    def run_apart(self, results: Connection) -> None:
        """`run` in a process of its own (its CPU must not slow the healthy subscribers'
        client), sending back what it saw."""
        self.run()
        results.send((self.closes, self.errors))

    def _one_connection(self) -> tuple[int, bytes]:
        """Flood one connection until the server's close frame comes; its code and reason
        (the pongs a ping flood earns before it are skipped)."""
        with socket.create_connection((W.HOST, self.port), timeout=10) as sock:
            sock.sendall(handshake_request("/flood"))
            got = b""
            while b"\r\n\r\n" not in got:
                got += sock.recv(4096)
            assert got.startswith(b"HTTP/1.1 101"), got
            rest = bytearray(got.split(b"\r\n\r\n", 1)[1])
            sock.setblocking(False)
            sending = True
            deadline = time.monotonic() + 10
            while (close := _close_frame(rest)) is None:
                readable, writable, _ = select.select([sock], [sock] if sending else [], [], 1)
                if time.monotonic() > deadline:
                    raise AssertionError(f"no close frame within 10 s: {rest[:40]!r}")
                if writable:
                    try:
                        sock.send(self.flood)
                    except OSError:
                        sending = False     # reset after the close: read what came before
                if readable:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise AssertionError(f"EOF without a close frame: {rest[:40]!r}")
                    rest += chunk
            return close


def _close_frame(data: bytearray) -> tuple[int, bytes] | None:
    """The code and reason of the close frame in ``data``, or None while it has not arrived
    whole; the pongs a ping flood earns before it are consumed, any other frame fails."""
    for got in parse_frames(data):
        if got.opcode == OP_CLOSE:
            return got.close_code, got.close_reason
        assert got.opcode == OP_PONG and not got.masked, f"an unexpected frame: {got}"
    return None


def test_frame_floods_end_with_a_close_and_spare_healthy_subscribers(
        start_server: StartServer, swarm: MakeSwarm, backend: str) -> None:
    srv = start_server()
    sw = swarm(srv.port)
    healthy = sw.connect(HEALTHY, W.SUB, "live")
    pub = W.Publisher(sw, "live", 200)
    sw.run_until(W.all_open([*healthy, pub.conn]), 10, "the healthy subscribers to open")
    W.assert_opened(healthy, "healthy subscribers")
    sw.every(1 / RATE, pub.publish)
    sw.run_for(2.0)
    baseline = sw.latencies_ns[:]
    sw.latencies_ns.clear()

    until = time.monotonic() + ATTACK_FOR
    attackers = {
        (kind, i): Attacker(srv.port, flood, until)
        for kind, (flood, _) in FLOODS.items()
        for i in range(ATTACKERS)
    }
    fork = multiprocessing.get_context("fork")
    pipes = {key: fork.Pipe(duplex=False) for key in attackers}
    procs = [fork.Process(target=a.run_apart, args=(pipes[key][1],), daemon=True)
             for key, a in attackers.items()]
    for proc in procs:
        proc.start()
    sw.run_until(lambda: all(r.poll() for r, _ in pipes.values()), ATTACK_FOR + 30,
                 "the attackers to finish")
    for key, (reader, _) in pipes.items():
        attackers[key].closes, attackers[key].errors = reader.recv()
    for proc in procs:
        proc.join(10)
    during = sw.latencies_ns[:]
    stop_at = pub.sent + 10
    sw.run_until(lambda: pub.sent >= stop_at, 10, "10 more publishes")
    sw.cancel_timers()
    sw.run_until(pub.done, 10, pub.describe)
    sent = pub.sent
    sw.run_until(lambda: all(c.received == sent for c in healthy), 10,
                 lambda: f"{sent} messages at every healthy subscriber: "
                 f"{[c.received for c in healthy]}")

    for (kind, i), attacker in attackers.items():
        reason = FLOODS[kind][1].encode()
        assert attacker.closes, f"{kind} #{i}: never closed ({attacker.errors})"
        assert not attacker.errors, (kind, attacker.errors)
        assert all(close == (1008, reason) for close in attacker.closes), (kind, attacker.closes)
    srv.assert_alive()
    assert all(c.state == W.OPEN and c.order_errors == 0 for c in healthy)
    assert pub.answers == [200] * sent
    m = W.metrics(srv.port)
    assert m.value("ringcast_refusals_total", reason="control_flood") == sum(
        len(a.closes) for (kind, _), a in attackers.items() if kind != "empty fragments")
    assert m.value("ringcast_refusals_total", reason="too_many_frames") == sum(
        len(a.closes) for (kind, _), a in attackers.items() if kind == "empty fragments")
    record("frame floods", backend, attacker_connections=sum(len(a.closes) for a in
                                                              attackers.values()),
           healthy_messages=sent,
           baseline_p50_ms=round(W.percentile(baseline, 50) / 1e6, 2),
           attack_p50_ms=round(W.percentile(during, 50) / 1e6, 2),
           attack_p99_ms=round(W.percentile(during, 99) / 1e6, 2))
    sw.close_all()


def test_unfinished_messages_cost_their_size_and_end_at_the_timeout(
        start_server: StartServer) -> None:
    # 20 clients each leave a message of nearly 1 MiB unfinished, in 1,000 fragments: the
    # server holds each in one buffer (about its size, not an object per fragment), and
    # closes them all at message_timeout.
    clients, size, pieces = 20, 1 << 20, 1000
    srv = start_server(LIMITS_MESSAGE_TIMEOUT=3)
    rss_before = srv.rss_bytes()
    piece = size // pieces - 16
    data = frame(OP_BINARY, b"x" * piece, fin=False, key=b"abcd") + frame(
        OP_CONT, b"x" * piece, fin=False, key=b"abcd") * (pieces - 2)
    socks: list[tuple[socket.socket, float]] = []
    try:
        for _ in range(clients):
            sock = socket.create_connection((W.HOST, srv.port), timeout=10)
            sock.sendall(handshake_request("/unfinished"))
            assert sock.recv(4096).startswith(b"HTTP/1.1 101")
            socks.append((sock, time.monotonic()))
            sock.sendall(data)

        def all_buffered() -> bool:
            return W.metrics(srv.port).value("ringcast_bytes_in_total") >= clients * len(data)
        asyncio.run(wait_until(all_buffered, 10, "every unfinished message to arrive"))
        grown = srv.rss_bytes() - rss_before
        held = clients * piece * (pieces - 1)
        assert grown < held * 1.5 + (8 << 20), (
            f"{clients} unfinished messages of {held // clients} bytes grew the server by "
            f"{grown} bytes")
        for sock, started in socks:
            got = b""
            while len(got) < 2 or len(got) < 2 + got[1]:
                chunk = sock.recv(4096)
                assert chunk, "closed without a close frame"
                got += chunk
            waited = time.monotonic() - started
            assert got[:2] == b"\x88" + bytes([len(got) - 2]), got
            assert got[2:4] == (1008).to_bytes(2, "big")
            assert got[4:] == b"message not completed within 3 seconds"
            assert waited >= 2.9, f"closed after {waited:.2f} s, before the 3 s timeout"
        record("unfinished messages", "any", clients=clients, bytes_each=held // clients,
               rss_growth=grown)
    finally:
        for sock, _ in socks:
            sock.close()
