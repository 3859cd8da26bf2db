"""One server per port: a second `ringcast serve` on a busy port exits 1 saying why, while the
workers of one supervisor share their port, and a stopped server's port is free at once.

Every listener has SO_REUSEPORT (so that workers share the port), which would also let a second
server of the same user join the first one's port and take part of its clients and publishes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .checks import linked, run
from .conftest import StartNode
from .procs import Node
from .wsclient import closing_request, open_conn, wait_until

EXIT_FAILURE = 1
TIME_WAIT = "06"   # the state column of /proc/net/tcp


def refused(port: int, workers: int) -> str:
    """Start a server on ``port``, expect exit 1; its log."""
    second = Node.spawn({"SERVER_WORKERS": workers}, port=port)
    try:
        code = second.wait()
        log = second.stderr_text()
    finally:
        second.cleanup()
    assert code == EXIT_FAILURE, f"exit code {code}, expected 1:\n{log}"
    return log


def assert_says_port_busy(log: str, port: int) -> None:
    assert (f"cannot listen on 127.0.0.1:{port}: another process already listens on port "
            f"{port}") in log, log
    assert "--port, server.port or RINGCAST_SERVER_PORT" in log, log   # what to do
    assert "listening on" not in log, log


async def publishes_reach(port: int, channel: str, times: int, *, counted: bool) -> None:
    """Each of ``times`` POST /publish reaches the one subscriber (under split brain some reach
    nobody). ``counted``: each answer counts it too (with workers, an answer counts the
    subscribers of the worker that answered only)."""
    sub = await open_conn(port)
    await sub.upgrade(channel)
    for i in range(times):
        pub = await open_conn(port)
        answer = await pub.publish_http(channel, f"m{i}")
        pub.close()
        assert answer.status == 200, answer
        if counted:
            assert '"subscribers":1' in answer.text, answer
    await wait_until(lambda: len(sub.messages) == times, 5, f"{times} messages at the subscriber")
    assert sub.texts() == [f"m{i}" for i in range(times)]
    sub.close()


@pytest.mark.parametrize("workers", [1, 2], ids=["single", "supervisor"])
def test_a_server_refuses_the_port_of_a_running_one(start_node: StartNode, workers: int) -> None:
    first = start_node()
    log = refused(first.port, workers)
    assert_says_port_busy(log, first.port)
    run(publishes_reach(first.port, "busy", 6, counted=True))


def test_a_single_server_refuses_the_port_of_a_supervisor(start_node: StartNode) -> None:
    node = start_node(workers=2)     # its two workers share the port
    log = refused(node.port, 1)
    assert_says_port_busy(log, node.port)

    async def still_whole() -> None:
        await linked(node)
        await publishes_reach(node.port, "busy", 6, counted=False)

    run(still_whole())


def _time_wait_on(port: int) -> int:
    """Sockets in TIME_WAIT whose local port is ``port``."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == TIME_WAIT:
                count += 1
    return count


@pytest.mark.parametrize(("before", "after"), [(1, 1), (1, 2), (2, 1)],
                         ids=["single-single", "single-supervisor", "supervisor-single"])
def test_the_port_of_a_stopped_server_is_free_at_once(start_node: StartNode, before: int,
                                                      after: int) -> None:
    # single-supervisor: the supervisor's own hold on the port once failed on the single
    # server's TIME_WAIT sockets (they lack SO_REUSEPORT), so `systemctl restart` with
    # `workers` raised exited 1 saying the port was busy.
    first = start_node(workers=before)
    port = first.port

    async def served() -> None:
        for _ in range(3):   # the server closes each: its side waits in TIME_WAIT
            await closing_request(port)

    run(served())
    assert first.stop() == 0
    assert _time_wait_on(port) > 0, "no TIME_WAIT left on the port: the test shows nothing"
    second = start_node(port=port, workers=after)
    assert second.port == port
