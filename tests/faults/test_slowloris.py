"""Slowloris and clients that never read, while 1,000 healthy subscribers get a steady
publish.

Injected, all at once against one server (``limits.handshake_timeout`` 5 s,
``limits.queue_max_bytes`` 64 KiB, ``limits.close_timeout`` 2 s):

- 2,000 connections that send their WebSocket handshake one byte per second;
- 2,000 that complete the handshake on the published channel and then never read, with a
  tiny receive buffer and MSS (so the kernel holds little for them and ringcast's own queue
  fills: see MAX_HELD in tests/e2e/test_slow_consumers.py for what a full-size socket
  absorbs);
- 1,000 healthy subscribers of the same channel, and an HTTP publisher sending 20 stamped
  1 KiB messages a second.

What must hold: every slowloris connection is ended by the server at the handshake timeout
(not before, and within a few seconds after); every never-reading subscriber is closed as a
slow consumer (3008, then the close timeout) and is gone from the server; every healthy
subscriber got every message in order. The p99 delivery latency of the healthy ones is
recorded, not asserted (speed is measured in the benchmarks).
"""

from __future__ import annotations

import time

import pytest

from . import wsload as W
from .conftest import MakeSwarm, StartServer, need_fds
from .report import record

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

HEALTHY = 1000
NEVER_READ = 2000
SLOWLORIS = 2000
RATE = 20               # messages per second
SIZE = 1024
BASELINE_FOR = 4.0      # seconds of publishing before the attack
PUBLISH_FOR = 12.0      # seconds of publishing during the attack, at least
HANDSHAKE_TIMEOUT = 5.0
CLOSE_TIMEOUT = 2.0
QUEUE_CAP = 65536
TIMEOUT_SLACK = 4.0     # how late after the handshake timeout a slowloris may be closed


