"""``server.path_prefix``: every route under the prefix too (docs/deploy.md), so a proxy can
forward ``/ws/...`` without rewriting it."""

from __future__ import annotations

from websockets.sync.client import connect

from .conftest import StartServer
from .helpers import TIMEOUT, http


def test_a_channel_publish_and_health_under_the_prefix(start_server: StartServer) -> None:
    server = start_server(SERVER_PATH_PREFIX="/ws")
    with connect(f"ws://127.0.0.1:{server.port}/ws/news", open_timeout=TIMEOUT) as prefixed, \
            connect(f"ws://127.0.0.1:{server.port}/news", open_timeout=TIMEOUT) as plain:
        answer = http(server.port, "POST", "/ws/publish/news", b"hello",
                      headers={"Content-Type": "text/plain"})
        assert answer.status == 200 and answer.json() == {"channel": "news", "subscribers": 2}
        assert prefixed.recv(timeout=TIMEOUT) == plain.recv(timeout=TIMEOUT) == "hello"
    assert http(server.port, "GET", "/ws/healthz").status == 200
