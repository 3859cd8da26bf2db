"""Fixtures for the scale-out tests: `ringcast serve` nodes and a real `redis-server`.

``start_node(workers=2, CLUSTER_REDIS_URL=...)`` starts a node and returns once
every worker logged ``listening``; ``checks.linked`` then waits (through
``/healthz`` on connections that land on each worker) until the workers are
linked to each other and, with Redis, until each one's bridge is connected.
Teardown stops the node with SIGTERM and checks the exit code, and prints the
logs of every process when the test failed. ``redis``/``make_redis`` start
``redis-server --save "" --appendonly no`` on a free port.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from .procs import Node, RedisServer

StartNode = Callable[..., Node]

# Keep-alive connections used to read one worker's /metrics stay idle for a while.
# close_timeout is long so that a stale flush deadline (the bug shown by the
# *_survives_close_timeout tests) cannot kill a link or Redis socket adopted after a
# restart in the middle of a test about something else; those tests set it short.
NODE_DEFAULTS = {"LIMITS_HANDSHAKE_TIMEOUT": 120, "LIMITS_CLOSE_TIMEOUT": 60,
                 "SHUTDOWN_DRAIN_TIMEOUT": 5}


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(getattr(getattr(request.node, f"rep_{p}", None), "failed", False)
               for p in ("setup", "call"))


MakeRedis = Callable[..., RedisServer]


@pytest.fixture
def make_redis(request: pytest.FixtureRequest) -> Iterator[MakeRedis]:
    """``make_redis(*redis_server_args, auth=(...))``: a started redis-server on a free port."""
    started: list[RedisServer] = []

    def make(*extra: str, auth: tuple[str, ...] = ()) -> RedisServer:
        server = RedisServer(*extra, auth=auth)
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        if _failed(request):
            print(f"---- redis-server log ----\n{server.log_path.read_text(errors='replace')}")
        server.cleanup()


@pytest.fixture
def redis(make_redis: MakeRedis) -> RedisServer:
    """redis-server --save "" --appendonly no, on a free port."""
    return make_redis()


@pytest.fixture
def start_node(request: pytest.FixtureRequest) -> Iterator[StartNode]:
    started: list[Node] = []

    def start(workers: int = 1, **env: object) -> Node:
        node = Node.start(workers, **{**NODE_DEFAULTS, **env})
        started.append(node)
        return node

    yield start

    errors = []
    for node in started:
        rc = node.stop()
        if node.expect_exit is not None and rc != node.expect_exit:
            errors.append(f"node :{node.port} exited with {rc}, expected {node.expect_exit}")
    if errors or _failed(request):
        for node in started:
            print(f"---- {' '.join(node.args)} (workers={node.workers}) ----\n"
                  f"{node.stderr_text()}")
    for node in started:
        node.cleanup()
    assert not errors, "; ".join(errors)
