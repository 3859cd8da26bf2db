"""Running out of file descriptors, and the connection limit.

- The server runs with RLIMIT_NOFILE 256 (soft and hard, set in the child before exec)
  and subscribers connect until it cannot accept: it must log what happened and what to
  do, count the failure in ``ringcast_accept_errors_total``, keep serving the connections
  it has, and once clients leave, accept the connections that waited in the backlog,
  answer ``/healthz`` and accept new ones.
- ``limits.max_connections`` small: connections past it are refused (closed without an
  answer) and counted in ``ringcast_refusals_total{reason="too_many_connections"}``;
  accepting goes on once
  clients leave.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.support.rawws import handshake_request

from . import wsload as W
from .conftest import MakeSwarm, StartServer
from .report import record
from .server import ServerProcess

pytestmark = pytest.mark.timeout(120)

NOFILE = 256
EXTRA = 40          # connections beyond what the fd limit lets the server accept
MAX_CONNECTIONS = 50
CONFIGURED = 10_000  # a limits.max_connections the fd limit cannot hold: accepts run out


def test_out_of_fds_refuses_cleanly_and_recovers(
        start_server: StartServer, swarm: MakeSwarm, backend: str) -> None:
    srv = start_server(nofile=NOFILE, LIMITS_MAX_CONNECTIONS=CONFIGURED)
    # Told at start-up, before any client: the hard limit keeps it below what the
    # configured limits.max_connections needs.
    assert f"the open-files limit is {NOFILE}, below what limits.max_connections" in \
        srv.stderr_text(), \
        srv.stderr_tail(5)
    sw = swarm(srv.port, window=NOFILE + EXTRA)
    # One handshake first: what the server opens once, for its first client, is open before
    # `base` is counted (test_first_handshakes_succeed_when_out_of_fds covers a first
    # handshake with no fd to spare).
    _warm_up(srv, sw)
    base = srv.fd_count()
    room = NOFILE - base
    subs = sw.connect(room + EXTRA, W.SUB, "live")

    def full() -> bool:
        return (sum(c.state == W.OPEN for c in subs) == room
                and sum(c.state == W.HANDSHAKE for c in subs) == EXTRA
                and "accept failed" in srv.stderr_text())

    sw.run_until(full, 20, lambda: f"the server to fill its {NOFILE} fds: {W.states(subs)}, "
                 f"{srv.fd_count()} fds, log:\n{srv.stderr_tail(5)}")
    srv.assert_alive()
    assert srv.fd_count() == NOFILE
    log = srv.stderr_text()
    line = next(x for x in log.splitlines() if "accept failed" in x)
    assert "EMFILE" in line and "Too many open files" in line, line
    assert "raise the open-files limit" in line, line
    opened = [c for c in subs if c.state == W.OPEN]
    waiting = [c for c in subs if c.state == W.HANDSHAKE]
    # Clients leave: the server must accept what waited in the backlog, and have room left.
    for c in opened[:EXTRA + 10]:
        c.ws_close(1000)
    sw.run_until(lambda: all(c.state == W.OPEN for c in waiting), 20,
                 lambda: f"the {EXTRA} connections that waited in the backlog to be accepted "
                 f"and answered: {W.states(waiting)}")
    status, body = W.http_get(srv.port, "/healthz")
    assert status == 200 and body.startswith(b"ok"), (status, body)
    alive = [c for c in subs if c.state == W.OPEN]
    assert len(alive) == room - 10
    status, _ = W.http_post(srv.port, "/publish/live", W.stamp(0))
    assert status == 200
    sw.run_until(lambda: all(c.received == 1 for c in alive), 10, "a publish to reach everyone")
    more = sw.connect(5, W.SUB, "live")
    sw.run_until(W.all_open(more), 10, "new connections after fds freed up")
    W.assert_opened(more, "new subscribers")
    m = W.metrics(srv.port)
    assert m["ringcast_accept_errors_total"] > 0
    assert m["ringcast_connections"] == len(alive) + len(more) + 1
    srv.assert_alive()
    assert not sw.errors, sw.errors
    record("fd_exhaustion", backend, nofile=NOFILE, fds_at_start=base, accepted_when_full=room,
           waited_in_backlog=EXTRA, accept_errors=m["ringcast_accept_errors_total"],
           accept_failed_log_lines=len(re.findall("accept failed", srv.stderr_text())),
           log_line=line.split(" ", 3)[-1])


def _warm_up(srv: ServerProcess, sw: W.Swarm) -> None:
    assert f"Max open files            {NOFILE}" in Path(f"/proc/{srv.pid}/limits").read_text()
    base = srv.fd_count()
    first = sw.connect(1, W.SUB, "warm-up")
    sw.run_until(W.all_open(first), 10, "a first handshake")
    W.assert_opened(first, "the first subscriber")
    first[0].ws_close(1000)
    sw.run_until(lambda: first[0].state == W.CLOSED, 10, "the first subscriber to leave")
    W.poll_until(lambda: srv.fd_count() == base, 10, "its fd to be closed")


def test_first_handshakes_succeed_when_out_of_fds(
        start_server: StartServer, swarm: MakeSwarm) -> None:
    srv = start_server(nofile=NOFILE, LIMITS_MAX_CONNECTIONS=CONFIGURED)
    base = srv.fd_count()
    room = NOFILE - base
    sw = swarm(srv.port, window=room)
    # Connect first (the server accepts until it has no fd left), then all handshake at once.
    conns = sw.connect(room, W.RAW, "-")
    W.poll_until(lambda: srv.fd_count() == NOFILE, 10, f"the server to hold {NOFILE} fds")
    sw.run_until(lambda: all(c.state == W.HANDSHAKE for c in conns), 10, "connects")
    for c in conns:
        c.send(handshake_request("/live"))
    sw.run_until(lambda: all(c.http_status is not None or c.state == W.CLOSED for c in conns),
                 15, lambda: f"an answer to every handshake: {W.states(conns)}")
    statuses = [c.http_status for c in conns]
    assert statuses.count(101) == len(conns), (
        f"{statuses.count(500)} of {len(conns)} handshakes answered 500, "
        f"{statuses.count(None)} closed without an answer")


def test_out_of_fds_does_not_flood_the_log(
        start_server: StartServer, swarm: MakeSwarm) -> None:
    srv = start_server(nofile=NOFILE, LIMITS_MAX_CONNECTIONS=CONFIGURED)
    sw = swarm(srv.port, window=NOFILE)
    _warm_up(srv, sw)
    subs = sw.connect(NOFILE - srv.fd_count() + 1, W.SUB, "live")
    sw.run_until(lambda: "accept failed" in srv.stderr_text(), 10, "an accept failure")
    started = time.monotonic()
    sw.run_for(3.0)     # out of fds for 3 s
    lines = srv.stderr_text().count("accept failed")
    assert lines <= 3, f"{lines} 'accept failed' lines in {time.monotonic() - started:.1f}s"
    srv.assert_alive()
    # Still serving the connections it has; the one past the limit waits in the backlog.
    assert W.states(subs) == {W.OPEN: len(subs) - 1, W.HANDSHAKE: 1}


def _fill_to_the_limit(srv_port: int, sw: W.Swarm, n: int) -> tuple[list[W.Conn], list[W.Conn]]:
    subs = sw.connect(n, W.SUB, "live")
    sw.run_until(W.all_open(subs), 20, lambda: f"every connection answered or refused: "
                 f"{W.states(subs)}")
    opened = [c for c in subs if c.state == W.OPEN]
    refused = [c for c in subs if c.state == W.CLOSED]
    return opened, refused


def test_max_connections_refuses_counts_and_recovers(
        start_server: StartServer, swarm: MakeSwarm, backend: str) -> None:
    srv = start_server(LIMITS_MAX_CONNECTIONS=MAX_CONNECTIONS)
    sw = swarm(srv.port, window=200)
    opened, refused = _fill_to_the_limit(srv.port, sw, 2 * MAX_CONNECTIONS)
    assert MAX_CONNECTIONS <= len(opened) < 2 * MAX_CONNECTIONS, len(opened)
    # Past the limit a client gets a 503; once the id table is full too (the 503s
    # linger for a moment), the kernel-side refusal closes without an answer.
    assert all(c.http_status in (503, None) for c in refused), "refused with another answer"
    srv.assert_alive()
    for c in opened[:10]:
        c.ws_close(1000)
    sw.run_until(lambda: all(c.state == W.CLOSED for c in opened[:10]), 10, "10 clients to leave")
    m = W.metrics(srv.port)
    assert m.value("ringcast_refusals_total", reason="too_many_connections") == len(refused)
    assert m["ringcast_connections"] == len(opened) - 10 + 1
    more = sw.connect(5, W.SUB, "live")
    sw.run_until(W.all_open(more), 10, "new connections after clients left")
    W.assert_opened(more, "new subscribers")
    assert not sw.errors, sw.errors
    record("max_connections", backend, max_connections=MAX_CONNECTIONS,
           tried=2 * MAX_CONNECTIONS, accepted=len(opened), refused=len(refused),
           refused_metric=m.value("ringcast_refusals_total", reason="too_many_connections"))


def test_max_connections_is_exact(start_server: StartServer, swarm: MakeSwarm) -> None:
    srv = start_server(LIMITS_MAX_CONNECTIONS=MAX_CONNECTIONS)
    sw = swarm(srv.port, window=200)
    opened, _ = _fill_to_the_limit(srv.port, sw, 2 * MAX_CONNECTIONS)
    assert len(opened) == MAX_CONNECTIONS


def test_auto_takes_what_the_fd_limit_holds_and_answers_the_rest(
        start_server: StartServer, swarm: MakeSwarm) -> None:
    # The default, limits.max_connections = "auto", sizes itself to the open files it may
    # hold: past that, clients get a 503 (or, with many refusals on their way, a reset),
    # never a stalled accept; and the start-up line says what bounds it.
    srv = start_server(nofile=NOFILE)
    found = re.search(r"taking up to (\d+) connections, bound by the open-files limit "
                      rf"\({NOFILE}\)", srv.stderr_text())
    assert found is not None, srv.stderr_tail(5)
    capacity = int(found.group(1))
    assert 0 < capacity < NOFILE
    sw = swarm(srv.port, window=NOFILE)
    opened, refused = _fill_to_the_limit(srv.port, sw, capacity + EXTRA)
    assert len(opened) == capacity
    assert refused and all(c.http_status in (503, None) for c in refused)
    assert "accept failed" not in srv.stderr_text()
    srv.assert_alive()
