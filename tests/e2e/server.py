"""`ringcast serve` as a child process: start on a free port, read its log, stop it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT = 10.0
STOP_TIMEOUT = 15.0
LISTENING = re.compile(
    r"listening on (?P<host>\S+):(?P<port>\d+), backend (?P<backend>\S+) \((?P<reason>[^)]*)\)"
)
# server.port must be 1..65535 (0 is refused by the config), so the test picks a
# free port itself and retries when another process took it in between.
START_ATTEMPTS = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    args: list[str]
    stderr_path: Path
    host: str = ""
    port: int = 0
    backend: str = ""
    reason: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, backend: str | None, env: dict[str, str]) -> ServerProcess:
        last = ""
        for _ in range(START_ATTEMPTS):
            port = free_port()
            args = [sys.executable, "-m", "ringcast", "serve", "--port", str(port)]
            if backend is not None:
                args += ["--backend", backend]
            full_env = {k: v for k, v in os.environ.items() if not k.startswith("RINGCAST_")}
            full_env.update({f"RINGCAST_{k}": v for k, v in env.items()})
            fd, name = tempfile.mkstemp(prefix="ringcast-e2e-", suffix=".log")
            with os.fdopen(fd, "wb") as stderr:
                proc = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                    env=full_env,
                )
            server = cls(proc, args, Path(name), env=env)
            match = server._wait_listening()
            if match is not None:
                server.host = match["host"]
                server.port = int(match["port"])
                server.backend = match["backend"]
                server.reason = match["reason"]
                assert server.port == port, server.stderr_text()
                return server
            last = server.stderr_text()
            server.cleanup()
            if "cannot listen" not in last:
                break
        raise AssertionError(f"ringcast serve did not start:\n{last}")

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

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS line")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"server did not exit within {timeout}s of SIGTERM:\n{self.stderr_text()}"
            ) from None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | str:
        """SIGTERM, then the exit code (or why there is none)."""
        self.terminate()
        try:
            return self.wait(timeout)
        except AssertionError:
            return f"no exit within {timeout}s of SIGTERM (killed)"

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr_path.unlink(missing_ok=True)
