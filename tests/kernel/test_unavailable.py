"""When io_uring is blocked: the error a user sees, and the fallback to epoll.

A seccomp filter installed in a subprocess (tests/kernel/seccomp_block.py)
makes io_uring_setup fail the way container runtimes do: EPERM (Docker 25+)
or ENOSYS (podman). Nothing machine-wide changes.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
BLOCK = str(HERE / "seccomp_block.py")

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(platform.machine() not in ("x86_64", "aarch64"),
                       reason=f"the seccomp filter is written for x86_64/aarch64, "
                              f"not {platform.machine()}"),
]

PROBE = (
    "from ringcast.ringio import probe, RingUnavailable\n"
    "r = probe()\n"
    "assert isinstance(r, RingUnavailable), r\n"
    "print(r.errno); print(r.cause); print(r.remedy)\n"
)


@pytest.mark.parametrize("err", ["EPERM", "ENOSYS"])
def test_blocked_setup_raises_ring_unavailable_naming_seccomp(err: str) -> None:
    out = subprocess.run([sys.executable, BLOCK, err, sys.executable, "-c", PROBE],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    code, cause, remedy = out.stdout.splitlines()[:3]
    assert int(code) == getattr(__import__("errno"), err)
    assert "seccomp" in cause and "io_uring_setup" in cause
    assert "--security-opt seccomp=" in remedy and "epoll" in remedy


def _serve(err: str, backend: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, BLOCK, err, sys.executable, "-m", "ringcast", "serve",
         "--port", "0", "--backend", backend],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "RINGCAST_SERVER_WORKERS": "1"})


def test_auto_backend_falls_back_to_epoll_and_logs_why() -> None:
    with _serve("EPERM", "auto") as proc:
        assert proc.stderr is not None
        try:
            line = proc.stderr.readline()
        finally:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert "backend epoll" in line, line
    assert "io_uring unavailable" in line and "seccomp" in line, line


def test_strict_io_uring_backend_refuses_to_start() -> None:
    with _serve("ENOSYS", "io_uring") as proc:
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert proc.wait(timeout=20) == 1
    assert "io_uring unavailable" in err and 'set it to "auto"' in err, err
