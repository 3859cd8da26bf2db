"""Fault-test fixtures: `ringcast serve` as a real subprocess, once per backend.

``start_server(nofile=None, **env)`` starts the server with ``--backend`` set to the
test's backend and the keyword arguments as environment overrides without the
``RINGCAST_`` prefix (``LIMITS_HANDSHAKE_TIMEOUT=5``). Teardown sends SIGTERM and
asserts exit code 0 within a timeout; when that or the test failed, the server's
stderr is printed. The io_uring run is skipped, with the probe's reason, where the
kernel or a seccomp profile refuses a ring.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Iterator

import pytest

from tests.support.backends import backend, io_uring_skip_reason
from tests.support.teardown import pytest_runtest_makereport, stop_all

from .server import ServerProcess
from .wsload import Swarm

# pytest finds fixtures and hooks by name in this module; these come from tests.support.
__all__ = ["backend", "io_uring_skip_reason", "pytest_runtest_makereport"]

# On failure only the end of each log is printed: a soak logs for minutes.
LOG_CHARS = 20_000


def need_fds(n: int) -> None:
    """Make sure this process (and the server it starts afterwards, which inherits the
    limit) may open ``n`` files: raise the soft RLIMIT_NOFILE to the hard one, or skip
    when the hard limit is lower than ``n``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.skip(f"needs {n} open files, the hard RLIMIT_NOFILE is {hard} (ulimit -Hn)")
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (n if hard == resource.RLIM_INFINITY else hard, hard))


StartServer = Callable[..., ServerProcess]


@pytest.fixture
def start_server(backend: str, request: pytest.FixtureRequest) -> Iterator[StartServer]:
    started: list[ServerProcess] = []

    def start(*, nofile: int | None = None, **env: object) -> ServerProcess:
        proc = ServerProcess.spawn(env, backend=backend, nofile=nofile)
        proc.wait_listening()
        started.append(proc)
        assert proc.backend == backend, proc.stderr_text()
        return proc

    yield start
    stop_all(started, request, log_chars=LOG_CHARS)


MakeSwarm = Callable[..., Swarm]


@pytest.fixture
def swarm(start_server: StartServer) -> Iterator[MakeSwarm]:
    """``swarm(port, **options)`` makes a `Swarm`; teardown resets its connections (before
    the server is stopped, since this fixture depends on ``start_server``)."""
    made: list[Swarm] = []

    def make(port: int, **options: object) -> Swarm:
        sw = Swarm(port, **options)  # type: ignore[arg-type]
        made.append(sw)
        return sw

    yield make
    for sw in made:
        sw.close_all()
