"""The ``ringcast.v1`` client protocol and history (docs/history.md), end to end: a real
server on each backend, ``websockets`` as the client (an independent implementation of
RFC 6455, which also negotiates permessage-deflate unless told not to), JSON by hand.

The resume tests publish at over 1,000 messages a second while subscribers drop their
TCP connection without a close frame (a network drop, as the server sees it) and come
back with their last position: every message must arrive exactly once, in order.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from .conftest import StartServer
from .helpers import TIMEOUT, http, metrics, publish, run, wait_until
from .server import ServerProcess

V1 = "ringcast.v1"
TOKEN = "subscriber-token-0123456789"
PUBLISHER = "publisher-token-0123456789"


@contextmanager
def v1(server: ServerProcess, path: str = "/", *, compression: bool = True,
       query: str = "") -> Iterator[ClientConnection]:
    url = f"{server.ws_url}{path}{query}"
    with connect(url, subprotocols=[V1], open_timeout=TIMEOUT,  # type: ignore[list-item]
                 compression="deflate" if compression else None) as ws:
        assert ws.subprotocol == V1
        yield ws


def send(ws: ClientConnection, **command: Any) -> None:
    ws.send(json.dumps(command))


def recv(ws: ClientConnection) -> dict[str, Any]:
    frame = ws.recv(timeout=TIMEOUT)
    assert isinstance(frame, str), frame  # every ringcast.v1 frame is text
    got = json.loads(frame)
    assert isinstance(got, dict)
    return got


def subscribe(ws: ClientConnection, channel: str, since: dict[str, Any] | None = None,
              ref: int = 1) -> dict[str, Any]:
    command: dict[str, Any] = {"type": "subscribe", "id": ref, "channel": channel}
    if since is not None:
        command["since"] = since
    send(ws, **command)
    reply = recv(ws)
    assert reply["type"] == "subscribed", reply
    assert reply["id"] == ref and reply["channel"] == channel
    return reply


def drop(ws: ClientConnection) -> None:
    """Lose the connection: no close frame, the TCP connection just goes."""
    ws.socket.shutdown(socket.SHUT_RDWR)
    ws.socket.close()


# -- the protocol ---------------------------------------------------------------------------


def test_a_v1_subscriber_gets_each_message_with_its_channel_and_position(
        start_server: StartServer) -> None:
    server = start_server(HISTORY_CHANNELS="news")
    with v1(server) as ws:
        reply = subscribe(ws, "news")
        epoch = reply["epoch"]
        assert reply["offset"] == 0 and "recovered" not in reply
        answer = publish(server.port, "news", "hello", "text/plain")
        assert answer.status == 200
        assert json.loads(answer.body) == {"channel": "news", "subscribers": 1,
                                           "epoch": epoch, "offset": 1}
        publish(server.port, "news", b"\x00\xff", "application/octet-stream")
        assert recv(ws) == {"type": "message", "channel": "news", "epoch": epoch,
                            "offset": 1, "data": "hello"}
        assert recv(ws) == {"type": "message", "channel": "news", "epoch": epoch,
                            "offset": 2, "base64": "AP8="}


def test_a_channel_without_history_has_no_positions(start_server: StartServer) -> None:
    server = start_server()
    with v1(server, compression=False) as ws:
        assert subscribe(ws, "plain") == {"type": "subscribed", "id": 1, "channel": "plain"}
        answer = publish(server.port, "plain", "x", "text/plain")
        assert json.loads(answer.body) == {"channel": "plain", "subscribers": 1}
        assert recv(ws) == {"type": "message", "channel": "plain", "data": "x"}


def test_one_connection_gets_several_channels_and_nothing_after_unsubscribing(
        start_server: StartServer) -> None:
    server = start_server(HISTORY_CHANNELS="a")
    with v1(server) as ws:
        subscribe(ws, "a", ref=1)
        subscribe(ws, "b", ref=2)
        publish(server.port, "a", "a1", "text/plain")
        publish(server.port, "b", "b1", "text/plain")
        got = [recv(ws), recv(ws)]
        assert [(m["channel"], m["data"]) for m in got] == [("a", "a1"), ("b", "b1")]
        send(ws, type="unsubscribe", id="u", channel="a")
        assert recv(ws) == {"type": "unsubscribed", "id": "u", "channel": "a"}
        publish(server.port, "a", "a2", "text/plain")
        publish(server.port, "b", "b2", "text/plain")
        # "b2" was published after "a2": had "a2" been sent, it would come first.
        assert recv(ws) == {"type": "message", "channel": "b", "data": "b2"}
        send(ws, type="unsubscribe", id=3, channel="a")
        assert recv(ws)["code"] == "not_subscribed"


def test_a_v1_client_publishes_and_gets_the_position_and_its_own_message(
        start_server: StartServer) -> None:
    server = start_server(HISTORY_CHANNELS="chat.*")
    with v1(server) as ws, connect(f"{server.ws_url}/chat.1", open_timeout=TIMEOUT) as raw:
        epoch = subscribe(ws, "chat.1")["epoch"]
        send(ws, type="publish", id=7, channel="chat.1", data="hi")
        got = [recv(ws), recv(ws)]  # the reply may come before the message: both come
        assert {"type": "published", "id": 7, "channel": "chat.1", "epoch": epoch,
                "offset": 1} in got
        assert {"type": "message", "channel": "chat.1", "epoch": epoch, "offset": 1,
                "data": "hi"} in got
        assert raw.recv(timeout=TIMEOUT) == "hi"  # raw subscribers: the bytes as published
        send(ws, type="publish", id=8, channel="chat.1", base64="AAEC")
        assert raw.recv(timeout=TIMEOUT) == b"\x00\x01\x02"


def test_the_path_names_a_first_channel(start_server: StartServer) -> None:
    server = start_server(HISTORY_CHANNELS="news")
    with v1(server, "/news") as ws:
        reply = recv(ws)
        assert reply["type"] == "subscribed" and reply["channel"] == "news"
        assert "id" not in reply and reply["offset"] == 0
        publish(server.port, "news", "n1", "text/plain")
        assert recv(ws)["data"] == "n1"


@pytest.mark.parametrize(("command", "code"), [
    ("not json", "bad_request"),
    ('["a list"]', "bad_request"),
    ('{"type": "dance", "id": 1}', "bad_request"),
    ('{"type": "subscribe", "id": 1}', "bad_request"),
    ('{"type": "subscribe", "id": 1, "channel": "has space"}', "bad_channel"),
    ('{"type": "subscribe", "id": 1, "channel": "a", "since": {"epoch": 1}}', "bad_request"),
    ('{"type": "publish", "id": 1, "channel": "a"}', "bad_request"),
    ('{"type": "publish", "id": 1, "channel": "a", "base64": "%%%"}', "bad_request"),
    ('{"type": "subscribe", "id": [1], "channel": "a"}', "bad_request"),
])
def test_a_bad_command_gets_an_error_and_the_connection_stays(
        start_server: StartServer, command: str, code: str) -> None:
    server = start_server()
    with v1(server) as ws:
        ws.send(command)
        error = recv(ws)
        assert error["type"] == "error" and error["code"] == code, error
        assert error["reason"]
        subscribe(ws, "still-here", ref=2)
        ws.send(b"binary")
        assert recv(ws)["code"] == "bad_request"


def test_subscriptions_per_connection_are_limited(start_server: StartServer) -> None:
    server = start_server(LIMITS_MAX_SUBSCRIPTIONS=2)
    with v1(server) as ws:
        subscribe(ws, "a", ref=1)
        subscribe(ws, "b", ref=2)
        send(ws, type="subscribe", id=3, channel="c")
        assert recv(ws) == {
            "type": "error", "id": 3, "channel": "c", "code": "too_many_subscriptions",
            "reason": "at most 2 channels per connection (limits.max_subscriptions)"}


def test_a_refusal_tells_the_client_why(start_server: StartServer) -> None:
    """A refused browser handshake shows only 1006; a v1 client is told with 1008 and a
    reason, and a subscription its token does not allow gets an error it can read."""
    server = start_server(AUTH_SUBSCRIBE_TOKENS=TOKEN, AUTH_PUBLISH_TOKENS=PUBLISHER,
                          AUTH_REQUIRE_SUBSCRIBE_AUTH="true", AUTH_REQUIRE_PUBLISH_AUTH="true")
    with v1(server) as ws:
        with pytest.raises(Exception, match="1008") as refused:
            ws.recv(timeout=TIMEOUT)
        assert "subscribing needs a token" in str(refused.value)
    with v1(server, query=f"?token={TOKEN}") as ws:
        subscribe(ws, "news")
        send(ws, type="publish", id=2, channel="news", data="x")
        assert recv(ws) == {"type": "error", "id": 2, "channel": "news", "code": "forbidden",
                            "reason": "not allowed to publish on news"}
    with v1(server, query="?token=wrong-token-0123456789") as ws, \
            pytest.raises(Exception, match="1008"):
        ws.recv(timeout=TIMEOUT)


# -- resume ---------------------------------------------------------------------------------


class Publisher(threading.Thread):
    """Publishes ``count`` numbered messages on ``channel`` over a raw WebSocket at about
    ``rate`` a second, in order."""

    def __init__(self, server: ServerProcess, channel: str, count: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.url = f"{server.ws_url}/{channel}"
        self.count, self.rate = count, rate
        self.error: BaseException | None = None
        self.took = 0.0

    def run(self) -> None:
        try:
            with connect(self.url, open_timeout=TIMEOUT) as ws:
                start = time.monotonic()
                for n in range(1, self.count + 1):
                    ws.send(f"m{n}")
                    ahead = start + n / self.rate - time.monotonic()
                    if ahead > 0.001:
                        time.sleep(ahead)  # pacing, not waiting for anything
                self.took = time.monotonic() - start
        except BaseException as exc:
            self.error = exc


def resumer(server: ServerProcess, channel: str, last: int, drops: int,
            compression: bool) -> list[int]:
    """Subscribe, read, drop the connection ``drops`` times, resuming each time from the
    last position seen; return the message numbers received, in order, up to ``last``."""
    got: list[int] = []
    position: dict[str, Any] | None = None
    for round_ in range(drops + 1):
        with v1(server, compression=compression) as ws:
            reply = subscribe(ws, channel, position)
            if position is None:
                position = {"epoch": reply["epoch"], "offset": reply["offset"]}
            else:
                assert reply["recovered"] is True, reply
            target = len(got) + 200 if round_ < drops else last
            while len(got) < target and (not got or got[-1] < last):
                message = recv(ws)
                assert message["type"] == "message"
                assert message["epoch"] == position["epoch"]
                assert message["offset"] == position["offset"] + 1, (message, position)
                position["offset"] = message["offset"]
                got.append(int(message["data"][1:]))
            if round_ < drops:
                drop(ws)
    return got


@pytest.mark.parametrize("compression", [False, True], ids=["plain", "deflate"])
def test_resume_while_publishing_loses_and_repeats_nothing(
        start_server: StartServer, compression: bool) -> None:
    count = 3000
    server = start_server(HISTORY_CHANNELS="feed", HISTORY_SIZE=count)
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def read(index: int) -> None:
        try:
            results[index] = resumer(server, "feed", count, drops=3, compression=compression)
        except BaseException as exc:
            errors.append(exc)

    with v1(server) as watcher:
        subscribe(watcher, "feed")
        readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(3)]
        for reader in readers:
            reader.start()
        # Every resumer has subscribed before the first message: each must see all.
        run(wait_until(lambda: metrics(server.port).value("ringcast_subscribers") >= 4,
                       TIMEOUT, "every subscriber in"))
        publisher = Publisher(server, "feed", count, rate=1500)
        publisher.start()
        publisher.join(60)
        for reader in readers:
            reader.join(60)
    assert publisher.error is None, publisher.error
    assert count / publisher.took >= 1000, f"published at {count / publisher.took:.0f}/s"
    assert errors == []
    for got in results.values():
        assert got == list(range(1, count + 1))
    assert len(results) == 3


def test_a_position_the_history_no_longer_has_gets_the_resync_signal(
        start_server: StartServer) -> None:
    server = start_server(HISTORY_CHANNELS="news", HISTORY_SIZE=5)
    with v1(server) as ws:
        epoch = subscribe(ws, "news")["epoch"]
    for n in range(1, 21):
        publish(server.port, "news", f"m{n}", "text/plain")
    with v1(server) as ws:
        # Offsets 16-20 are held: a resume after 15 has them all, after 14 does not.
        reply = subscribe(ws, "news", {"epoch": epoch, "offset": 15})
        assert (reply["recovered"], reply["offset"]) == (True, 20)
        assert [recv(ws)["offset"] for _ in range(5)] == [16, 17, 18, 19, 20]
    top = 20
    for since in ({"epoch": epoch, "offset": 14}, {"epoch": "another", "offset": 20},
                  {"epoch": epoch, "offset": 99}):
        with v1(server) as ws:
            reply = subscribe(ws, "news", since)
            assert reply == {"type": "subscribed", "id": 1, "channel": "news",
                             "epoch": epoch, "offset": top, "recovered": False}
            publish(server.port, "news", "after", "text/plain")
            top += 1
            assert recv(ws) == {"type": "message", "channel": "news", "epoch": epoch,
                                "offset": top, "data": "after"}  # live from the position
    assert metrics(server.port).value("ringcast_history_evicted_total", reason="size") >= 16


def test_a_restart_changes_the_epoch(start_server: StartServer) -> None:
    first = start_server(HISTORY_CHANNELS="news")
    with v1(first) as ws:
        epoch = subscribe(ws, "news")["epoch"]
    publish(first.port, "news", "m1", "text/plain")
    second = start_server(HISTORY_CHANNELS="news")  # another process: a restart, as seen
    with v1(second) as ws:
        reply = subscribe(ws, "news", {"epoch": epoch, "offset": 1})
        assert reply["recovered"] is False and reply["epoch"] != epoch


def test_the_byte_budget_holds_and_drops_the_oldest_first(start_server: StartServer) -> None:
    server = start_server(HISTORY_CHANNELS="*", HISTORY_MAX_BYTES=8192)
    body = "x" * 900
    epochs = {}
    for channel in ("old", "new"):
        with v1(server) as ws:
            epochs[channel] = subscribe(ws, channel)["epoch"]
        for _ in range(6):
            assert publish(server.port, channel, body, "text/plain").status == 200
    seen = metrics(server.port)
    assert 0 < seen.value("ringcast_history_bytes") <= 8192
    assert seen.value("ringcast_history_evicted_total", reason="budget") >= 4
    with v1(server) as ws:  # the newest channel's messages are all there ...
        assert subscribe(ws, "new", {"epoch": epochs["new"], "offset": 0})["recovered"]
    with v1(server) as ws:  # ... the oldest channel's first ones went first
        assert not subscribe(ws, "old", {"epoch": epochs["old"], "offset": 0})["recovered"]


def test_the_javascript_client_is_served(server: ServerProcess) -> None:
    answer = http(server.port, "GET", "/ringcast.js")
    assert answer.status == 200
    assert answer.headers["content-type"] == "text/javascript; charset=utf-8"
    assert b"RingcastClient" in answer.body
