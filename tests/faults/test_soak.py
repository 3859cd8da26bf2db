"""Soak, bounded: 10,000 connections with churn under a steady publish.

- 10,000 WebSocket connections on one channel: 500 long-lived subscribers that read and
  check every message, and 9,500 that do not read (the kernel holds what they are sent);
- churn: 5 % of the connections (500) are replaced every second, in steps of 50 every
  100 ms, the oldest first (so none lives past ~19 s, under the 25 s ping interval); a
  third of them are reset (SO_LINGER 0), a third drained and closed plainly, a third
  drained and closed with a close frame whose echo is awaited;
- an HTTP publisher sends 10 stamped messages a second.

It runs for ``RINGCAST_SOAK_SECONDS`` (default 60; 300 is the full form, see
docs/reliability.md) after a warm-up. Churn pauses briefly at the end of the warm-up and
at the end, so the two are measured at the same connection count. What must hold: RSS
at the end is within +32 MiB of the level after the warm-up, the fd count within +16;
with the publisher stopped, ``ringcast_frame_slots`` and ``ringcast_queued_bytes`` are 0;
every long-lived subscriber got every message in order; after every client left, the fd
count is back to the start (+16) and ``ringcast_connections`` counts only the scrape.
"""

from __future__ import annotations

import os
import time
from collections import deque

import pytest

from . import wsload as W
from .conftest import MakeSwarm, StartServer, need_fds
from .report import record

SOAK_SECONDS = float(os.environ.get("RINGCAST_SOAK_SECONDS", "60"))
WARMUP_SECONDS = 10.0
CONNECTIONS = 10_000
LONG_LIVED = 500
CHURN_PER_SECOND = CONNECTIONS * 5 // 100
STEPS_PER_SECOND = 10
RATE = 10
SIZE = 128
RSS_TOLERANCE = 32 << 20
FD_TOLERANCE = 16

pytestmark = [pytest.mark.slow, pytest.mark.timeout(SOAK_SECONDS + WARMUP_SECONDS + 240)]


class Churn:
    """Replaces the oldest non-reading connections, a step at a time."""

    def __init__(self, sw: W.Swarm, conns: list[W.Conn]) -> None:
        self.sw = sw
        self.live: deque[W.Conn] = deque(conns)
        self.closing: list[W.Conn] = []
        self.graceful: list[W.Conn] = []
        self.opened = 0
        self.closed = 0
        self.running = False
        self._mode = 0

    def step(self) -> bool:
        if not self.running:
            return True
        n = CHURN_PER_SECOND // STEPS_PER_SECOND
        for _ in range(n):
            conn = self.live.popleft()
            self._mode = (self._mode + 1) % 3
            if conn.state != W.OPEN:
                self.sw.note_error(f"the server closed a non-reading connection: {conn.error}")
            if self._mode == 0:
                conn.abort()
            elif self._mode == 1:
                conn.drain()
                conn.close()
            else:
                conn.drain()
                conn.resume_reading(record=True)
                conn.ws_close(1000)
                self.closing.append(conn)
                self.graceful.append(conn)
            self.closed += 1
        self.live.extend(self.sw.connect(n, W.IDLE, "soak"))
        self.opened += n
        self.closing = [c for c in self.closing if c.state != W.CLOSED]
        if len(self.graceful) > 1000:   # keep the last ones for the close-code check
            self.graceful = [c for c in self.graceful if c.close_code != 1000]
        return True

    def settled(self) -> bool:
        self.closing = [c for c in self.closing if c.state != W.CLOSED]
        return not self.closing and all(c.state == W.OPEN for c in list(self.live)[-500:])


