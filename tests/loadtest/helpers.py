"""Start servers for the loadtest's tests: the faulty test server and `ringcast serve`."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ringcast.loadtest.client import LoadTest, Options

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def faulty_server(*args: str) -> Iterator[int]:
    """Run faulty_server.py with ``args``; yields its port."""
    proc = subprocess.Popen([sys.executable, str(HERE / "faulty_server.py"), "--port", "0",
                             *args], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        yield int(line.split()[1])
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@contextlib.contextmanager
def ringcast_server(backend: str, **env: str) -> Iterator[tuple[int, int]]:
    """Run `ringcast serve` on a free port with ``backend``; yields (port, pid)."""
    port = free_port()
    environ = {**os.environ, "RINGCAST_LIMITS_MAX_CONNECTIONS": "4000", **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ringcast", "serve", "--port", str(port), "--backend", backend],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=environ)
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 20
        seen = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                raise AssertionError("ringcast serve exited:\n" + "".join(seen))
            seen.append(line)
            if "listening on" in line:
                break
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def run(port: int, channel: str = "bench", **opts: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "connections": 10, "messages": 60, "window": 8, "progress": False,
        "message_timeout": 3.0, "drain_timeout": 3.0, "max_time": 60.0,
    }
    return LoadTest(Options(url=f"ws://127.0.0.1:{port}/{channel}",
                            **{**defaults, **opts})).run()
