"""Start servers for the loadtest's tests: the faulty test server and `ringcast serve`."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ringcast.loadtest.client import Options, run_load_test
from tests.support.serverproc import ServerProcess

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def faulty_server(*args: str) -> contextlib.AbstractContextManager[int]:
    """Run faulty_server.py with ``args``; yields its port."""
    return server_module("faulty_server", *args)


@contextlib.contextmanager
def server_module(module: str, *args: str) -> Iterator[int]:
    """Run ``tests.loadtest.<module>`` (a server that prints ``PORT <n>`` first) with
    ``args``; yields its port."""
    proc = subprocess.Popen([sys.executable, "-m", f"tests.loadtest.{module}", "--port", "0",
                             *args], stdout=subprocess.PIPE, text=True, cwd=HERE.parents[1])
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


class _Serve(ServerProcess):
    START_TIMEOUT = 20.0


@contextlib.contextmanager
def ringcast_server(backend: str, **env: str) -> Iterator[tuple[int, int]]:
    """Run `ringcast serve` with ``backend`` (``env``: overrides without ``RINGCAST_``);
    yields (port, pid)."""
    server = _Serve.spawn({"LIMITS_MAX_CONNECTIONS": 4000, **env}, backend=backend)
    server.wait_listening()
    try:
        yield server.port, server.pid
    finally:
        server.stop()
        server.cleanup()


def run(port: int, channel: str = "bench", **opts: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "connections": 10, "messages": 60, "window": 8, "progress": False,
        "message_timeout": 3.0, "drain_timeout": 3.0, "max_time": 60.0,
    }
    return run_load_test(Options(url=f"ws://127.0.0.1:{port}/{channel}",
                                 **{**defaults, **opts}), progress_stream=None)
