"""POST /publish, the batch form, against a real server: many messages on several channels
in one request reach their subscribers in order, and a refused batch publishes nothing."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from websockets.asyncio.client import connect

from .helpers import http, run
from .server import ServerProcess

OPEN: dict[str, Any] = {"ping_interval": None, "open_timeout": 10, "close_timeout": 5}


def post_batch(port: int, messages: list[dict[str, str]]) -> Any:
    body = json.dumps({"messages": messages}).encode()
    return http(port, "POST", "/publish", body, headers={"Content-Type": "application/json"})


def test_a_batch_reaches_each_channel_in_order(server: ServerProcess) -> None:
    async def main() -> None:
        async with connect(f"{server.ws_url}/news", **OPEN) as news, \
                connect(f"{server.ws_url}/prices", **OPEN) as prices:
            batch = [{"channel": "news", "text": f"n{i}"} for i in range(500)]
            batch.insert(250, {"channel": "prices",
                               "binary": base64.b64encode(b"\x00\x01").decode()})
            batch.append({"channel": "nobody", "text": "x"})
            r = await asyncio.to_thread(post_batch, server.port, batch)
            assert r.status == 200, r
            results = r.json()["results"]
            assert len(results) == 502
            assert results[0] == {"channel": "news", "subscribers": 1}
            assert results[250] == {"channel": "prices", "subscribers": 1}
            assert results[-1] == {"channel": "nobody", "subscribers": 0}
            async with asyncio.timeout(10):
                assert [await news.recv() for _ in range(500)] == [f"n{i}" for i in range(500)]
                assert await prices.recv() == b"\x00\x01"

    run(main())


def test_a_refused_batch_publishes_nothing(server: ServerProcess) -> None:
    async def main() -> None:
        async with connect(f"{server.ws_url}/news", **OPEN) as news:
            r = await asyncio.to_thread(post_batch, server.port, [
                {"channel": "news", "text": "must not arrive"},
                {"channel": "bad name", "text": "x"},
            ])
            assert r.status == 400
            assert r.body.decode().startswith("messages[1].channel: ")
            ok = await asyncio.to_thread(post_batch, server.port,
                                         [{"channel": "news", "text": "first"}])
            assert ok.status == 200
            async with asyncio.timeout(10):
                assert await news.recv() == "first"

    run(main())
