"""Conformance fixtures: an echo-mode `ringcast serve` per backend, and the Autobahn script.

Self-contained on purpose (no import from tests/e2e): this directory can run alone.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ringcast.ringio import RingUnavailable, probe

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
AUTOBAHN = SHARED / "tools" / "autobahn"
SCRIPT = AUTOBAHN / "run_fuzzingclient.sh"
LISTENING = re.compile(r"listening on (?P<host>\S+):(?P<port>\d+), backend (?P<backend>\S+)")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 30.0


def find_python27() -> str | None:
    """Where run_fuzzingclient.sh looks (its README): $AUTOBAHN_PYTHON2, pyenv, /usr."""
    candidates = []
    if os.environ.get("AUTOBAHN_PYTHON2"):
        candidates.append(os.environ["AUTOBAHN_PYTHON2"])
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted((str(p) for p in root.glob("versions/2.7*/bin/python2.7")),
                         reverse=True)
    candidates += ["/usr/bin/python2.7", "/usr/local/bin/python2.7"]
    found = shutil.which("python2.7")
    if found:
        candidates.append(found)
    for c in candidates:
        if os.access(c, os.X_OK):
            return c
    return None


@pytest.fixture(scope="session")
def autobahn_script() -> Path:
    if not SCRIPT.is_file():
        pytest.skip(f"the Autobahn runner is missing: {SCRIPT} does not exist")
    if shutil.which("bash") is None:
        pytest.skip("bash is needed to run the Autobahn script")
    if find_python27() is None:
        pytest.skip("no Python 2.7 interpreter for wstest (looked at $AUTOBAHN_PYTHON2, "
                    "$PYENV_ROOT/versions/2.7*/bin/python2.7, /usr/bin/python2.7, PATH); "
                    f"see {AUTOBAHN / 'README.md'}")
    return SCRIPT


@pytest.fixture(params=["io_uring", "epoll"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "io_uring":
        result = probe()
        if isinstance(result, RingUnavailable):
            pytest.skip(f"io_uring unavailable here: {result}")
    return name


@dataclass
class EchoServer:
    proc: subprocess.Popen[bytes]
    log: Path
    port: int
    backend: str

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def echo_server(backend: str, tmp_path: Path) -> Iterator[EchoServer]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGCAST_")}
    env.update(RINGCAST_SERVER_ECHO="true", RINGCAST_LIMITS_MAX_MESSAGE_SIZE="67108864")
    port = _free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ringcast", "serve", "--port", str(port),
             "--backend", backend],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env)
    server = EchoServer(proc, log, port, backend)
    deadline = time.monotonic() + START_TIMEOUT
    while not (m := LISTENING.search(server.stderr())):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"ringcast serve did not start:\n{server.stderr()}")
        time.sleep(0.02)
    assert m["backend"] == backend
    assert int(m["port"]) == port
    yield server
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"no exit within {STOP_TIMEOUT}s of SIGTERM:\n{server.stderr()}")
    assert rc == 0, f"exit code {rc} after SIGTERM:\n{server.stderr()}"
