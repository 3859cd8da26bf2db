"""Shared pieces of the deployment tests: tool lookup, free ports, and real client traffic.

A test whose tool is missing skips with the reason, except under CI (``CI`` set to anything
but ``0``/``false``), where it fails: CI installs the tools, so a missing one is a CI bug.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def missing(reason: str) -> None:
    """Skip (fail under CI) because a tool or a capability of this machine is missing."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)")
    print(f"SKIP: {reason}", file=sys.stderr)
    pytest.skip(reason)


def find_tool(name: str, env_var: str | None = None) -> str | None:
    """``$env_var``, then PATH, then the bin directory of the running interpreter's venv."""
    if env_var and os.environ.get(env_var):
        return os.environ[env_var]
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def require_tool(name: str, why: str, env_var: str | None = None) -> str:
    path = find_tool(name, env_var)
    if path is None:
        missing(f"`{name}` is not installed ({why})")
        raise AssertionError("unreachable")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def http_request(port: int, method: str, path: str, body: bytes | None = None, *,
                 timeout: float = 5.0, headers: dict[str, str] | None = None,
                 ) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_healthy(port: int, timeout: float, alive: Callable[[], bool],
                 what: Callable[[], str]) -> None:
    """Poll GET /healthz until 200; fail early (with ``what()``) if ``alive()`` turns false."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not alive():
            raise AssertionError(f"the server exited before serving /healthz:\n{what()}")
        try:
            status, body = http_request(port, "GET", "/healthz", timeout=2.0)
        except OSError as exc:
            last = str(exc)
        else:
            if status == 200:
                return
            last = f"HTTP {status} {body!r}"
        time.sleep(0.2)
    raise AssertionError(f"/healthz never answered 200 within {timeout}s ({last}):\n{what()}")


def subscribe(port: int, channel: str) -> ClientConnection:
    return connect(f"ws://{HOST}:{port}/{channel}", open_timeout=5, close_timeout=2)


def publish(port: int, channel: str, payload: bytes) -> dict[str, object]:
    """POST /publish/<channel> as text (subscribers get a text frame)."""
    status, body = http_request(port, "POST", f"/publish/{channel}", payload,
                                headers={"Content-Type": "text/plain; charset=utf-8"})
    assert status == 200, (status, body)
    doc = json.loads(body)
    assert isinstance(doc, dict)
    return doc


def pubsub_round_trip(port: int, channel: str = "deploy-test", *, one_worker: bool = True,
                      ) -> None:
    """Two WebSocket subscribers each receive a message published with POST /publish.

    A subscription lands a moment after the handshake, so warm-up messages go out until both
    subscribers got one. With several workers the two may sit on different workers and the
    publish response counts only the receiving worker's subscribers: ``one_worker=False``
    skips that count.
    """
    with subscribe(port, channel) as a, subscribe(port, channel) as b:
        waiting = {id(a): a, id(b): b}
        deadline = time.monotonic() + 10
        while waiting:
            assert time.monotonic() < deadline, "a subscriber never received the warm-up"
            publish(port, channel, b"warm-up")
            for key, ws in list(waiting.items()):
                try:
                    ws.recv(timeout=0.1)
                except TimeoutError:
                    continue
                del waiting[key]
        doc = publish(port, channel, b"hello from the host")
        if one_worker:
            assert doc == {"channel": channel, "subscribers": 2}, doc
        for ws in (a, b):
            while (msg := ws.recv(timeout=5)) == "warm-up":
                pass
            assert msg == "hello from the host"


def close_code(ws: ClientConnection, timeout: float = 10.0) -> tuple[list[str], int | None]:
    """Messages still delivered to ``ws``, then the close code the server sent (None if none)."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            got.append(msg if isinstance(msg, str) else msg.decode())
    except ConnectionClosed as exc:
        return got, exc.rcvd.code if exc.rcvd is not None else None
    except TimeoutError:
        pass
    return got, None
