"""The ``ringcast`` command as an operator runs it: ``--version`` and ``ringcast health``.

``ringcast health --pid`` is the container image's HEALTHCHECK: it must ask the port the
server was actually given, whichever way it was given (config file, environment, flag), from
a process that has none of the server's settings itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from ringcast import __version__
from tests.support.teardown import stop_all

from .server import ServerProcess


def ringcast(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m ringcast ARGS`` without any RINGCAST_* variable of this process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGCAST_")}
    return subprocess.run([sys.executable, "-m", "ringcast", *args], capture_output=True,
                          text=True, timeout=30, cwd=cwd, env=env, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_version_flag_prints_the_version() -> None:
    for args in (["--version"], ["version"]):
        res = ringcast(*args)
        assert (res.returncode, res.stdout, res.stderr) == (0, f"ringcast {__version__}\n", "")


@pytest.fixture
def started(request: pytest.FixtureRequest) -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    yield servers
    stop_all(servers, request)


@pytest.mark.parametrize("given_by", ["config file", "environment", "flag"])
def test_health_asks_the_port_the_server_was_given(
        given_by: str, backend: str, tmp_path: Path, started: list[ServerProcess]) -> None:
    port = free_port()
    config = tmp_path / "ringcast.toml"
    config.write_text(f"[server]\nport = {port}\n")
    env: dict[str, object] = {"LOGGING_FORMAT": "json"}
    if given_by == "environment":
        env["SERVER_PORT"] = port
    server = ServerProcess.spawn(
        env, backend=backend, port=port if given_by == "flag" else None,
        # relative to this process's directory, which the health check does not share
        config=os.path.relpath(config) if given_by == "config file" else None)
    started.append(server)
    server.wait_listening()
    assert server.port == port
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    res = ringcast("health", "--pid", str(server.pid), cwd=elsewhere)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok\n") and f"backend: {backend}\n" in res.stdout, res.stdout


def test_health_finds_the_server_under_an_init(backend: str) -> None:
    """`docker run --init`: PID 1 is an init whose child is the server."""
    port = free_port()
    init = subprocess.Popen(
        ["sh", "-c", '"$@" & wait', "sh", sys.executable, "-m", "ringcast", "serve",
         "--port", str(port), "--backend", backend],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    children = Path(f"/proc/{init.pid}/task/{init.pid}/children")
    try:
        deadline = time.monotonic() + 10
        while (res := ringcast("health", "--port", str(port))).returncode != 0:
            assert init.poll() is None and time.monotonic() < deadline, res
            time.sleep(0.05)
        res = ringcast("health", "--pid", str(init.pid))
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("ok\n"), res.stdout
    finally:
        for child in children.read_text().split():
            os.kill(int(child), signal.SIGTERM)
        _, log = init.communicate(timeout=20)
    assert init.returncode == 0, log


def test_health_says_what_is_wrong_when_nothing_answers() -> None:
    port = free_port()
    res = ringcast("health", "--port", str(port))
    assert res.returncode == 1, res
    assert res.stderr == (f"ringcast health: no answer from 127.0.0.1:{port}: Connection "
                          "refused (is the server running, and listening there?)\n")


class _Draining(BaseHTTPRequestHandler):
    """What a draining ringcast answers to GET /healthz."""

    def do_GET(self) -> None:
        body = b"draining\nworker: 0\n"
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_health_fails_while_the_server_drains() -> None:
    with HTTPServer(("127.0.0.1", 0), _Draining) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            res = ringcast("health", "--port", str(httpd.server_port))
        finally:
            httpd.shutdown()
            thread.join()
    assert (res.returncode, res.stdout) == (1, "draining\nworker: 0\n"), res
    assert res.stderr == ("ringcast health: /healthz answered 503 (draining: the server is "
                          "stopping)\n")


def test_health_takes_a_pid_or_settings_not_both() -> None:
    res = ringcast("health", "--pid", "1", "--port", "8080")
    assert res.returncode == 2, res
    assert "--pid takes the server's own settings" in res.stderr


def test_health_refuses_a_process_that_is_not_a_server() -> None:
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                          stdin=subprocess.PIPE) as other:
        res = ringcast("health", "--pid", str(other.pid))
        assert other.stdin is not None
        other.stdin.close()
    assert res.returncode == 1, res
    assert f"ringcast health: process {other.pid} runs `{sys.executable} -c " in res.stderr
    assert "not `ringcast serve`" in res.stderr and "--pid" in res.stderr, res.stderr
