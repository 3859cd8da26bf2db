"""Conformance fixtures: an echo-mode `ringcast serve` per backend, and the Autobahn script.

Built on tests.support alone (not on another suite), so this directory can run alone.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.backends import backend, io_uring_skip_reason
from tests.support.serverproc import ServerProcess
from tests.support.teardown import pytest_runtest_makereport, stop_all

# pytest finds fixtures and hooks by name in this module; these come from tests.support.
__all__ = ["backend", "io_uring_skip_reason", "pytest_runtest_makereport"]

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
AUTOBAHN = SHARED / "tools" / "autobahn"
SCRIPT = AUTOBAHN / "run_fuzzingclient.sh"


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


class EchoServer(ServerProcess):
    """`ringcast serve` in echo mode (what Autobahn's echo tests need)."""

    STOP_TIMEOUT = 30.0


# Cases 9.* send messages of up to 16 MiB, and 9.3/9.4 cut 4 MiB into 64-byte fragments:
# 65,536 frames, far past the defaults a real client needs. Everything else (compression
# included) is the default.
ECHO_ENV = {"SERVER_ECHO": "true", "LIMITS_MAX_MESSAGE_SIZE": 67108864,
            "LIMITS_MAX_MESSAGE_FRAMES": 100_000}


@pytest.fixture
def echo_server(backend: str, request: pytest.FixtureRequest) -> Iterator[EchoServer]:
    server = EchoServer.spawn(ECHO_ENV, backend=backend)
    server.wait_listening()
    assert server.backend == backend, server.stderr_text()
    yield server
    stop_all([server], request)
