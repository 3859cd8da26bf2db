"""The issue's end-to-end acceptance at scale: 1,000 subscribers, resets mid-broadcast."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.support.rawws import RawWebSocket

from .helpers import metrics, run, wait_until
from .server import ServerProcess

OPEN: dict[str, Any] = {
    "ping_interval": None,
    "open_timeout": 30,
    "close_timeout": 5,
    "max_size": None,
}


async def connect_many(url: str, n: int, chunk: int = 200) -> list[ClientConnection]:
    conns: list[ClientConnection] = []
    for start in range(0, n, chunk):
        conns += await asyncio.gather(
            *(connect(url, **OPEN) for _ in range(min(chunk, n - start))))
    return conns


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class TestThousandSubscribers:
    def test_three_publishers_exactly_once_in_order(self, server: ServerProcess) -> None:
        subscribers, per_publisher = 1000, 30

        async def main() -> None:
            url = f"{server.ws_url}/big"
            subs = await connect_many(url, subscribers)
            pubs = await connect_many(url, 3)
            try:
                async def publish(k: int) -> None:
                    for i in range(per_publisher):
                        await pubs[k].send(f"p{k}:{i}")

                async def receive(ws: ClientConnection) -> dict[str, list[int]]:
                    seqs: dict[str, list[int]] = {"p0": [], "p1": [], "p2": []}
                    for _ in range(3 * per_publisher):
                        msg = await ws.recv()
                        assert isinstance(msg, str)
                        name, _, i = msg.partition(":")
                        seqs[name].append(int(i))
                    return seqs

                readers = [asyncio.create_task(receive(s)) for s in subs]
                await asyncio.gather(*(publish(k) for k in range(3)))
                want = list(range(per_publisher))
                for seqs in await asyncio.gather(*readers):
                    assert seqs == {"p0": want, "p1": want, "p2": want}
                m = await asyncio.to_thread(metrics, server.port)
                assert m.value("ringcast_subscribers") == subscribers + 3
            finally:
                await asyncio.gather(*(c.close() for c in [*subs, *pubs]),
                                     return_exceptions=True)

        run(main(), timeout=120)


class TestResetsMidBroadcast:
    def test_200_resets_leak_nothing(self, server: ServerProcess) -> None:
        stable_n, resetters_n, total = 50, 200, 400
        body = b"." * 1000

        async def main() -> None:
            await wait_until(lambda: metrics(server.port).value("ringcast_connections") <= 1,
                             10, "an idle server")
            fds_before = fd_count(server.pid)
            url = f"{server.ws_url}/rst"
            stable = await connect_many(url, stable_n)
            pub = await connect(url, **OPEN)
            resetters = await asyncio.gather(*(
                asyncio.to_thread(RawWebSocket.connect, server.port, "/rst")
                for _ in range(resetters_n)))
            got = [0] * stable_n
            errors: list[str] = []

            async def read(i: int, ws: ClientConnection) -> None:
                for n in range(total):
                    msg = await ws.recv()
                    if msg[:8] != f"{n:08d}".encode() and len(errors) < 5:
                        errors.append(f"subscriber {i}: message {n} is {msg[:8]!r}")
                    got[i] += 1

            def received_past(k: int) -> Callable[[], bool]:
                return lambda: min(got) > k

            readers = [asyncio.create_task(read(i, s)) for i, s in enumerate(stable)]
            try:
                for n in range(total):
                    await pub.send(f"{n:08d}".encode() + body)
                    if n == total // 2:
                        for r in resetters:  # RST, with frames still on their way
                            r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                              struct.pack("ii", 1, 0))
                            r.close()
                    if n % 50 == 49:
                        await wait_until(received_past(n), 20, f"message {n} everywhere")
                await asyncio.wait_for(asyncio.gather(*readers), 30)
                assert not errors, errors
                # stable + publisher + the /metrics request itself
                await wait_until(
                    lambda: metrics(server.port).value("ringcast_connections") == stable_n + 2,
                    10, "the 200 reset connections to be gone")
                m = await asyncio.to_thread(metrics, server.port)
                assert m.value("ringcast_connections_closed_total", reason="peer_reset") >= 1
            finally:
                await asyncio.gather(*(c.close() for c in [*stable, pub]),
                                     return_exceptions=True)

            def drained() -> bool:
                m = metrics(server.port)
                # The /metrics request itself is the one connection left.
                return (m.value("ringcast_connections") <= 1
                        and m.value("ringcast_frame_slots") == 0
                        and m.value("ringcast_queued_bytes") == 0)

            await wait_until(drained, 10, "connections, frame slots and queues back to 0")
            m = await asyncio.to_thread(metrics, server.port)
            assert m.value("ringcast_subscribers") == 0
            assert m.value("ringcast_channels") == 0
            await wait_until(lambda: fd_count(server.pid) <= fds_before, 10,
                             f"the server's fds back to {fds_before}")

        run(main(), timeout=120)
