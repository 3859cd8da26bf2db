"""ringcast.client (the Python ringcast.v1 client) against a real server: it subscribes,
loses its connection, and comes back with every message published meanwhile exactly
once, in order; after a restart (a new epoch) it is told to resync."""

from __future__ import annotations

import asyncio

from ringcast.client import Client, Message, Refused, Resync

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
            await client.publish("news", "m1")
            assert [e.position for e in await take(client, 1)] == [
                before.__class__(before.epoch, 1)]
            first.stop()  # the connection goes with it; the client retries ...
            second = start_server(HISTORY_CHANNELS="news", port=first.port)
            (resync,) = await take(client, 1)  # ... until the new process answers
            assert isinstance(resync, Resync) and resync.position.epoch != before.epoch
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
