"""Subscribe and publish over WebSocket: fan-out, order, opcodes, echo, isolation."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.support.rawws import OP_TEXT, RawWebSocket, frame

from .conftest import StartServer
from .helpers import HOST, metrics, run
from .server import ServerProcess

OPEN: dict[str, Any] = {
    "ping_interval": None,
    "max_size": None,
    "open_timeout": 10,
    "close_timeout": 5,
}


@contextlib.asynccontextmanager
async def clients(url: str, n: int, **kwargs: object) -> AsyncIterator[list[ClientConnection]]:
    """``n`` websockets clients on ``url``, open together, closed together."""
    conns = await asyncio.gather(*(connect(url, **{**OPEN, **kwargs}) for _ in range(n)))
    try:
        yield list(conns)
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


async def recv_n(ws: ClientConnection, n: int, timeout: float = 20.0) -> list[str | bytes]:
    async with asyncio.timeout(timeout):
        return [await ws.recv() for _ in range(n)]


def messages(prefix: str, n: int) -> list[str | bytes]:
    """Alternate text and binary, so the opcode of each one is checked."""
    return [f"{prefix}-{i}" if i % 2 == 0 else f"{prefix}-{i}".encode() for i in range(n)]


class TestFanOut:
    def test_every_subscriber_gets_every_message_in_order(self, server: ServerProcess) -> None:
        sent = messages("m", 40)

        async def main() -> None:
            async with clients(f"{server.ws_url}/news", 50) as subs, \
                    clients(f"{server.ws_url}/news", 1) as (pub,):
                for m in sent:
                    await pub.send(m)
                got = await asyncio.gather(*(recv_n(s, len(sent)) for s in subs))
                for received in got:
                    assert received == sent  # same order, text stays str, binary bytes

        run(main())

    def test_publisher_does_not_get_its_own_message(self, server: ServerProcess) -> None:
        async def main() -> None:
            async with clients(f"{server.ws_url}/c", 2) as (pub, other), \
                    clients(f"{server.ws_url}/c", 1) as (sub,):
                for i in range(10):
                    await pub.send(f"own-{i}")
                assert await recv_n(sub, 10) == [f"own-{i}" for i in range(10)]
                # Everything pub sent has been fanned out; now one message from elsewhere.
                await other.send("sentinel")
                assert await recv_n(pub, 1) == ["sentinel"]
                assert await recv_n(sub, 1) == ["sentinel"]

        run(main())

    def test_echo_mode_returns_own_messages(self, start_server: StartServer) -> None:
        server = start_server(SERVER_ECHO="true")
        sent = messages("e", 10)

        async def main() -> None:
            async with clients(f"{server.ws_url}/echo", 2) as (pub, sub):
                for m in sent:
                    await pub.send(m)
                assert await recv_n(pub, len(sent)) == sent
                assert await recv_n(sub, len(sent)) == sent

        run(main())

    def test_channels_do_not_leak(self, server: ServerProcess) -> None:
        async def main() -> None:
            async with clients(f"{server.ws_url}/red", 5) as reds, \
                    clients(f"{server.ws_url}/blue", 5) as blues:
                red_pub, blue_pub = reds[0], blues[0]
                for i in range(20):
                    await red_pub.send(f"red-{i}")
                await blue_pub.send("blue-only")
                for s in reds[1:]:
                    assert await recv_n(s, 20) == [f"red-{i}" for i in range(20)]
                # Blue was published after all red traffic; a leak would arrive first.
                for s in blues[1:]:
                    assert await recv_n(s, 1) == ["blue-only"]
                await red_pub.send("red-last")
                await blue_pub.send("blue-last")
                for s in blues[1:]:
                    assert await recv_n(s, 1) == ["blue-last"]
                for s in reds[1:]:
                    assert await recv_n(s, 1) == ["red-last"]

        run(main())

    def test_no_history_for_late_subscribers(self, server: ServerProcess) -> None:
        async def main() -> None:
            async with clients(f"{server.ws_url}/late", 2) as (pub, early):
                for i in range(5):
                    await pub.send(f"before-{i}")
                assert await recv_n(early, 5) == [f"before-{i}" for i in range(5)]
                async with clients(f"{server.ws_url}/late", 1) as (late,):
                    await pub.send("after")
                    assert await recv_n(late, 1) == ["after"]
                    assert await recv_n(early, 1) == ["after"]

        run(main())


class TestOrdering:
    """Each publisher's messages reach every subscriber in that publisher's order."""

    def test_http_and_websocket_publishers_keep_their_order(self, server: ServerProcess) -> None:
        per_publisher = 200
        names = ["ws0", "ws1", "http"]

        def http_publisher() -> None:
            conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
            try:
                for i in range(per_publisher):
                    conn.request("POST", "/publish/order", body=f"http:{i}",
                                 headers={"Content-Type": "text/plain"})
                    resp = conn.getresponse()
                    body = resp.read()
                    assert resp.status == 200, body
            finally:
                conn.close()

        async def ws_publisher(ws: ClientConnection, name: str) -> None:
            for i in range(per_publisher):
                await ws.send(f"{name}:{i}")

        def check(received: list[str | bytes], publishers: list[str]) -> None:
            seqs: dict[str, list[int]] = {p: [] for p in publishers}
            for m in received:
                assert isinstance(m, str)
                name, _, i = m.partition(":")
                seqs[name].append(int(i))
            for p in publishers:
                assert seqs[p] == list(range(per_publisher)), p

        async def main() -> None:
            async with clients(f"{server.ws_url}/order", 10) as subs, \
                    clients(f"{server.ws_url}/order", 2) as pubs:
                total = per_publisher * len(names)
                readers = [asyncio.create_task(recv_n(s, total, 30)) for s in subs]
                pub_readers = [asyncio.create_task(recv_n(p, 2 * per_publisher, 30))
                               for p in pubs]
                await asyncio.gather(
                    ws_publisher(pubs[0], "ws0"), ws_publisher(pubs[1], "ws1"),
                    asyncio.to_thread(http_publisher),
                )
                for got in await asyncio.gather(*readers):
                    check(got, names)
                got0, got1 = await asyncio.gather(*pub_readers)
                check(got0, ["ws1", "http"])
                check(got1, ["ws0", "http"])

        run(main())


class TestBatching:
    """Messages that arrive in one read are published in one run."""

    def test_burst_of_eight_arrives_in_order(self, server: ServerProcess) -> None:
        n_subs = 20
        burst = [f"burst-{i}" for i in range(8)]

        async def main() -> dict[str, float]:
            async with clients(f"{server.ws_url}/burst", n_subs) as subs:
                pub = await asyncio.to_thread(RawWebSocket.connect, server.port, "/burst")
                try:
                    before = await asyncio.to_thread(metrics, server.port)
                    # All eight frames in one write: one recv on the server, one iteration.
                    pub.send(b"".join(frame(OP_TEXT, m.encode()) for m in burst))
                    for got in await asyncio.gather(*(recv_n(s, 8) for s in subs)):
                        assert got == burst
                    after = await asyncio.to_thread(metrics, server.port)
                finally:
                    pub.close()
            names = ("ringcast_deliveries_total", "ringcast_send_operations_total",
                     "ringcast_coalesced_sends_total", "ringcast_messages_fanned_out_total")
            return {n: after.value(n) - before.value(n) for n in names}

        delta = run(main())
        print("batching deltas:", json.dumps(delta))
        assert delta["ringcast_messages_fanned_out_total"] == 8
        # One send per subscriber for the whole burst (+1 for the /metrics answer),
        # not one per message: 8 * n_subs would mean no batching at all.
        assert delta["ringcast_send_operations_total"] <= n_subs + 1, delta
