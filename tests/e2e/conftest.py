"""End-to-end fixtures: `ringcast serve` as a real subprocess, on each backend.

Every test of this package takes the ``backend`` fixture (directly or through
``start_server``/``server``), so the whole suite runs once on io_uring and once
on epoll. The io_uring run is skipped, with the probe's reason, where the
kernel or a seccomp profile refuses a ring.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.backends import backend, io_uring_skip_reason
from tests.support.redis import make_redis, redis
from tests.support.teardown import pytest_runtest_makereport, stop_all

from .server import ServerProcess

# pytest finds fixtures and hooks by name in this module; these come from tests.support.
__all__ = ["backend", "io_uring_skip_reason", "make_redis", "pytest_runtest_makereport",
           "redis"]

StartServer = Callable[..., ServerProcess]


@pytest.fixture
def start_server(backend: str, request: pytest.FixtureRequest) -> Iterator[StartServer]:
    """``start_server(**env)`` starts `ringcast serve --backend <backend>` and waits for it.

    Keyword arguments are environment overrides without the ``RINGCAST_`` prefix
    (``LIMITS_PING_INTERVAL=0.5``); ``backend_arg=None`` leaves ``--backend`` out;
    ``port``: ``--port`` (0, the default: a free one; another: a restart on that port).
    Teardown sends SIGTERM and checks the exit code is 0; the server's stderr is
    printed when that or the test failed.
    """
    started: list[ServerProcess] = []

    def start(*, backend_arg: str | None = backend, port: int = 0,
              **env: object) -> ServerProcess:
        proc = ServerProcess.spawn(env, backend=backend_arg, port=port)
        proc.wait_listening()
        started.append(proc)
        return proc

    yield start
    stop_all(started, request)


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    """A server with the built-in defaults (plus the test's backend)."""
    return start_server()
