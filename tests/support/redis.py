"""``redis`` and ``make_redis``: a real redis-server on a free port for a test.

A conftest enables them by importing them (pytest finds fixtures by name in the
conftest's namespace), as tests/cluster and tests/e2e do. The server's log is printed
when the test failed; teardown stops it and removes its files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.cluster.procs import RedisServer

from .teardown import has_failed

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