def test_soak_10k_connections_with_churn(
        start_server: StartServer, swarm: MakeSwarm, backend: str) -> None:
    need_fds(CONNECTIONS + 1000)
    srv = start_server(LIMITS_MAX_CONNECTIONS=CONNECTIONS + 2000)
    fds_start = srv.fd_count()
    rss_start = srv.rss_bytes()
    sw = swarm(srv.port, window=1000)
    long_lived = sw.connect(LONG_LIVED, W.SUB, "soak")
    pub = W.Publisher(sw, "soak", SIZE)
    quiet = sw.connect(CONNECTIONS - LONG_LIVED, W.IDLE, "soak")
    sw.run_until(W.all_open([*long_lived, pub.conn, *quiet]), 60, lambda: (
        f"{CONNECTIONS} connections to open: {W.states(quiet)}"))
    W.assert_opened(long_lived + quiet, "connections")
    sw.every(1 / RATE, pub.publish)
    churn = Churn(sw, quiet)
    sw.every(1 / STEPS_PER_SECOND, churn.step)

    def pause_and_measure(what: str) -> tuple[int, int]:
        """Pause churn, wait until the server holds exactly the steady connections."""
        churn.running = False
        sw.run_until(churn.settled, 30, lambda: (
            f"churn to settle ({what}): closing {W.states(churn.closing)}, newest "
            f"{W.states(list(churn.live)[-500:])}, errors {[c.error for c in churn.closing][:3]}"))
        seen = {"conns": 0.0, "fds": 0, "at": 0.0}

        def steady() -> bool:
            now = time.monotonic()
            if now - seen["at"] >= 0.25:
                seen.update(at=now, conns=W.metrics(srv.port)["ringcast_connections"],
                            fds=srv.fd_count())
                return seen["conns"] == CONNECTIONS + 2 and \
                    seen["fds"] <= fds_start + CONNECTIONS + 2
            return False

        sw.run_until(steady, 30, lambda: f"the server to hold {CONNECTIONS} + 2 connections "
                     f"({what}): {seen}")
        return srv.rss_bytes(), srv.fd_count()

    churn.running = True
    sw.run_for(WARMUP_SECONDS)
    rss_warm, fds_warm = pause_and_measure("after the warm-up")
    churn.running = True
    started = time.monotonic()
    samples = []
    while (elapsed := time.monotonic() - started) < SOAK_SECONDS:
        sw.run_for(min(10.0, SOAK_SECONDS - elapsed))
        srv.assert_alive()
        samples.append((round(time.monotonic() - started), round(srv.rss_bytes() / 2**20, 1),
                        srv.fd_count()))
    rss_end, fds_end = pause_and_measure("at the end")
    soak_s = time.monotonic() - started

    # Stop publishing; everything published must reach every long-lived subscriber.
    sw.cancel_timers()
    sw.run_until(pub.done, 20, pub.describe)
    sent = pub.sent
    sw.run_until(lambda: all(c.received == sent for c in long_lived), 30,
                 lambda: f"{sent} messages at every long-lived subscriber: "
                 f"min {min(c.received for c in long_lived)}")
    idle = {"m": W.metrics(srv.port)}

    def drained() -> bool:
        m = idle["m"] = W.metrics(srv.port)
        return m["ringcast_frame_slots"] == 0 and m["ringcast_queued_bytes"] == 0

    # The non-reading connections may still hold queued bytes: read them out first.
    for c in churn.live:
        c.drain()
    sw.run_until(drained, 30, lambda: f"frame slots and queued bytes to reach 0: "
                 f"{idle['m']['ringcast_frame_slots']} slots, "
                 f"{idle['m']['ringcast_queued_bytes']} bytes")
    m_idle = idle["m"]

    assert not sw.errors, sw.errors
    assert all(c.state == W.OPEN and c.order_errors == 0 and c.next_seq == sent
               for c in long_lived)
    assert pub.answers == [200] * sent
    assert all(c.close_code == 1000 for c in churn.graceful if c.state == W.CLOSED)
    assert rss_end <= rss_warm + RSS_TOLERANCE, (
        f"RSS grew from {rss_warm / 2**20:.1f} MiB after the warm-up to "
        f"{rss_end / 2**20:.1f} MiB after {soak_s:.0f}s; samples {samples}")
    assert fds_end <= fds_warm + FD_TOLERANCE, (fds_warm, fds_end, samples)
    assert m_idle.value("ringcast_refusals_total", reason="too_many_connections") == 0
    assert m_idle["ringcast_accept_errors_total"] == 0

    # Everyone leaves: back to the start.
    sw.close_all()
    after = {"conns": -1.0, "fds": -1}

    def empty() -> bool:
        after.update(conns=W.metrics(srv.port)["ringcast_connections"], fds=srv.fd_count())
        return after["conns"] == 1 and after["fds"] <= fds_start + FD_TOLERANCE

    W.poll_until(empty, 30, lambda: f"every connection to go: {after} (start {fds_start} fds)")
    srv.assert_alive()
    lat = sw.latencies_ns
    record("soak", backend, soak_s=round(soak_s), warmup_s=WARMUP_SECONDS,
           connections=CONNECTIONS, long_lived=LONG_LIVED, churned=churn.closed,
           messages=sent, publishes_skipped=pub.skipped, deliveries_checked=len(lat),
           p50_ms=round(W.percentile(lat, 50) / 1e6, 2),
           p99_ms=round(W.percentile(lat, 99) / 1e6, 2),
           rss_start_mib=round(rss_start / 2**20, 1), rss_warm_mib=round(rss_warm / 2**20, 1),
           rss_end_mib=round(rss_end / 2**20, 1), rss_empty_mib=round(srv.rss_bytes() / 2**20, 1),
           fds_start=fds_start, fds_warm=fds_warm, fds_end=fds_end, fds_empty=after["fds"],
           slots_idle=m_idle["ringcast_frame_slots"], queued_idle=m_idle["ringcast_queued_bytes"],
           samples_s_rssmib_fds=samples)
