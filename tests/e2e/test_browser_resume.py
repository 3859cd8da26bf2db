"""The JavaScript client (``GET /ringcast.js``) in a real browser (headless Chromium):
it loads as a classic ``<script>``, subscribes over ``ringcast.v1``, and after a lost
connection resumes with every message once, in order; after a restart of a server
whose history is in Redis too, while another node publishes; after a restart without
it, and after Redis lost its data, it resyncs (docs/history.md). Without chromium the
tests fail, saying how to install it.

The page's client is built with a ``WebSocket`` class of the test's: the browser's own,
except that while ``window.offline`` is set it connects to a port nobody listens on,
so the test can keep the client away while it publishes, as a network outage would.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve
from websockets.typing import Subprotocol

from tests.cluster.procs import RedisServer
from tests.support.chromium import INSTALL_HINT, Browser, Page, chromium_path
from tests.support.teardown import stop_all

from .conftest import StartServer
from .helpers import HOST, TIMEOUT, publish
from .server import ServerProcess

CHANNEL = "news"

# Loads /ringcast.js with a <script> element (as a page would), then creates the client
# and its subscription; what they report is gathered in window.got, .resyncs, .states.
SETUP = """
({base, channel, closedPort}) => new Promise((resolve, reject) => {
  const script = document.createElement("script");
  script.src = "/ringcast.js";
  script.onload = resolve;
  script.onerror = () => reject(new Error("cannot load /ringcast.js"));
  document.documentElement.appendChild(script);
}).then(() => {
  window.offline = false;
  window.subscribes = 0;  // subscribe commands sent, retries included
  class TestSocket extends WebSocket {
    constructor(url, protocols) {
      super(window.offline ? `ws://127.0.0.1:${closedPort}/` : url, protocols);
    }
    send(data) {
      if (JSON.parse(data).type === "subscribe") subscribes += 1;
      super.send(data);
    }
  }
  window.got = [];
  window.resyncs = [];
  window.states = [];
  window.client = new RingcastClient(`ws://${base}/`, {
    minDelay: 50, maxDelay: 500, WebSocket: TestSocket,
    onState: (state, info) => states.push([state, info ? info.code : null]),
  });
  window.sub = client.subscribe(channel,
    (data, meta) => got.push([meta.offset, data, meta.epoch]),
    // seen: how many messages were handed over before the resync
    {onResync: (info) => resyncs.push({...info, seen: got.length})});
  return typeof RingcastClient;
})
"""


def closed_port() -> int:
    """A port nothing listens on (the kernel's pick for a socket that is then closed)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def open_client(browser: Browser, port: int, ws_port: int | None = None) -> Page:
    """A page of the server's, whose client is subscribed to CHANNEL (the reply came);
    its WebSocket goes to ``ws_port`` if given (another server), else to the same one."""
    base = f"{HOST}:{port}"
    page = browser.open(f"http://{base}/ringcast.js")
    args = {"base": f"{HOST}:{ws_port or port}", "channel": CHANNEL,
            "closedPort": closed_port()}
    loaded = page.evaluate(f"({SETUP})({json.dumps(args)})")
    assert loaded == "function", loaded
    page.wait_for("sub.position !== null", timeout=TIMEOUT)
    return page


def received(page: Page) -> list[tuple[int, str]]:
    """(offset, data) of every message the page's client handed over, in order."""
    got: list[list[Any]] = page.evaluate("got")
    return [(offset, data) for offset, data, _ in got]


def publish_all(port: int, messages: list[str]) -> None:
    for message in messages:
        assert publish(port, CHANNEL, message, "text/plain").status == 200


def wait_received(page: Page, count: int) -> list[tuple[int, str]]:
    page.wait_for(f"got.length >= {count}", timeout=TIMEOUT)
    return received(page)


@pytest.fixture
def chromium() -> str:
    found = chromium_path()
    if found is None:
        pytest.fail(f"chromium is not installed: {INSTALL_HINT}")
    return found


@pytest.fixture
def restarted(request: pytest.FixtureRequest) -> Iterator[list[ServerProcess]]:
    """Servers a test starts itself (on a port it chooses), stopped as start_server's are."""
    servers: list[ServerProcess] = []
    yield servers
    stop_all(servers, request)


def test_the_browser_client_resumes_after_a_lost_connection_with_each_message_once(
        chromium: str, start_server: StartServer) -> None:
    server = start_server(HISTORY_CHANNELS=CHANNEL)
    with Browser(chromium) as browser:
        page = open_client(browser, server.port)
        assert page.evaluate("sub.position.offset") == 0

        publish_all(server.port, ["m1", "m2", "m3"])
        assert wait_received(page, 3) == [(1, "m1"), (2, "m2"), (3, "m3")]
        epoch = page.evaluate("sub.position.epoch")  # named by m1, the epoch's first

        # The connection goes, and the client cannot come back until the messages are out.
        page.evaluate("window.offline = true; client._drop()")
        publish_all(server.port, ["m4", "m5", "m6", "m7", "m8"])
        page.wait_for("states.filter(([s]) => s === 'closed').length >= 2",
                      timeout=TIMEOUT)  # the drop, and at least one failed reconnect
        assert received(page) == [(1, "m1"), (2, "m2"), (3, "m3")]
        page.evaluate("window.offline = false")
        page.wait_for("states.filter(([s]) => s === 'open').length === 2", timeout=TIMEOUT)

        # A live message after the replayed ones: had any come twice, it would be before.
        publish_all(server.port, ["m9"])
        expected = [(n, f"m{n}") for n in range(1, 10)]
        assert wait_received(page, 9) == expected
        assert page.evaluate(f"got.every(([, , e]) => e === {json.dumps(epoch)})") is True
        assert page.evaluate("resyncs") == []
        assert page.evaluate("sub.position") == {"epoch": epoch, "offset": 9}
        assert not any(state == "refused" for state, _ in page.evaluate("states"))


def test_the_browser_client_resyncs_after_a_server_restart(
        chromium: str, backend: str, start_server: StartServer,
        restarted: list[ServerProcess]) -> None:
    first = start_server(HISTORY_CHANNELS=CHANNEL)
    with Browser(chromium) as browser:
        page = open_client(browser, first.port)
        publish_all(first.port, ["a1", "a2"])
        assert wait_received(page, 2) == [(1, "a1"), (2, "a2")]
        epoch = page.evaluate("sub.position.epoch")

        # A restart: history, kept in memory, is gone, and with it the epoch.
        assert first.stop() == 0
        second = ServerProcess.spawn({"HISTORY_CHANNELS": CHANNEL}, backend=backend,
                                     port=first.port)
        restarted.append(second)
        second.wait_listening()

        # The client comes back by itself; the new server cannot replay after (epoch, 2).
        page.wait_for("resyncs.length > 0", timeout=TIMEOUT)
        [resync] = page.evaluate("resyncs")
        assert resync["channel"] == CHANNEL
        # It has no history of the channel yet: epoch "" (its first message starts one).
        assert (resync["epoch"], resync["offset"]) == ("", 0)

        publish_all(second.port, ["b1", "b2"])
        assert wait_received(page, 4) == [(1, "a1"), (2, "a2"), (1, "b1"), (2, "b2")]
        new_epoch = page.evaluate("got[2][2]")
        assert new_epoch not in ("", epoch)
        assert page.evaluate(f"got.slice(2).every(([, , e]) => e === {json.dumps(new_epoch)})")
        assert len(page.evaluate("resyncs")) == 1
        assert page.evaluate("sub.position") == {"epoch": new_epoch, "offset": 2}
        assert not any(state == "refused" for state, _ in page.evaluate("states"))


@pytest.fixture
def scripted() -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """A ringcast.v1 server on loopback that answers a subscribe to CHANNEL at (E, 0), then
    sends E's first two messages and F's first two: F begins while the client stays
    connected, as when the channel's owner worker restarts. Yields its port and the
    commands it received."""
    received: list[dict[str, Any]] = []

    def script(ws: ServerConnection) -> None:
        command = json.loads(ws.recv(timeout=TIMEOUT))
        received.append(command)
        ws.send(json.dumps({"type": "subscribed", "id": command["id"], "channel": CHANNEL,
                            "epoch": "E", "offset": 0}))
        for frame in ({"epoch": "E", "offset": 1, "data": "e1"}, {"offset": 2, "data": "e2"},
                      {"epoch": "F", "offset": 1, "data": "f1"}, {"offset": 2, "data": "f2"}):
            ws.send(json.dumps({"channel": CHANNEL, **frame}))
        try:
            for _ in ws:  # until the page goes
                pass
        except ConnectionClosed:
            pass

    with serve(script, HOST, 0, subprotocols=[Subprotocol("ringcast.v1")]) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server.socket.getsockname()[1], received
        server.shutdown()
    thread.join(TIMEOUT)


def test_the_browser_client_reads_epoch_less_messages_and_resyncs_on_a_new_epoch(
        chromium: str, server: ServerProcess,
        scripted: tuple[int, list[dict[str, Any]]]) -> None:
    """A message names its epoch at offset 1 only: the others are in the subscription's
    epoch; one naming another epoch mid-connection calls onResync just before it."""
    ws_port, received = scripted
    with Browser(chromium) as browser:
        page = open_client(browser, server.port, ws_port)
        page.wait_for("got.length >= 4", timeout=TIMEOUT)
        assert page.evaluate("got") == [[1, "e1", "E"], [2, "e2", "E"],
                                        [1, "f1", "F"], [2, "f2", "F"]]
        assert page.evaluate("resyncs") == [
            {"channel": CHANNEL, "epoch": "F", "offset": 0, "seen": 2}]
        assert page.evaluate("sub.position") == {"epoch": "F", "offset": 2}
    assert received == [{"type": "subscribe", "id": 1, "channel": CHANNEL}]


# -- history in Redis (docs/history.md, "Across nodes") ---------------------------------


def publish_when_ordered(port: int, messages: list[str]) -> None:
    """Publish each message, waiting out the 503s of a node whose Redis link is not up
    yet (history publishes need Redis: docs/history.md)."""
    for message in messages:
        deadline = time.monotonic() + TIMEOUT
        while (status := publish(port, CHANNEL, message, "text/plain").status) == 503:
            assert time.monotonic() < deadline, "the node never reached Redis"
            time.sleep(0.05)
        assert status == 200, status


def test_the_browser_client_resumes_from_redis_across_a_restart_of_its_node(
        chromium: str, backend: str, start_server: StartServer,
        restarted: list[ServerProcess], redis: RedisServer) -> None:
    """Two nodes share the channel's history in Redis. The page's node stops; the other
    publishes meanwhile; the page's node comes back on the same port and the page gets
    every message once, in order, in the same epoch: no resync."""
    env = {"HISTORY_CHANNELS": CHANNEL, "CLUSTER_REDIS_URL": redis.url}
    first, other = start_server(**env), start_server(**env)
    with Browser(chromium) as browser:
        page = open_client(browser, first.port)
        publish_when_ordered(other.port, ["a1", "a2"])
        assert wait_received(page, 2) == [(1, "a1"), (2, "a2")]

        assert first.stop() == 0
        publish_when_ordered(other.port, ["b1", "b2", "b3"])  # while the page is away
        second = ServerProcess.spawn(env, backend=backend, port=first.port)
        restarted.append(second)
        second.wait_listening()
        publish_when_ordered(other.port, ["c1"])

        expected = [(1, "a1"), (2, "a2"), (3, "b1"), (4, "b2"), (5, "b3"), (6, "c1")]
        assert wait_received(page, 6) == expected
        epoch = page.evaluate("got[0][2]")
        assert epoch != ""
        assert page.evaluate(f"got.every(([, , e]) => e === {json.dumps(epoch)})") is True
        assert page.evaluate("resyncs") == []
        assert page.evaluate("sub.position") == {"epoch": epoch, "offset": 6}


def test_the_browser_client_rides_out_a_redis_restart_that_lost_the_history(
        chromium: str, start_server: StartServer, redis: RedisServer) -> None:
    """Redis stops: the page's subscription is closed with 1013 and its subscribes are
    refused ``unavailable`` and retried, with backoff. Redis comes back empty: the
    subscription is taken, the page resyncs to the new epoch and gets what follows."""
    server = start_server(HISTORY_CHANNELS=CHANNEL, CLUSTER_REDIS_URL=redis.url)
    with Browser(chromium) as browser:
        page = open_client(browser, server.port)
        publish_when_ordered(server.port, ["a1"])
        assert wait_received(page, 1) == [(1, "a1")]
        epoch = page.evaluate("got[0][2]")
        subscribed = page.evaluate("subscribes")

        redis.stop()
        page.wait_for("states.some(([state, code]) => state === 'closed' && code === 1013)",
                      timeout=TIMEOUT)
        # Refused while Redis is away, and asked again: at least twice on the new
        # connection, whose first subscribe was refused.
        page.wait_for(f"subscribes >= {subscribed + 2}", timeout=TIMEOUT)
        assert publish(server.port, CHANNEL, "lost", "text/plain").status == 503

        redis.start()  # same port, no data: the history and its epoch are gone
        page.wait_for("resyncs.length > 0", timeout=TIMEOUT)
        [resync] = page.evaluate("resyncs")
        assert (resync["channel"], resync["epoch"], resync["offset"]) == (CHANNEL, "", 0)
        publish_when_ordered(server.port, ["b1"])
        assert wait_received(page, 2) == [(1, "a1"), (1, "b1")]
        assert page.evaluate("got[1][2]") not in ("", epoch)
        assert not any(state == "refused" for state, _ in page.evaluate("states"))
