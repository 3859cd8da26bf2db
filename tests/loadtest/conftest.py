"""Fixtures for the load client's tests.

``server`` is a real `ringcast serve` on each backend. The C frame scanner is built in
place when this checkout has not built it (until setup.py registers it, ``pip install -e .``
builds only ringio's extension).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from ringcast.ringio import Engine, RingUnavailable, probe

from .helpers import ringcast_server

if importlib.util.find_spec("ringcast.loadtest._wsscan") is None:  # pragma: no cover
    from ringcast.loadtest._build import build_in_place

    build_in_place()


@pytest.fixture(params=["io_uring", "epoll"], scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[tuple[int, int]]:
    """A real `ringcast serve` on each backend (io_uring skipped, with why, where the kernel
    refuses a ring): its port and pid."""
    if request.param == "io_uring":
        p = probe(Engine.IO_URING)
        if isinstance(p, RingUnavailable):
            pytest.skip(f"io_uring unavailable: {p.cause}")
    with ringcast_server(request.param) as (port, pid):
        yield port, pid
