"""The ``backend`` fixture: a test that takes it runs once on io_uring and once on epoll.

The io_uring run is skipped, with the probe's reason, where the kernel or a seccomp
profile refuses a ring. A conftest provides these fixtures by importing them (pytest
finds fixtures by name in the conftest's namespace).
"""

from __future__ import annotations

import pytest

from ringcast.ringio import RingUnavailable, probe

BACKENDS = ("io_uring", "epoll")


@pytest.fixture(scope="session")
def io_uring_skip_reason() -> str | None:
    """Why io_uring cannot be used here, or None when it can."""
    result = probe()
    if isinstance(result, RingUnavailable):
        return f"io_uring unavailable here: {result}"
    return None


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, io_uring_skip_reason: str | None) -> str:
    """The backend name for ``--backend``; the io_uring run skips when io_uring is refused."""
    name: str = request.param
    if name == "io_uring" and io_uring_skip_reason is not None:
        pytest.skip(io_uring_skip_reason)
    return name
