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

from tests.support.redis import MakeRedis, make_redis, redis
from tests.support.teardown import pytest_runtest_makereport, stop_all

from .procs import Node

# pytest finds fixtures and hooks by name in this module; these come from tests.support.
__all__ = ["MakeRedis", "make_redis", "pytest_runtest_makereport", "redis"]

StartNode = Callable[..., Node]

# Keep-alive connections used to read one worker's /metrics stay idle for a while.
# close_timeout is long so that a stale flush deadline (the bug shown by the
# *_survives_close_timeout tests) cannot kill a link or Redis socket adopted after a
# restart in the middle of a test about something else; those tests set it short.
NODE_DEFAULTS = {"LIMITS_HANDSHAKE_TIMEOUT": 120, "LIMITS_CLOSE_TIMEOUT": 60,
                 "SHUTDOWN_DRAIN_TIMEOUT": 5}


@pytest.fixture
def start_node(request: pytest.FixtureRequest) -> Iterator[StartNode]:
    started: list[Node] = []

    def start(workers: int = 1, **env: object) -> Node:
        node = Node.start(workers, **{**NODE_DEFAULTS, **env})
        started.append(node)
        return node

    yield start
    stop_all(started, request)
