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

from tests.support.teardown import has_failed, pytest_runtest_makereport, stop_all

from .procs import Node, RedisServer

# pytest finds hooks by name in this module; this one comes from tests.support.
__all__ = ["pytest_runtest_makereport"]

StartNode = Callable[..., Node]

# Keep-alive connections used to read one worker's /metrics stay idle for a while.
# close_timeout is long so that a stale flush deadline (the bug shown by the
# *_survives_close_timeout tests) cannot kill a link or Redis socket adopted after a
# restart in the middle of a test about something else; those tests set it short.
NODE_DEFAULTS = {"LIMITS_HANDSHAKE_TIMEOUT": 120, "LIMITS_CLOSE_TIMEOUT": 60,
                 "SHUTDOWN_DRAIN_TIMEOUT": 5}


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
        if has_failed(request):
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
    stop_all(started, request)
