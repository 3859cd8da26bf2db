"""The status page's figures (docs/status.md) and the access log, from a real server: what
``/status.json`` and the ``/status/live`` WebSocket say follows what clients do, and each
connection's life is in the access log."""

from __future__ import annotations

import json
import re
import time
from contextlib import ExitStack

import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from tests.support.serverproc import ServerProcess

from .conftest import StartServer
from .helpers import TIMEOUT, http, publish


def figures(port: int) -> dict[str, object]:
    response = http(port, "GET", "/status.json")
    assert response.status == 200, response
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert isinstance(answer, dict)
    return answer


def test_the_figures_follow_the_clients(start_server: StartServer) -> None:
    server = start_server(STATUS_ENABLED="true")
    page = http(server.port, "GET", "/status")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert b"/status/live" in page.body  # the page's script opens the live WebSocket
    with connect(f"ws://127.0.0.1:{server.port}/status/live", open_timeout=TIMEOUT) as live, \
            connect(f"ws://127.0.0.1:{server.port}/news", open_timeout=TIMEOUT) as a, \
            connect(f"ws://127.0.0.1:{server.port}/news", open_timeout=TIMEOUT), \
            connect(f"ws://127.0.0.1:{server.port}/sport", open_timeout=TIMEOUT):
        for n in range(3):
            assert publish(server.port, "news", f"m{n}", "text/plain").status == 200
            assert a.recv(timeout=TIMEOUT) == f"m{n}"
        # Every second the live WebSocket carries the figures: wait (bounded) for one that
        # has seen the three messages.
        deadline = time.monotonic() + 3 * TIMEOUT
        while True:
            pushed = json.loads(live.recv(timeout=TIMEOUT))
            if pushed["totals"]["messages_published"] >= 3:
                break
            assert time.monotonic() < deadline, pushed
        assert pushed["totals"]["connections"] == 4  # three subscribers and the live one
        assert {"name": "news", "subscribers": 2} in pushed["channels"]
        assert pushed["channels"][0] == {"name": "news", "subscribers": 2}
        assert all(c["name"] != "/status" for c in pushed["channels"])
        assert pushed["totals"]["deliveries"] >= 6
        assert pushed["state"] == "ok" and pushed["backend"] == server.backend
        assert pushed["latency_ms"]["handshake"]["p99"] is None or \
            pushed["latency_ms"]["handshake"]["p99"] >= 0
        answer = figures(server.port)
        assert answer["totals"] == pushed["totals"] or answer["time"] >= pushed["time"]
        history = answer["history"]
        assert isinstance(history, list) and history
        assert history[-1]["connections"] == 4
        # The live WebSocket only listens: a message on it is refused like any publish a
        # client may not make (1008).
        live.send("not allowed")
        with pytest.raises(ConnectionClosedError) as closed:
            while True:
                live.recv(timeout=TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


def test_off_by_default(start_server: StartServer) -> None:
    server = start_server()
    assert http(server.port, "GET", "/status.json").status == 426  # a channel's URL, no page


def test_the_latency_histograms_count_handshakes_and_publishes(
        start_server: StartServer) -> None:
    server = start_server()
    with connect(f"ws://127.0.0.1:{server.port}/news", open_timeout=TIMEOUT) as sub:
        publish(server.port, "news", "x", "text/plain")
        assert sub.recv(timeout=TIMEOUT) == "x"
    text = http(server.port, "GET", "/metrics").body.decode()
    assert re.search(r'^ringcast_handshake_seconds_count\{worker="0"\} 1\.0$', text, re.M), text
    assert re.search(r'^ringcast_publish_flush_seconds_count\{worker="0"\} 1\.0$', text, re.M)


def test_the_access_log_follows_a_connection(start_server: StartServer) -> None:
    server: ServerProcess = start_server(LOGGING_ACCESS_PER_SECOND=100)
    with connect(f"ws://127.0.0.1:{server.port}/news", open_timeout=TIMEOUT) as sub:
        assert publish(server.port, "news", "x", "text/plain").status == 200
        assert sub.recv(timeout=TIMEOUT) == "x"
    deadline = time.monotonic() + TIMEOUT
    pattern = re.compile(r"connection (\d+) closed: client_close by the client")
    while not pattern.search(server.stderr_text()):
        assert time.monotonic() < deadline, server.stderr_text()
        time.sleep(0.05)
    log = server.stderr_text()
    conn = pattern.search(log)[1]  # type: ignore[index]
    assert re.search(rf"connection {conn} accepted from 127\.0\.0\.1:\d+", log), log
    assert re.search(rf"connection {conn}: WebSocket open on channel news", log), log
    assert re.search(r"connection \d+: POST /publish/news 200, reached 1", log), log


def test_with_two_workers_either_one_answers_for_the_host(start_server: StartServer) -> None:
    server = start_server(STATUS_ENABLED="true", SERVER_WORKERS=2)
    with ExitStack() as stack:
        for _ in range(6):
            stack.enter_context(connect(f"ws://127.0.0.1:{server.port}/news",
                                        open_timeout=TIMEOUT))
        deadline = time.monotonic() + 3 * TIMEOUT
        while True:  # the workers share their figures once a second
            answer = figures(server.port)
            per_worker = answer["per_worker"]
            assert isinstance(per_worker, list)
            if [w["worker"] for w in per_worker] == ["0", "1"] \
                    and answer["totals"]["subscribers"] == 6:  # type: ignore[index]
                break
            assert time.monotonic() < deadline, answer
            time.sleep(0.2)
        assert sum(w["connections"] for w in per_worker) >= 6
        assert answer["workers"] == 2
        assert answer["channels"] == [{"name": "news", "subscribers": 6}]
