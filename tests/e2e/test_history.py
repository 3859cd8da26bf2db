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
from .helpers import TIMEOUT, http, metrics, publish
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
        # Nothing published yet: no epoch yet (its first message will start one).
        assert (reply["epoch"], reply["offset"]) == ("", 0) and "recovered" not in reply
        answer = publish(server.port, "news", "hello", "text/plain")
        assert answer.status == 200
        epoch = json.loads(answer.body)["epoch"]
        assert json.loads(answer.body) == {"channel": "news", "subscribers": 1,
                                           "epoch": epoch, "offset": 1}
        assert len(epoch) == 8
        publish(server.port, "news", b"\x00\xff", "application/octet-stream")
        # No "type": that is a message. Only the epoch's first one names the epoch.
        assert recv(ws) == {"channel": "news", "epoch": epoch, "offset": 1, "data": "hello"}
        assert recv(ws) == {"channel": "news", "offset": 2, "base64": "AP8="}


def test_a_channel_without_history_has_no_positions(start_server: StartServer) -> None:
    server = start_server()
    with v1(server, compression=False) as ws:
        assert subscribe(ws, "plain") == {"type": "subscribed", "id": 1, "channel": "plain"}
        answer = publish(server.port, "plain", "x", "text/plain")
        assert json.loads(answer.body) == {"channel": "plain", "subscribers": 1}
        assert recv(ws) == {"channel": "plain", "data": "x"}


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
        assert recv(ws) == {"channel": "b", "data": "b2"}
        send(ws, type="unsubscribe", id=3, channel="a")
        assert recv(ws)["code"] == "not_subscribed"


def test_a_v1_client_publishes_and_gets_the_position_and_its_own_message(
        start_server: StartServer) -> None:
    server = start_server(HISTORY_CHANNELS="chat.*")
    with v1(server) as ws, connect(f"{server.ws_url}/chat.1", open_timeout=TIMEOUT) as raw:
        subscribe(ws, "chat.1")
        send(ws, type="publish", id=7, channel="chat.1", data="hi")
        got = [recv(ws), recv(ws)]  # the reply may come before the message: both come
        epoch = next(f["epoch"] for f in got if f.get("type") == "published")
        assert {"type": "published", "id": 7, "channel": "chat.1", "epoch": epoch,
                "offset": 1} in got
        assert {"channel": "chat.1", "epoch": epoch, "offset": 1, "data": "hi"} in got
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
    """Publishes ``count`` messages ``<name>1``, ``<name>2``, ... on ``channel`` over a raw
    WebSocket at about ``rate`` a second, in order."""

    def __init__(self, server: ServerProcess, channel: str, name: str, count: int,
                 rate: float) -> None:
        super().__init__(daemon=True)
        self.url = f"{server.ws_url}/{channel}"
        self.name, self.count, self.rate = name, count, rate
        self.error: BaseException | None = None
        self.took = 0.0

    def run(self) -> None:
        try:
            with connect(self.url, open_timeout=TIMEOUT) as ws:
                start = time.monotonic()
                for n in range(1, self.count + 1):
                    ws.send(f"{self.name}{n}")
                    ahead = start + n / self.rate - time.monotonic()
                    if ahead > 0.001:
                        time.sleep(ahead)  # pacing, not waiting for anything
                self.took = time.monotonic() - start
        except BaseException as exc:
            self.error = exc


class HttpPublisher(Publisher):
    """The same with ``POST /publish``, a new connection each (so, with workers, from
    every worker); each answer must give the message's position."""

    def run(self) -> None:
        try:
            start = time.monotonic()
            channel = self.url.rsplit("/", 1)[1]
            port = int(self.url.rsplit(":", 1)[1].split("/")[0])
            for n in range(1, self.count + 1):
                answer = publish(port, channel, f"{self.name}{n}", "text/plain")
                assert answer.status == 200, answer
                assert json.loads(answer.body)["offset"] >= n
                ahead = start + n / self.rate - time.monotonic()
                if ahead > 0.001:
                    time.sleep(ahead)
            self.took = time.monotonic() - start
        except BaseException as exc:
            self.error = exc


class Reader(threading.Thread):
    """A ringcast.v1 subscriber that reads ``channel`` until offset ``last``, dropping its
    TCP connection ``drops`` times on the way and resuming from the last position it
    saw; ``got`` is the data of every message in the order received, ``first`` the
    offset its first subscription started after."""

    def __init__(self, server: ServerProcess, channel: str, last: int, *, drops: int,
                 compression: bool = True) -> None:
        super().__init__(daemon=True)
        self.server, self.channel, self.last = server, channel, last
        self.drops, self.compression = drops, compression
        self.got: list[str] = []
        self.first = -1
        self.error: BaseException | None = None
        self.subscribed = threading.Event()

    def run(self) -> None:
        try:
            self._read()
        except BaseException as exc:
            self.error = exc

    def _read(self) -> None:
        position: dict[str, Any] | None = None
        for round_ in range(self.drops + 1):
            with v1(self.server, compression=self.compression) as ws:
                reply = subscribe(ws, self.channel, position)
                if position is None:
                    position = {"epoch": reply["epoch"], "offset": reply["offset"]}
                    self.first = reply["offset"]
                    self.subscribed.set()
                else:
                    assert reply["recovered"] is True, reply
                stop = (min(self.last, position["offset"] + 200) if round_ < self.drops
                        else self.last)
                while position["offset"] < stop:
                    message = recv(ws)
                    assert "type" not in message, message
                    assert message["offset"] == position["offset"] + 1, (message, position)
                    # The epoch is named by the epoch's first message only, replayed or
                    # live (a subscription made before it has the epoch "").
                    if message["offset"] == 1:
                        assert position["epoch"] in ("", message["epoch"]), (message,
                                                                             position)
                        position["epoch"] = message["epoch"]
                    else:
                        assert "epoch" not in message, (message, position)
                    position["offset"] = message["offset"]
                    self.got.append(message["data"])
                if round_ < self.drops:
                    drop(ws)


