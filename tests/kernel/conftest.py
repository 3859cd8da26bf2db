"""Fixtures for ringio's kernel tests: real loops on a real ring (or epoll).

Every test that takes ``engine`` (directly or through ``make_loop`` /
``make_server``) runs once per engine. The io_uring run is skipped, with the
reason, when io_uring is unavailable here (seccomp, sysctl, old kernel...);
epoll always runs. A test can pin the engine with
``@pytest.mark.parametrize("engine", [Engine.IO_URING], indirect=True)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ringcast.ringio import Engine, Loop, LoopParams, Probe, RingUnavailable, probe

from .helpers import Peers, Server

# Loops here register a small arena: RLIMIT_MEMLOCK (often 8 MiB) is shared by
# every ring of this user, and a ring's pages are unaccounted only after its
# asynchronous teardown. Tests that need a bigger arena ask for it.
TEST_ARENA = 1 << 20


@pytest.fixture(scope="session")
def uring_probe() -> Probe | RingUnavailable:
    return probe(Engine.IO_URING)


@pytest.fixture(params=[Engine.IO_URING, Engine.EPOLL], ids=["io_uring", "epoll"])
def engine(request: pytest.FixtureRequest, uring_probe: Probe | RingUnavailable) -> Engine:
    eng = Engine(request.param)
    if eng is Engine.IO_URING and isinstance(uring_probe, RingUnavailable):
        pytest.skip(f"io_uring unavailable: {uring_probe}")
    return eng


@pytest.fixture
def make_loop(engine: Engine) -> Iterator[Callable[..., Loop]]:
    """``make_loop(**LoopParams fields)``: a loop of this test's engine, closed at teardown."""
    loops: list[Loop] = []

    def make(**params: Any) -> Loop:
        params = {"engine": engine, "arena_size": TEST_ARENA, **params}
        loop = Loop(LoopParams(**params))
        loops.append(loop)
        return loop

    yield make
    for loop in loops:
        loop.close()


@pytest.fixture
def peers() -> Iterator[Peers]:
    p = Peers()
    yield p
    p.close()


@pytest.fixture
def make_server(make_loop: Callable[..., Loop], peers: Peers) -> Callable[..., Server]:
    """``make_server(sndbuf=None, backlog=1024, **LoopParams fields)``: a loop listening on
    127.0.0.1; ``server.connect(n)`` gives accepted clients."""

    def make(sndbuf: int | None = None, backlog: int = 1024, **params: Any) -> Server:
        return Server(make_loop(**params), peers, backlog=backlog, sndbuf=sndbuf)

    return make
