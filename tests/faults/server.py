"""`ringcast serve` as a child process for the fault tests, and what can be read about it.

Everything observable about the server comes from outside, as an operator would see it:
its log (stderr, kept in a file), ``/proc/<pid>`` (RSS, open fds) and ``/metrics``.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT = 15.0
STOP_TIMEOUT = 25.0
LISTENING = re.compile(
    r"listening on (?P<host>\S+):(?P<port>\d+), backend (?P<backend>\S+) \((?P<reason>[^)]*)\)"
)


def limit_nofile(n: int) -> Callable[[], None]:
    """A ``preexec_fn`` that lowers RLIMIT_NOFILE (soft and hard) of the child to ``n``."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return apply


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    args: list[str]
    stderr_path: Path
    env: dict[str, str] = field(default_factory=dict)
    host: str = ""
    port: int = 0
    backend: str = ""
    reason: str = ""

    @classmethod
    def start(cls, backend: str, env: dict[str, str], nofile: int | None = None) -> ServerProcess:
        """Start `ringcast serve --port 0` and read the port it got from its
        ``listening on HOST:PORT, backend NAME (REASON)`` line."""
        args = [sys.executable, "-m", "ringcast", "serve", "--port", "0", "--backend", backend]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("RINGCAST_")}
        full_env.update({f"RINGCAST_{k}": v for k, v in env.items()})
        fd, name = tempfile.mkstemp(prefix="ringcast-faults-", suffix=".log")
        with os.fdopen(fd, "wb") as stderr:
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                env=full_env,
                preexec_fn=None if nofile is None else limit_nofile(nofile),  # noqa: PLW1509
            )
        server = cls(proc, args, Path(name), env=env)
        match = server._wait_listening()
        if match is None:
            text = server.stderr_text()
            server.cleanup()
            raise AssertionError(f"ringcast serve exited before listening:\n{text}")
        server.host = match["host"]
        server.port = int(match["port"])
        server.backend = match["backend"]
        server.reason = match["reason"]
        assert server.port != 0, match.group(0)
        return server

    def _wait_listening(self) -> re.Match[str] | None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            match = LISTENING.search(self.stderr_text())
            if match is not None:
                return match
            if self.proc.poll() is not None:
                return None
            time.sleep(0.02)
        self.proc.kill()
        self.proc.wait()
        raise AssertionError(
            f"no 'listening on' line within {START_TIMEOUT}s:\n{self.stderr_text()}"
        )

    # -- what can be seen from outside ---------------------------------------------

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def assert_alive(self) -> None:
        rc = self.proc.poll()
        assert rc is None, f"the server died with exit code {rc}:\n{self.stderr_tail()}"

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self, lines: int = 60) -> str:
        return "\n".join(self.stderr_text().splitlines()[-lines:])

    def status(self) -> dict[str, str]:
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            out[key] = value.strip()
        return out

    def rss_bytes(self) -> int:
        return int(self.status()["VmRSS"].split()[0]) * 1024

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    # -- stopping --------------------------------------------------------------------

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | str:
        """SIGTERM, then the exit code (or why there is none)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return f"no exit within {timeout}s of SIGTERM (killed)"

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr_path.unlink(missing_ok=True)
