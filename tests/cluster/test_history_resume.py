"""History across workers and across nodes (docs/history.md, "With several workers",
"Across nodes: history in Redis"): clients resume on any worker or node while publishing
goes on at over 1,000 messages/s, and lose and repeat nothing.

With workers, a history channel's owner worker decides its order. Across nodes, through
a real redis-server, Redis decides each history channel's order and positions (one Lua
script per publish: the next offset, XADD to the channel's stream, PUBLISH with the
position), so messages published on any node reach every node's subscribers in one
order with the same positions, and a ``ringcast.v1`` client resumes on any node from its
last position: what it missed, from the stream, then the live messages, with no gap and
no duplicate at the seam. Without Redis, history publishes are refused (503,
``unavailable``), never taken and lost; when Redis comes back without its data, the next
message starts a new epoch and clients resuming from an older one are told to resync.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from ringcast.client import Client, Message, Position, Resync

from .checks import linked, run
from .conftest import StartNode
from .procs import Node, RedisServer
from .wsclient import Conn, metric, open_conn, open_on_workers, wait_until

V1 = "ringcast.v1"
CHANNEL = "news"
RATE = 600          # messages/s published on each of the two nodes: 1,200/s in all
SECONDS = 3.0


@dataclass
class Reader:
    """A ringcast.v1 client's view of CHANNEL: every message as (epoch, offset, data)."""

    got: list[tuple[str, int, str]] = field(default_factory=list)
    epoch: str = ""
    replies: list[dict[str, Any]] = field(default_factory=list)

    def take(self, text: str | bytes) -> None:
        frame = json.loads(text)
        kind = frame.get("type", "message")
        if kind == "message":
            # A message names its epoch when it starts one (offset 1); else it is the
            # epoch of the reply or of the message before.
            self.epoch = frame.get("epoch", self.epoch)
            self.got.append((self.epoch, frame["offset"], frame["data"]))
        elif kind == "subscribed":
            self.epoch = frame["epoch"]
            self.replies.append(frame)
        else:
            raise AssertionError(f"unexpected frame {frame}")

    @property
    def position(self) -> dict[str, Any]:
        epoch, offset, _ = self.got[-1] if self.got else (self.epoch, 0, "")
        return {"epoch": epoch, "offset": offset}


async def subscribe(port: int, reader: Reader, since: dict[str, Any] | None = None
                    ) -> ClientConnection:
    ws = await connect(f"ws://127.0.0.1:{port}/", subprotocols=[V1])  # type: ignore[list-item]
    command: dict[str, Any] = {"type": "subscribe", "id": 1, "channel": CHANNEL}
    if since is not None:
        command["since"] = since
    await ws.send(json.dumps(command))
    reader.take(await ws.recv())
    return ws


async def read_until(ws: ClientConnection, reader: Reader, enough: asyncio.Future[int]
                     ) -> None:
    """Read until the reader holds ``enough`` messages (known once publishing ended)."""
    while not (enough.done() and len(reader.got) >= enough.result()):
        received = asyncio.ensure_future(ws.recv())  # cancelling recv() is safe
        done, _ = await asyncio.wait({received, enough}, timeout=20,
                                     return_when=asyncio.FIRST_COMPLETED)
        if received in done:
            reader.take(received.result())
            continue
        received.cancel()
        if not done:
            last = reader.got[-1] if reader.got else None
            raise AssertionError(f"stuck at {len(reader.got)} messages (the last: {last}) of "
                                 f"{enough.result() if enough.done() else '?'}")
    await ws.close()


