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

from ringcast.ringio import RingUnavailable, probe

from .server import ServerProcess
from .wsload import Swarm

BACKENDS = ("io_uring", "epoll")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Keep each phase's report on the item, so teardown knows whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def io_uring_skip_reason() -> str | None:
    result = probe()
    if isinstance(result, RingUnavailable):
        return f"io_uring unavailable here: {result}"
    return None


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, io_uring_skip_reason: str | None) -> str:
    name: str = request.param
    if name == "io_uring" and io_uring_skip_reason is not None:
        pytest.skip(io_uring_skip_reason)
    return name


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
        proc = ServerProcess.start(backend, {k: str(v) for k, v in env.items()}, nofile=nofile)
        started.append(proc)
        assert proc.backend == backend, proc.stderr_text()
        return proc

    yield start

    errors = []
    for proc in started:
        rc = proc.stop()
        if rc != 0:
            errors.append(f"server exited with {rc}, expected 0 after SIGTERM")
    failed = any(
        getattr(getattr(request.node, f"rep_{phase}", None), "failed", False)
        for phase in ("setup", "call")
    )
    if errors or failed:
        for proc in started:
            print(f"---- ringcast serve {proc.args} env {proc.env} stderr ----\n"
                  f"{proc.stderr_text()[-20000:]}")
    for proc in started:
        proc.cleanup()
    assert not errors, "; ".join(errors)


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