def test_slowloris_and_never_reading_clients_spare_healthy_subscribers(
        start_server: StartServer, swarm: MakeSwarm, backend: str) -> None:
    need_fds(HEALTHY + NEVER_READ + SLOWLORIS + 500)
    srv = start_server(
        LIMITS_HANDSHAKE_TIMEOUT=HANDSHAKE_TIMEOUT,
        LIMITS_QUEUE_MAX_BYTES=QUEUE_CAP,
        LIMITS_CLOSE_TIMEOUT=CLOSE_TIMEOUT,
    )
    sw = swarm(srv.port, window=500)
    healthy = sw.connect(HEALTHY, W.SUB, "live")
    pub = W.Publisher(sw, "live", SIZE)
    sw.run_until(W.all_open([*healthy, pub.conn]), 30, "1,000 healthy subscribers to open")
    W.assert_opened(healthy, "healthy subscribers")
    # Baseline: the same publish with nobody else on the server.
    sw.every(1 / RATE, pub.publish)
    sw.run_for(BASELINE_FOR)
    baseline = sw.latencies_ns[:]
    sw.latencies_ns.clear()
    fds_before = srv.fd_count()

    # The attack: never-reading subscribers, then slowloris, while the publish goes on.
    started = time.monotonic()
    never_read = sw.connect(NEVER_READ, W.IDLE, "live", rcvbuf=2048, maxseg=536)
    sw.run_until(W.all_open(never_read), 30, "2,000 never-reading subscribers to open")
    W.assert_opened(never_read, "never-reading subscribers")
    slowloris = sw.connect(SLOWLORIS, W.DRIP, "live", drip=1, drip_interval=1.0)
    sw.run_until(lambda: all(c.state != W.CONNECTING for c in slowloris), 10,
                 "the slowloris connections to connect")
    burst_end = len(sw.latencies_ns)    # after this, the attackers are all connected

    seen = {"closes": 0.0, "conns": 0.0, "fds": 0, "at": 0.0}

    def slow_consumers_gone() -> bool:
        # /metrics and /proc at most every 0.5 s: every never-reading subscriber closed as a
        # slow consumer, its session gone and its fd closed (close_timeout twice: waiting
        # for its close frame, then for its queue to flush).
        now = time.monotonic()
        if now - seen["at"] >= 0.5:
            m = W.metrics(srv.port)
            seen.update(at=now, closes=m["ringcast_slow_consumer_closes_total"],
                        conns=m["ringcast_connections"], fds=srv.fd_count())
        return (seen["closes"] == NEVER_READ and seen["conns"] == HEALTHY + 2
                and seen["fds"] <= fds_before + 2)

    def done() -> bool:
        return (time.monotonic() - started >= PUBLISH_FOR
                and all(c.state == W.CLOSED for c in slowloris)
                and slow_consumers_gone())

    sw.run_until(done, 60, lambda: (
        f"the server to end the attackers: slowloris {W.states(slowloris)}, "
        f"slow-consumer closes {seen['closes']:.0f} of {NEVER_READ}, connections "
        f"{seen['conns']:.0f}, fds {seen['fds']} (before the attack {fds_before})"))
    took = time.monotonic() - started
    sw.cancel_timers()
    sw.run_until(pub.done, 20, pub.describe)
    sent = pub.sent
    sw.run_until(lambda: all(c.received == sent for c in healthy), 20,
                 lambda: f"{sent} messages at every healthy subscriber: "
                 f"min {min(c.received for c in healthy)}")

    srv.assert_alive()
    # Healthy: everything, in order, still open.
    assert not sw.errors, sw.errors
    assert all(c.state == W.OPEN and not c.error for c in healthy)
    assert all(c.order_errors == 0 and c.next_seq == sent for c in healthy)
    assert pub.answers == [200] * sent
    # Slowloris: ended by the server at the handshake timeout, with no answer.
    lifetimes = [c.closed_at - c.started_at for c in slowloris]
    early = [t for t in lifetimes if t < HANDSHAKE_TIMEOUT - 0.05]
    late = [t for t in lifetimes if t > HANDSHAKE_TIMEOUT + TIMEOUT_SLACK]
    assert not early, f"{len(early)} slowloris connections closed before the timeout: {early[:5]}"
    assert not late, f"{len(late)} slowloris connections closed late: {sorted(late)[-5:]}"
    assert all(c.head == b"" and c.error is None for c in slowloris), \
        [(c.head[:40], c.error) for c in slowloris if c.head or c.error][:5]
    # Never-reading: closed as slow consumers and gone. Reading them now finds what the
    # kernel still held, then the end of the connection.
    m = W.metrics(srv.port)
    assert m["ringcast_slow_consumer_closes_total"] == NEVER_READ
    assert m["ringcast_connections"] == HEALTHY + 2   # + the publisher + this scrape
    for c in never_read:
        c.resume_reading()
    sw.run_until(lambda: all(c.state == W.CLOSED for c in never_read), 30,
                 lambda: f"EOF on the never-reading sockets: {W.states(never_read)}")
    got_3008 = sum(c.close_code == 3008 for c in never_read)
    lat = sw.latencies_ns

    def ms(values: list[int], q: float) -> float:
        return round(W.percentile(values, q) / 1e6, 2)

    record("slowloris", backend, healthy=HEALTHY, never_read=NEVER_READ, slowloris=SLOWLORIS,
           messages=sent, publishes_skipped=pub.skipped,
           deliveries=len(baseline) + len(lat), attack_phase_s=round(took, 1),
           baseline_p50_ms=ms(baseline, 50), baseline_p99_ms=ms(baseline, 99),
           attack_p50_ms=ms(lat, 50), attack_p99_ms=ms(lat, 99), attack_max_ms=ms(lat, 100),
           steady_attack_p50_ms=ms(lat[burst_end:], 50),
           steady_attack_p99_ms=ms(lat[burst_end:], 99),
           slowloris_closed_after_s=[round(min(lifetimes), 2), round(max(lifetimes), 2)],
           never_read_saw_3008=got_3008, rss_mib=round(srv.rss_bytes() / 2**20, 1))
    sw.close_all()