async def publish_steadily(conn: Conn, name: str, count: int) -> list[dict[str, Any]]:
    """``count`` messages "<name>-<n>" at RATE per second over ``conn`` (ringcast.v1);
    the ``published`` replies."""
    await conn.upgrade("", subprotocol=V1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n in range(count):
        conn.send_text(json.dumps({"type": "publish", "id": n, "channel": CHANNEL,
                                   "data": f"{name}-{n}"}))
        if n % 20 == 19:  # paced in bursts of 20
            await asyncio.sleep(max(0.0, start + (n + 1) / RATE - loop.time()))
    await wait_until(lambda: len(conn.messages) >= count, 20, f"{count} replies to {name}")
    took = loop.time() - start
    assert count / took >= RATE * 0.8, f"published at {count / took:.0f}/s only"
    conn.close()
    return [json.loads(text) for text in conn.texts()]


def check_whole(got: list[tuple[str, int, str]], top: int, what: str) -> None:
    """Offsets 1..top, each once, in order, in one epoch."""
    offsets = [offset for _, offset, _ in got]
    assert offsets == list(range(1, top + 1)), (
        f"{what}: {len(offsets)} messages, first gap/duplicate near "
        f"{next((i for i, o in enumerate(offsets, 1) if o != i), None)}")
    assert len({epoch for epoch, _, _ in got}) == 1, what


def history_env(redis: RedisServer, **more: object) -> dict[str, object]:
    return {"CLUSTER_REDIS_URL": redis.url, "HISTORY_CHANNELS": CHANNEL, "HISTORY_SIZE": 10_000,
            **more}


async def nodes_ready(*nodes: Node) -> None:
    for node in nodes:
        await linked(node, cluster=True)


async def resume_while_publishing(subscribe_to: tuple[Node, Node],
                                  publishers: list[tuple[str, Conn]]) -> None:
    """Steady subscribers and resumers on ``subscribe_to``'s ports while ``publishers``
    publish ``RATE * SECONDS`` messages each: everyone gets every message once, in one
    order, each publisher's in the order it sent them."""
    per_publisher = int(RATE * SECONDS)
    top = len(publishers) * per_publisher
    a, b = subscribe_to

    async def steady(node: Node, enough: asyncio.Future[int]) -> Reader:
        reader = Reader()
        await read_until(await subscribe(node.port, reader), reader, enough)
        return reader

    async def resumer(first: Node, then: Node, away: float, enough: asyncio.Future[int]
                      ) -> Reader:
        """Subscribed on ``first``, it drops its connection after 300 messages and
        resumes on ``then`` from its last position, ``away`` seconds later."""
        reader = Reader()
        ws = await subscribe(first.port, reader)
        while len(reader.got) < 300:
            reader.take(await asyncio.wait_for(ws.recv(), 20))
        ws.transport.abort()  # as a network would: no closing handshake
        await asyncio.sleep(away)
        ws = await subscribe(then.port, reader, since=reader.position)
        assert reader.replies[-1]["recovered"] is True, reader.replies[-1]
        await read_until(ws, reader, enough)
        return reader

    enough: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    readers = [asyncio.create_task(steady(node, enough)) for node in (a, b, a, b)]
    resumers = [asyncio.create_task(resumer(first, then, away, enough))
                for first, then, away in ((a, b, 0.3), (b, a, 0.3), (a, a, 0.6), (b, b, 0.1))]
    await asyncio.sleep(0.2)  # subscribed (each reads its reply first)
    replies = await asyncio.gather(*(publish_steadily(conn, name, per_publisher)
                                     for name, conn in publishers))
    assert all(r["type"] == "published" for side in replies for r in side)
    offsets = sorted(r["offset"] for side in replies for r in side)
    assert offsets == list(range(1, top + 1)), "each publish answered with its position"
    enough.set_result(top)
    got = [await task for task in readers]
    # One order everywhere: the same data at the same position for everyone.
    for reader in got:
        check_whole(reader.got, top, "a steady subscriber")
        assert reader.got == got[0].got
    for name, _ in publishers:
        mine = [data for _, _, data in got[0].got if data.startswith(f"{name}-")]
        assert mine == [f"{name}-{n}" for n in range(per_publisher)]
    # Every resumer: all of it, once, in order, the same as the steady ones.
    for task in resumers:
        reader = await task
        check_whole(reader.got, top, "a resumer")
        assert reader.got == got[0].got


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["io_uring", "epoll"])
def test_two_nodes_one_order_and_clients_resume_on_any_node_while_publishing(
        start_node: StartNode, redis: RedisServer, backend: str) -> None:
    a = start_node(backend=backend, **history_env(redis))
    b = start_node(backend=backend, **history_env(redis))

    async def main() -> None:
        await nodes_ready(a, b)
        publishers = [("a", await open_conn(a.port)), ("b", await open_conn(b.port))]
        await resume_while_publishing((a, b), publishers)

    run(main())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["io_uring", "epoll"])
