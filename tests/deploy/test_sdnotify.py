"""systemd's notification protocol over real AF_UNIX datagram sockets (a path and an abstract
name): ringcast.server.sdnotify on its own, then `ringcast serve` telling a Type=notify unit
that it is ready and that it stops."""

from __future__ import annotations

import http.client
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringcast.server import sdnotify
from tests.support.serverproc import ServerProcess


def _receive(sock: socket.socket) -> str:
    sock.settimeout(2.0)
    return sock.recv(4096).decode()


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    if len(os.fsencode(path)) >= 100:  # sun_path holds 108 bytes: fall back to a short dir
        path = Path(tempfile.mkdtemp(prefix="rc-sd-")) / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        yield sock, str(path)
    finally:
        sock.close()
        path.unlink(missing_ok=True)


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    name = f"ringcast-sdnotify-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    try:
        yield sock, "@" + name
    finally:
        sock.close()


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready() is False
    assert sdnotify.stopping() is False
    assert sdnotify.status("x") is False
    assert sdnotify.reloading() is False


def test_path_socket_receives_each_helper(
    monkeypatch: pytest.MonkeyPatch, path_socket: tuple[socket.socket, str]
) -> None:
    sock, path = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sdnotify.ready() is True
    assert _receive(sock) == "READY=1"
    assert sdnotify.status("serving 3 connections") is True
    assert _receive(sock) == "STATUS=serving 3 connections"
    assert sdnotify.stopping() is True
    assert _receive(sock) == "STOPPING=1"
    assert sdnotify.notify("WATCHDOG=1") is True
    assert _receive(sock) == "WATCHDOG=1"


def test_abstract_socket(
    monkeypatch: pytest.MonkeyPatch, abstract_socket: tuple[socket.socket, str]
) -> None:
    sock, name = abstract_socket
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    assert sdnotify.ready("listening on 127.0.0.1:8080, backend io_uring") is True
    assert _receive(sock) == "READY=1\nSTATUS=listening on 127.0.0.1:8080, backend io_uring"
    assert sdnotify.stopping("draining 2 connections") is True
    assert _receive(sock) == "STOPPING=1\nSTATUS=draining 2 connections"


def test_reloading_carries_monotonic_time(
    monkeypatch: pytest.MonkeyPatch, abstract_socket: tuple[socket.socket, str]
) -> None:
    sock, name = abstract_socket
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.reloading() is True
    first, second = _receive(sock).split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_status_is_kept_on_one_line(
    monkeypatch: pytest.MonkeyPatch, abstract_socket: tuple[socket.socket, str]
) -> None:
    sock, name = abstract_socket
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    assert sdnotify.status("two\nlines\r\n") is True
    assert _receive(sock) == "STATUS=two lines  "


@pytest.mark.parametrize("value", ["", "@", "relative/path", "vsock:2:1234"])
def test_unusable_addresses_are_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert sdnotify.notify("READY=1") is False


def test_nobody_listening_is_not_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert sdnotify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", f"@ringcast-nobody-{os.getpid()}-{time.monotonic_ns()}")
    assert sdnotify.ready() is False


def test_empty_state_is_not_sent(
    monkeypatch: pytest.MonkeyPatch, abstract_socket: tuple[socket.socket, str]
) -> None:
    sock, name = abstract_socket
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    assert sdnotify.notify("") is False
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(64)


# -- `ringcast serve` under a Type=notify unit --------------------------------------------


def _states(sock: socket.socket, until: str, timeout: float) -> list[dict[str, str]]:
    """The notifications received, each as its assignments, up to the first that sets
    ``until`` to 1; AssertionError with what came when none does within ``timeout``."""
    got: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout
    while not got or got[-1].get(until) != "1":
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            raise AssertionError(f"no {until}=1 within {timeout}s; got {got}") from None
        got.append(dict(line.split("=", 1) for line in data.split("\n")))
    return got


def _healthz(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.parametrize(("workers", "status"), [
    (1, "listening on 127.0.0.1:{port}, backend {backend}"),
    (2, "2 workers on 127.0.0.1:{port}"),
], ids=["one process", "a supervisor and two workers"])
def test_serve_notifies_ready_once_it_serves_and_stopping_on_sigterm(
    monkeypatch: pytest.MonkeyPatch, path_socket: tuple[socket.socket, str], workers: int,
    status: str,
) -> None:
    # deploy/ringcast.service is Type=notify: without READY=1 systemd never sees the unit
    # start (and kills it at TimeoutStartSec); STOPPING=1 tells it the drain has begun.
    sock, path = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    server = ServerProcess.spawn({"SERVER_HOST": "127.0.0.1", "SERVER_WORKERS": workers})
    try:
        *_, ready = _states(sock, "READY", ServerProcess.START_TIMEOUT)
        server.wait_listening()
        assert ready == {"READY": "1", "STATUS": status.format(port=server.port,
                                                               backend=server.backend)}
        assert _healthz(server.port) == 200  # ready means serving
        server.terminate()
        _states(sock, "STOPPING", ServerProcess.STOP_TIMEOUT)
        assert server.wait() == 0, server.stderr_text()
    finally:
        server.cleanup()
