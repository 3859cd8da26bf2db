"""ringcast.client (the Python ringcast.v1 client) against a real server: it subscribes,
loses its connection, and comes back with every message published meanwhile exactly
once, in order; after a restart (a new epoch) it is told to resync. Against a scripted
server too (websockets on loopback), for what a real one does only when a worker dies:
a new epoch begun mid-connection."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.typing import Subprotocol

from ringcast.client import Client, Message, Position, Refused, Resync

from .conftest import StartServer
from .helpers import TIMEOUT, publish, run


async def take(client: Client, count: int) -> list[Message | Resync]:
    events: list[Message | Resync] = []
    async with asyncio.timeout(TIMEOUT):
        async for event in client:
            events.append(event)
            if len(events) == count:
                break
    return events


def test_a_dropped_client_resumes_with_every_message_once_in_order(
        start_server: StartServer) -> None:
    server = start_server(HISTORY_CHANNELS="news")

    async def scenario() -> list[str]:
        async with Client(f"ws://127.0.0.1:{server.port}/", min_delay=0.05) as client:
            await client.subscribe("news")
            first = await client.publish("news", "m1")
            assert first is not None and first.offset == 1
            got = await take(client, 1)
            await client.drop()
            for n in range(2, 12):  # published while it is away
                assert publish(server.port, "news", f"m{n}", "text/plain").status == 200
            got += await take(client, 10)
            await client.publish("news", b"\x00m12")
            got += await take(client, 1)
        assert all(isinstance(event, Message) for event in got)
        return [event.data if isinstance(event.data, str) else repr(event.data)
                for event in got if isinstance(event, Message)]

    assert run(scenario()) == [f"m{n}" for n in range(1, 12)] + [repr(b"\x00m12")]


def test_a_restart_is_a_resync(start_server: StartServer) -> None:
    first = start_server(HISTORY_CHANNELS="news")

    async def scenario() -> None:
        async with Client(f"ws://127.0.0.1:{first.port}/", min_delay=0.05) as client:
            before = await client.subscribe("news")
            assert before is not None
            assert before.epoch == "" and before.offset == 0  # no history yet
            await client.publish("news", "m1")
            (m1,) = await take(client, 1)
            assert m1.position is not None and m1.position.offset == 1
            assert m1.position.epoch != ""
            first.stop()  # the connection goes with it; the client retries ...
            second = start_server(HISTORY_CHANNELS="news", port=first.port)
            (resync,) = await take(client, 1)  # ... until the new process answers
            assert isinstance(resync, Resync) and resync.position.epoch != m1.position.epoch
            publish(second.port, "news", "after", "text/plain")
            (after,) = await take(client, 1)
            assert isinstance(after, Message) and after.data == "after"

    run(scenario())


def test_a_refused_client_is_told_why_and_does_not_retry(start_server: StartServer) -> None:
    server = start_server(AUTH_SUBSCRIBE_TOKENS="s" * 20, AUTH_REQUIRE_SUBSCRIBE_AUTH="true")

    async def scenario() -> None:
        async with Client(f"ws://127.0.0.1:{server.port}/") as client:
            try:
                await take(client, 1)
            except Refused as refused:
                assert (refused.code, refused.reason) == (1008, "subscribing needs a token")
            else:
                raise AssertionError("no refusal")

    run(scenario())


def test_a_new_epoch_named_mid_connection_is_a_resync_and_epoch_less_messages_are_not() -> None:
    """Messages name their epoch at offset 1 only. The client gives the others the epoch
    of the subscribed reply or of the last message that named one, as it reads them (all
    frames here arrive before the first event is taken); a message naming another epoch
    (history restarted while connected: its owner worker did) yields a Resync first,
    unless the channel was at offset 0 (nothing handled: nothing missed)."""
    received: list[dict[str, Any]] = []

    def message(channel: str, offset: int, data: str, epoch: str | None = None) -> str:
        frame: dict[str, Any] = {"channel": channel}
        if epoch is not None:
            frame["epoch"] = epoch
        return json.dumps({**frame, "offset": offset, "data": data})

    async def script(ws: ServerConnection) -> None:
        # news: subscribed at (E, 1); fresh: at ("", 0), before anything was published.
        for epoch, offset in (("E", 1), ("", 0)):
            command = json.loads(await ws.recv())
            received.append(command)
            await ws.send(json.dumps({"type": "subscribed", "id": command["id"],
                                      "channel": command["channel"], "epoch": epoch,
                                      "offset": offset}))
        for frame in (message("news", 2, "e2"), message("news", 3, "e3"),
                      message("fresh", 1, "x1", "X"), message("news", 1, "f1", "F"),
                      message("news", 2, "f2"), message("fresh", 2, "x2"),
                      message("news", 3, "f3")):
            await ws.send(frame)
        await ws.wait_closed()

    async def scenario() -> None:
        async with serve(script, "127.0.0.1", 0,
                         subprotocols=[Subprotocol("ringcast.v1")]) as server:
            port = server.sockets[0].getsockname()[1]
            async with Client(f"ws://127.0.0.1:{port}/") as client:
                assert await client.subscribe("news") == Position("E", 1)
                assert await client.subscribe("fresh") == Position("", 0)
                events = await take(client, 8)
                assert client.position("news") == Position("F", 3)
                assert client.position("fresh") == Position("X", 2)
        assert received == [{"type": "subscribe", "channel": "news", "id": 1},
                            {"type": "subscribe", "channel": "fresh", "id": 2}]
        assert events == [
            Message("news", "e2", Position("E", 2)),
            Message("news", "e3", Position("E", 3)),
            Message("fresh", "x1", Position("X", 1)),  # from offset 0: no resync
            Resync("news", Position("F", 0)),  # F began after offset 0: f1 follows
            Message("news", "f1", Position("F", 1)),
            Message("news", "f2", Position("F", 2)),
            Message("fresh", "x2", Position("X", 2)),
            Message("news", "f3", Position("F", 3)),
        ]

    run(scenario())