def test_two_workers_one_order_and_clients_resume_on_any_worker_while_publishing(
        start_node: StartNode, backend: str) -> None:
    """The owner worker orders; the other forwards (one publisher on each)."""
    node = start_node(workers=2, backend=backend, HISTORY_CHANNELS=CHANNEL,
                      HISTORY_SIZE=10_000)

    async def main() -> None:
        await linked(node)
        conns = await open_on_workers(node.port, {0: 1, 1: 1})
        await resume_while_publishing((node, node), [("w0", conns[0][0]),
                                                     ("w1", conns[1][0])])

    run(main())


async def publish_http(node: Node, data: str) -> tuple[int, dict[str, Any] | str]:
    """POST /publish/news: the status, and the answer's JSON (its text when not 200)."""
    conn = await open_conn(node.port)
    try:
        answer = await conn.publish_http(CHANNEL, data)
    finally:
        conn.close()
    return answer.status, json.loads(answer.body) if answer.status == 200 else answer.text


async def publish_batch(node: Node, *messages: tuple[str, str]
                        ) -> tuple[int, list[dict[str, Any]] | str]:
    """POST /publish with ``(channel, text)`` messages: the status, and the results
    (the answer's text when not 200)."""
    conn = await open_conn(node.port)
    body = json.dumps({"messages": [{"channel": c, "text": t} for c, t in messages]})
    try:
        answer = await conn.request("POST", "/publish", body.encode(),
                                    {"Content-Type": "application/json"})
    finally:
        conn.close()
    if answer.status != 200:
        return answer.status, answer.text
    return 200, json.loads(answer.body)["results"]


async def resume(node: Node, since: dict[str, Any], count: int) -> Reader:
    """Subscribe from ``since``: the reply, then ``count`` messages."""
    reader = Reader()
    ws = await subscribe(node.port, reader, since=since)
    while len(reader.got) < count:
        reader.take(await asyncio.wait_for(ws.recv(), 10))
    await ws.close()
    return reader


@pytest.mark.timeout(60)
def test_what_redis_no_longer_holds_gets_the_resync_signal(
        start_node: StartNode, redis: RedisServer) -> None:
    """docs/history.md, "Resume": a position older than the history, or of
    another epoch, is answered ``recovered: false`` with where the channel stands."""
    a = start_node(**history_env(redis, HISTORY_SIZE=10))
    b = start_node(**history_env(redis, HISTORY_SIZE=10))

    async def main() -> None:
        await nodes_ready(a, b)
        answers = [await publish_http((a, b)[n % 2], f"m{n}") for n in range(1, 31)]
        assert all(status == 200 for status, _ in answers), answers
        positions = [(answer["epoch"], answer["offset"]) for _, answer in answers
                     if isinstance(answer, dict)]
        epoch = positions[0][0]
        assert positions == [(epoch, n) for n in range(1, 31)]
        # Redis holds the last 10 (MAXLEN history.size), with the offsets as stream ids.
        assert redis.command("XLEN", f"ringcast:stream:{CHANNEL}") == 10

        recent = await resume(b, {"epoch": epoch, "offset": 25}, 5)
        assert (recent.replies[0]["recovered"], recent.replies[0]["offset"]) == (True, 30)
        assert recent.got == [(epoch, n, f"m{n}") for n in range(26, 31)]
        for since in ({"epoch": epoch, "offset": 5}, {"epoch": "elsewhere", "offset": 28},
                      {"epoch": epoch, "offset": 31}):
            (reply,) = (await resume(a, since, 0)).replies
            assert (reply["recovered"], reply["epoch"], reply["offset"]) == \
                (False, epoch, 30), (since, reply)

    run(main())


