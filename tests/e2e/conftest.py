"""End-to-end fixtures: `ringcast serve` as a real subprocess, on each backend.

Every test of this package takes the ``backend`` fixture (directly or through
``start_server``/``server``), so the whole suite runs once on io_uring and once
on epoll. The io_uring run is skipped, with the probe's reason, where the
kernel or a seccomp profile refuses a ring.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from ringcast.ringio import RingUnavailable, probe

from .server import ServerProcess

BACKENDS = ("io_uring", "epoll")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Keep each phase's report on the item, so teardown knows whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _io_uring_unavailable() -> str | None:
    result = probe()
    if isinstance(result, RingUnavailable):
        return f"io_uring unavailable here: {result}"
    return None


@pytest.fixture(scope="session")
def io_uring_skip_reason() -> str | None:
    return _io_uring_unavailable()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, io_uring_skip_reason: str | None) -> str:
    name: str = request.param
    if name == "io_uring" and io_uring_skip_reason is not None:
        pytest.skip(io_uring_skip_reason)
    return name


StartServer = Callable[..., ServerProcess]


@pytest.fixture
def start_server(backend: str, request: pytest.FixtureRequest) -> Iterator[StartServer]:
    """``start_server(**env)`` starts `ringcast serve --backend <backend>` and waits for it.

    Keyword arguments are environment overrides without the ``RINGCAST_`` prefix
    (``LIMITS_PING_INTERVAL=0.5``). Teardown sends SIGTERM and checks the exit
    code is 0; the server's stderr is printed when that or the test failed.
    """
    started: list[ServerProcess] = []

    def start(*, backend_arg: str | None = backend, **env: object) -> ServerProcess:
        proc = ServerProcess.start(backend_arg, {k: str(v) for k, v in env.items()})
        started.append(proc)
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
            print(f"---- ringcast serve {proc.args} stderr ----\n{proc.stderr_text()}")
    for proc in started:
        proc.cleanup()
    assert not errors, "; ".join(errors)


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    """A server with the built-in defaults (plus the test's backend)."""
    return start_server()
