"""SIGTERM while clients misbehave: 500 subscribers that never read hold full queues, 50
healthy ones read. The server must close the healthy ones with 1001, give up on the
stalled ones after ``shutdown.drain_timeout``, and exit 0."""

from __future__ import annotations

import signal
import time

import pytest

from . import wsload as W
from .conftest import MakeSwarm, StartServer
from .report import record

pytestmark = pytest.mark.timeout(60)

DRAIN_TIMEOUT = 3.0


def test_sigterm_with_stalled_clients_drains_and_exits_zero(
        start_server: StartServer, swarm: MakeSwarm, backend: str) -> None:
    srv = start_server(SHUTDOWN_DRAIN_TIMEOUT=DRAIN_TIMEOUT)
    sw = swarm(srv.port, window=600)
    healthy = sw.connect(50, W.SUB, "live", check=lambda *_: None)
    stalled = sw.connect(500, W.IDLE, "live", rcvbuf=2048, maxseg=536)
    sw.run_until(W.all_open(healthy + stalled), 30, "the subscribers to open")
    for _ in range(50):
        status, _ = W.http_post(srv.port, "/publish/live", b"x" * 8000)
        assert status == 200
    queued = W.metrics(srv.port)["ringcast_queued_bytes"]
    assert queued > 0, "nothing stalled: the test proves nothing"
    started = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    sw.run_until(lambda: all(c.state == W.CLOSED for c in healthy), 10,
                 lambda: f"the healthy subscribers to be closed: {W.states(healthy)}")
    rc = srv.proc.wait(DRAIN_TIMEOUT + 10)
    took = time.monotonic() - started
    assert rc == 0, srv.stderr_tail()
    assert [c.close_code for c in healthy] == [1001] * len(healthy)
    assert all(c.received == 50 for c in healthy)
    assert took < DRAIN_TIMEOUT + 5, f"exit took {took:.1f}s with drain_timeout {DRAIN_TIMEOUT}"
    record("shutdown", backend, stalled=len(stalled), queued_bytes=queued,
           exit_s=round(took, 2), drain_timeout=DRAIN_TIMEOUT)