@pytest.mark.timeout(90)
def test_without_redis_history_publishes_are_refused_and_its_data_loss_starts_a_new_epoch(
        start_node: StartNode, redis: RedisServer) -> None:
    a = start_node(**history_env(redis))
    b = start_node(**history_env(redis))

    async def main() -> None:
        await nodes_ready(a, b)
        for n in range(1, 6):
            status, answer = await publish_http(a, f"m{n}")
            assert status == 200, answer
        assert isinstance(answer, dict)
        epoch = answer["epoch"]
        live = Reader()
        ws = await subscribe(b.port, live)
        assert (live.replies[0]["epoch"], live.replies[0]["offset"]) == (epoch, 5)

        redis.stop()  # it kept nothing on disk (no RDB, no AOF): its data is lost
        # A ringcast.v1 subscriber of a history channel may miss what other nodes
        # publish from now on: it is closed with 1013, to resume later.
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert ws.close_code == 1013, (ws.close_code, ws.close_reason)
        assert "resume" in (ws.close_reason or "")
        # Publishes are refused, never taken and lost (a batch with a message of a
        # history channel: all of it); so are subscriptions.
        status, text = await publish_http(a, "during")
        assert status == 503 and "Redis" in str(text), (status, text)
        status, text = await publish_batch(b, ("raw", "r"), (CHANNEL, "during"))
        assert status == 503 and "Redis" in str(text), (status, text)
        refused = Reader()
        async with connect(f"ws://127.0.0.1:{b.port}/",
                           subprotocols=[V1]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "subscribe", "id": 7, "channel": CHANNEL}))
            error = json.loads(await ws.recv())
        assert (error["type"], error["code"], error["id"]) == ("error", "unavailable", 7)
        del refused

        redis.start()
        await nodes_ready(a, b)
        status, after = await publish_http(b, "after")
        assert status == 200, after
        assert isinstance(after, dict)
        assert after["epoch"] != epoch and after["offset"] == 1, after
        # Resuming from before the loss: the signal to resync, and where to resync from.
        (reply,) = (await resume(a, {"epoch": epoch, "offset": 5}, 0)).replies
        assert (reply["recovered"], reply["epoch"], reply["offset"]) == \
            (False, after["epoch"], 1)
        # A batch: each message of a history channel answered with its position.
        status, results = await publish_batch(a, (CHANNEL, "b1"), ("raw", "r"),
                                              (CHANNEL, "b2"))
        assert status == 200, results
        assert results == [
            {"channel": CHANNEL, "subscribers": 0, "epoch": after["epoch"], "offset": 2},
            {"channel": "raw", "subscribers": 0},
            {"channel": CHANNEL, "subscribers": 0, "epoch": after["epoch"], "offset": 3}]
        # From the new epoch's start: what Redis holds since.
        again = await resume(a, {"epoch": after["epoch"], "offset": 0}, 3)
        assert again.got == [(after["epoch"], 1, "after"), (after["epoch"], 2, "b1"),
                             (after["epoch"], 3, "b2")]

    run(main())


@pytest.mark.timeout(90)
def test_the_python_client_rides_out_a_redis_restart(
        start_node: StartNode, redis: RedisServer) -> None:
    """Closed with 1013 when its node loses Redis, the client reconnects; its
    re-subscribe is refused ``unavailable`` while Redis is down, and retried with
    backoff until Redis is back (without its data: the client is told to resync)."""
    node = start_node(**history_env(redis))

    async def take(client: Client) -> Message | Resync:
        async with asyncio.timeout(20):
            return await anext(client)

    async def refused_again() -> bool:
        conn = await open_conn(node.port)
        try:
            refused = metric(await conn.metrics(), "ringcast_history_owner_unavailable_total",
                             worker="0")
        finally:
            conn.close()
        return refused >= 2

    async def main() -> None:
        await nodes_ready(node)
        async with Client(f"ws://127.0.0.1:{node.port}/", min_delay=0.05,
                          max_delay=0.5) as client:
            await client.subscribe(CHANNEL)
            assert (await publish_http(node, "m1"))[0] == 200
            first = await take(client)
            assert isinstance(first, Message) and first.position is not None
            redis.stop()
            # Retried: more than one refusal (publishes are not tried meanwhile).
            await wait_until(refused_again, 20, "two refused re-subscribes")
            redis.start()
            await nodes_ready(node)
            resync = await take(client)
            assert isinstance(resync, Resync), resync
            assert resync.position == Position("", 0)  # Redis came back empty
            status, after = await publish_http(node, "after")
            assert status == 200 and isinstance(after, dict)
            message = await take(client)
            assert isinstance(message, Message) and message.data == "after"
            assert message.position == Position(after["epoch"], 1)

    run(main())