@pytest.mark.parametrize(("workers", "compression"), [(1, False), (1, True), (2, True)],
                         ids=["plain", "deflate", "2-workers"])
def test_resume_while_publishing_loses_and_repeats_nothing(
        start_server: StartServer, workers: int, compression: bool) -> None:
    """Two WebSocket publishers and one over HTTP (a connection a message: every worker
    publishes, when there are two, and the channel's owner orders what the other
    forwards), over 1,000 messages a second together; a watcher that never drops and
    three subscribers that drop three times each all see one order."""
    count = 1500  # per WebSocket publisher
    by_http = 200
    total = 2 * count + by_http
    server = start_server(HISTORY_CHANNELS="feed", HISTORY_SIZE=total, SERVER_WORKERS=workers)
    watcher = Reader(server, "feed", total, drops=0)
    readers = [Reader(server, "feed", total, drops=3, compression=compression)
               for _ in range(3)]
    for reader in (watcher, *readers):
        reader.start()
        assert reader.subscribed.wait(TIMEOUT)
    publishers = [Publisher(server, "feed", name, count, rate=750) for name in "ab"]
    publishers.append(HttpPublisher(server, "feed", "h", by_http, rate=100))
    for publisher in publishers:
        publisher.start()
    for thread in (*publishers, watcher, *readers):
        thread.join(60)
    for publisher in publishers:
        assert publisher.error is None, publisher.error
    assert sum(p.count / p.took for p in publishers) >= 1000
    assert watcher.error is None, watcher.error
    assert watcher.first == 0 and len(watcher.got) == total
    for name in "ab":  # each WebSocket publisher's messages once, in its order
        assert [m for m in watcher.got if m[0] == name] == [f"{name}{n}"
                                                            for n in range(1, count + 1)]
    # Each HTTP publish once, in order: each was answered (with its position) once the
    # channel's owner had ordered it, and only then was the next one sent.
    assert [m for m in watcher.got if m[0] == "h"] == [f"h{n}" for n in range(1, by_http + 1)]
    for reader in readers:
        assert reader.error is None, reader.error
        assert reader.got == watcher.got[reader.first:]  # the same order, nothing lost


def test_a_position_the_history_no_longer_has_gets_the_resync_signal(
        start_server: StartServer) -> None:
    server = start_server(HISTORY_CHANNELS="news", HISTORY_SIZE=5)
    epoch = json.loads(publish(server.port, "news", "m1", "text/plain").body)["epoch"]
    for n in range(2, 21):
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
            assert recv(ws) == {"channel": "news", "offset": top,
                                "data": "after"}  # live from the position
    assert metrics(server.port).value("ringcast_history_evicted_total", reason="size") >= 16


def test_a_replay_names_the_epoch_where_its_messages_do(start_server: StartServer) -> None:
    """A replay sends the messages' stored frames: the epoch's first names the epoch, the
    others are in the one the ``subscribed`` reply gives."""
    server = start_server(HISTORY_CHANNELS="news")
    with v1(server) as ws:
        before = subscribe(ws, "news")  # before the first message: epoch ""
    epoch = json.loads(publish(server.port, "news", "m1", "text/plain").body)["epoch"]
    for n in range(2, 4):
        publish(server.port, "news", f"m{n}", "text/plain")
    # From the epoch's start, or from before there was one: the same three messages.
    for since in ({"epoch": epoch, "offset": 0}, {"epoch": before["epoch"], "offset": 0}):
        with v1(server) as ws:
            reply = subscribe(ws, "news", since)
            assert (reply["epoch"], reply["offset"], reply["recovered"]) == (epoch, 3, True)
            assert [recv(ws) for _ in range(3)] == [
                {"channel": "news", "epoch": epoch, "offset": 1, "data": "m1"},
                {"channel": "news", "offset": 2, "data": "m2"},
                {"channel": "news", "offset": 3, "data": "m3"}]


def test_a_restart_changes_the_epoch(start_server: StartServer) -> None:
    first = start_server(HISTORY_CHANNELS="news")
    epoch = json.loads(publish(first.port, "news", "m1", "text/plain").body)["epoch"]
    second = start_server(HISTORY_CHANNELS="news")  # another process: a restart, as seen
    with v1(second) as ws:
        reply = subscribe(ws, "news", {"epoch": epoch, "offset": 1})
        # It has no history of the channel yet: resync from before its first message.
        assert (reply["recovered"], reply["epoch"], reply["offset"]) == (False, "", 0)


def test_the_byte_budget_holds_and_drops_the_oldest_first(start_server: StartServer) -> None:
    server = start_server(HISTORY_CHANNELS="*", HISTORY_MAX_BYTES=8192)
    body = "x" * 900
    epochs = {}
    for channel in ("old", "new"):
        for _ in range(6):
            answer = publish(server.port, channel, body, "text/plain")
            assert answer.status == 200
            epochs[channel] = json.loads(answer.body)["epoch"]
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
