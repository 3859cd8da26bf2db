"""SIGTERM's lame duck: /healthz answers 503 while the server still accepts and serves,
for ``shutdown.lame_duck`` seconds, then the drain (1001 to every client, exit 0).
SIGINT skips it. With workers, the supervisor forwards each signal as it came."""

from __future__ import annotations

import signal
import time
from contextlib import ExitStack

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from .conftest import StartServer
from .helpers import http, publish
from .server import ServerProcess

TIMEOUT = 10.0
LAME_DUCK = 4.0   # long enough to do everything below inside it on a loaded machine


def healthz_status(server: ServerProcess) -> int:
    return http(server.port, "GET", "/healthz").status


def wait_until_unhealthy(server: ServerProcess) -> None:
    deadline = time.monotonic() + TIMEOUT
    while healthz_status(server) != 503:
        assert time.monotonic() < deadline, "/healthz never turned 503 after SIGTERM"
        time.sleep(0.02)


def close_code(ws: ClientConnection) -> int | None:
    try:
        ws.recv(timeout=TIMEOUT)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
    raise AssertionError("a message came where the close was expected")


@pytest.mark.parametrize("workers", [1, 2], ids=["single", "supervisor"])
def test_sigterm_reports_unhealthy_while_still_serving_then_drains(
        start_server: StartServer, workers: int) -> None:
    server = start_server(SHUTDOWN_LAME_DUCK=LAME_DUCK, SERVER_WORKERS=workers)
    with ExitStack() as stack:
        stop_and_check(server, stack)


def stop_and_check(server: ServerProcess, stack: ExitStack) -> None:
    before = stack.enter_context(connect(f"{server.ws_url}/news", open_timeout=TIMEOUT))
    assert healthz_status(server) == 200
    server.proc.send_signal(signal.SIGTERM)
    wait_until_unhealthy(server)
    body = http(server.port, "GET", "/healthz").body.decode()
    assert body.startswith("stopping (lame duck)\n"), body
    # Still accepting and serving: a new subscriber, a publish, both subscribers get it.
    after = stack.enter_context(connect(f"{server.ws_url}/news", open_timeout=TIMEOUT))
    answer = publish(server.port, "news", "still serving", "text/plain")
    assert answer.status == 200, answer
    assert before.recv(timeout=TIMEOUT) == "still serving"
    assert after.recv(timeout=TIMEOUT) == "still serving"
    # Then the drain, as without a lame duck: 1001 to every client, exit 0.
    assert close_code(before) == 1001
    assert close_code(after) == 1001
    assert server.wait(timeout=TIMEOUT + LAME_DUCK) == 0
    assert "while still serving" in server.stderr_text()


def test_sigint_skips_the_lame_duck(start_server: StartServer) -> None:
    server = start_server(SHUTDOWN_LAME_DUCK=600)
    with connect(f"{server.ws_url}/news", open_timeout=TIMEOUT) as ws:
        server.proc.send_signal(signal.SIGINT)
        assert close_code(ws) == 1001   # at once: a lame duck would hold it for 600 s
    assert server.wait(timeout=TIMEOUT) == 0
    assert "while still serving" not in server.stderr_text()


def test_a_second_sigterm_ends_the_lame_duck(start_server: StartServer) -> None:
    server = start_server(SHUTDOWN_LAME_DUCK=600)
    with connect(f"{server.ws_url}/news", open_timeout=TIMEOUT) as ws:
        server.proc.send_signal(signal.SIGTERM)
        wait_until_unhealthy(server)
        assert publish(server.port, "news", "still serving", "text/plain").status == 200
        assert ws.recv(timeout=TIMEOUT) == "still serving"
        server.proc.send_signal(signal.SIGTERM)
        assert close_code(ws) == 1001
    assert server.wait(timeout=TIMEOUT) == 0
