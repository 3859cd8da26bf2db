"""History with several workers (docs/history.md, ringcast.server.ordering): a history
channel's owner worker orders every message, whichever worker it was published on, and a
``ringcast.v1`` client resumes on any worker; when the owner dies, publishes are
refused (never lost silently) until it is back, and it comes back in a new epoch."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import pytest

from ringcast.server.ordering import owner_of

from .checks import linked, log_lines, run
from .conftest import StartNode
from .wsclient import Conn, close_all, open_on_workers, wait_until

V1 = "ringcast.v1"
CHANNEL = "news"


def frames(conn: Conn) -> list[dict[str, Any]]:
    return [json.loads(text) for text in conn.texts()]


async def subscribed(conns: list[Conn], since: dict[str, Any] | None = None
                     ) -> list[dict[str, Any]]:
    """Subscribe each to CHANNEL over ringcast.v1; their ``subscribed`` replies."""
    for conn in conns:
        await conn.upgrade("", subprotocol=V1)
        command: dict[str, Any] = {"type": "subscribe", "id": 1, "channel": CHANNEL}
        if since is not None:
            command["since"] = since
        conn.send_text(json.dumps(command))
    await wait_until(lambda: all(conn.messages for conn in conns), 10, "the replies")
    replies = [frames(conn)[0] for conn in conns]
    assert all(r["type"] == "subscribed" for r in replies), replies
    return replies


def messages(conn: Conn) -> list[tuple[str, int, str]]:
    """(epoch, offset, data) of each message (a frame without a "type"), its epoch as a
    client reads it: named by an epoch's first message (offset 1) only, else the one of
    the ``subscribed`` reply or of the last message that named one."""
    out: list[tuple[str, int, str]] = []
    epoch: str | None = None
    for f in frames(conn):
        if f.get("type") == "subscribed":
            epoch = f["epoch"]
        elif "type" not in f:
            if "epoch" in f:
                assert f["offset"] == 1, f
                epoch = f["epoch"]
            assert epoch is not None, f
            out.append((epoch, f["offset"], f["data"]))
    return out


@pytest.mark.timeout(90)
def test_the_owner_orders_every_worker_s_publishes_and_a_client_resumes_anywhere(
        start_node: StartNode) -> None:
    node = start_node(workers=2, HISTORY_CHANNELS=CHANNEL)
    owner = owner_of(CHANNEL, 2)

    async def main() -> None:
        await linked(node)
        subs = await open_on_workers(node.port, {0: 2, 1: 2})
        readers = subs[0] + subs[1]
        replies = await subscribed(readers)
        # Nothing published yet: no epoch yet, on either worker.
        assert {(r["epoch"], r["offset"]) for r in replies} == {("", 0)}

        pubs = await open_on_workers(node.port, {0: 1, 1: 1})
        epoch = ""
        for n in range(1, 21):  # alternately on each worker: one of them forwards
            answer = await pubs[n % 2][0].publish_http(CHANNEL, f"m{n}")
            assert answer.status == 200, answer
            epoch = epoch or json.loads(answer.body)["epoch"]
            assert json.loads(answer.body)["offset"] == n
            assert json.loads(answer.body)["epoch"] == epoch
        await wait_until(lambda: all(len(messages(c)) == 20 for c in readers), 10,
                         "20 messages at every subscriber")
        expected = [(epoch, n, f"m{n}") for n in range(1, 21)]
        for conn in readers:
            assert messages(conn) == expected

        # A client that left after message 5 resumes on the other worker (and on the
        # same one): messages 6-20, then live ones.
        again = await open_on_workers(node.port, {0: 1, 1: 1})
        resumed = again[0] + again[1]
        for reply in await subscribed(resumed, {"epoch": epoch, "offset": 5}):
            assert (reply["recovered"], reply["offset"]) == (True, 20)
        answer = await pubs[1 - owner][0].publish_http(CHANNEL, "m21")
        assert json.loads(answer.body)["offset"] == 21
        await wait_until(lambda: all(len(messages(c)) == 16 for c in resumed), 10,
                         "the resumed clients' 16 messages")
        for conn in resumed:
            assert messages(conn) == [(epoch, n, f"m{n}") for n in range(6, 22)]
        close_all(readers + resumed)
        (staying,) = (await open_on_workers(node.port, {1 - owner: 1}))[1 - owner]
        await subscribed([staying])

        # The owner dies. The other worker's publishes on the channel are refused with
        # a 503 that says why, until the owner is back (in a new epoch).
        pids = node.worker_pids()
        os.kill(pids[owner], signal.SIGKILL)
        restarted = rf"worker {owner} \(pid {pids[owner]}\) killed by SIGKILL; restarting"
        refused = 0
        resets = 0
        while True:  # a new connection each time: a 503 closes the one it came on
            try:
                survivor = (await open_on_workers(node.port, {1 - owner: 1}))[1 - owner][0]
            except ConnectionError:
                # For a moment after a crash, a new connection may be reset: the dead
                # worker's listener lingers until its ring is torn down (docs/scaling.md).
                resets += 1
                assert resets < 50
                continue
            answer = await survivor.publish_http(CHANNEL, "during")
            survivor.close()
            if answer.status == 200 and log_lines(node, restarted):
                break
            assert answer.status == 503, answer
            assert "did not answer" in answer.text, answer
            refused += 1
            assert refused < 200, node.stderr_text()
            await asyncio.sleep(0.05)
        assert refused >= 1
        after = json.loads(answer.body)
        assert after["epoch"] != epoch and after["offset"] == 1
        fresh = (await open_on_workers(node.port, {1 - owner: 1}))[1 - owner]
        (reply,) = await subscribed(fresh, {"epoch": epoch, "offset": 21})
        assert reply["recovered"] is False and reply["epoch"] == after["epoch"]
        # A subscriber that stayed on the other worker sees the new epoch: its signal.
        await wait_until(lambda: bool(messages(staying)), 10, "the message after the restart")
        assert messages(staying) == [(after["epoch"], 1, "during")]
        close_all([*fresh, staying, *pubs[0], *pubs[1]])

    run(main())
