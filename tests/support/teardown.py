"""What a server fixture does after its test: stop what it started, show the logs on failure.

A conftest enables `pytest_runtest_makereport` by importing it (pytest finds hooks by
name in the conftest's namespace); `has_failed` depends on it.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

import pytest

from .serverproc import ServerProcess


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport,
                                                               pytest.TestReport]:
    """Keep each phase's report on the item, so teardown knows whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def has_failed(request: pytest.FixtureRequest) -> bool:
    """Whether the test of ``request`` failed in setup or call (asked at teardown)."""
    return any(getattr(getattr(request.node, f"rep_{phase}", None), "failed", False)
               for phase in ("setup", "call"))


def stop_all(started: Sequence[ServerProcess], request: pytest.FixtureRequest, *,
             log_chars: int | None = None) -> None:
    """SIGTERM every server and expect exit code 0 from each.

    When one exits otherwise, or the test failed, every server's command, overrides and
    log (its last ``log_chars`` characters, if given) are printed. The logs are removed;
    then AssertionError names each server that did not exit 0.
    """
    errors = []
    for server in started:
        rc = server.stop()
        if rc != 0:
            errors.append(f"server :{server.port} exited with {rc}, expected 0 after SIGTERM")
    if errors or has_failed(request):
        for server in started:
            log = server.stderr_text()
            print(f"---- {' '.join(server.args)} env {server.env} stderr ----\n"
                  f"{log if log_chars is None else log[-log_chars:]}")
    for server in started:
        server.cleanup()
    assert not errors, "; ".join(errors)
