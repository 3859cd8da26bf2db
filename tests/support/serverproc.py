"""`ringcast serve` as a child process, seen from outside as an operator would see it.

The server starts with ``--port 0``; everything known about it comes from its log
(stderr, kept in a file), ``/proc/<pid>`` and the network. A suite subclasses
`ServerProcess` for its own timeouts and accessors.
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self

# The start-up line of a server (or of each worker of several).
LISTENING = re.compile(
    r"listening on (?P<host>\S+):(?P<port>\d+), backend (?P<backend>\S+) \((?P<reason>[^)]*)\)"
)
POLL_INTERVAL = 0.02


def _limit_nofile(n: int) -> Callable[[], None]:
    """A ``preexec_fn`` that lowers RLIMIT_NOFILE (soft and hard) of the child to ``n``."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return apply


@dataclass
class ServerProcess:
    """One `ringcast serve` child process and its log.

    ``host``, ``port``, ``backend`` and ``reason`` come from the
    ``listening on HOST:PORT, backend NAME (REASON)`` line once `wait_listening`
    returned; ``env`` holds the overrides it was started with, without ``RINGCAST_``.
    """

    START_TIMEOUT: ClassVar[float] = 10.0
    STOP_TIMEOUT: ClassVar[float] = 15.0
    # Says what was missing when START_TIMEOUT passed.
    NOT_LISTENING: ClassVar[str] = "no 'listening on' line"

    proc: subprocess.Popen[bytes]
    args: list[str]
    stderr_path: Path
    env: dict[str, str] = field(default_factory=dict)
    host: str = ""
    port: int = 0
    backend: str = ""
    reason: str = ""

    @classmethod
    def spawn(cls, env: Mapping[str, object], *, backend: str | None = None,
              config: str | None = None, nofile: int | None = None,
              prefix: Sequence[str] = (), port: int | None = 0) -> Self:
        """Start ``[prefix] python -m ringcast serve --port <port>``; `wait_listening` waits
        for it.

        ``env``: overrides without the ``RINGCAST_`` prefix (``{"LIMITS_PING_INTERVAL": 0.5}``,
        values through `str`); the child inherits none of this process's own ``RINGCAST_*``
        variables, so only these apply (and ``SHUTDOWN_LAME_DUCK=0`` unless given).
        ``backend``, ``config``: ``--backend``, ``--config`` when given. ``nofile``: the
        child's RLIMIT_NOFILE. ``prefix``: a command that execs the server (``taskset -c
        0``), so that ``pid`` is still the server's. ``port``: 0 (the default) lets the
        kernel pick a free one; None leaves ``--port`` out.
        """
        # No lame duck unless a test asks: every teardown is a SIGTERM, and each would wait
        # it out (tests/e2e/test_lame_duck.py tests it).
        overrides = {"SHUTDOWN_LAME_DUCK": "0", **{key: str(value) for key, value in env.items()}}
        args = [*prefix, sys.executable, "-m", "ringcast", "serve"]
        if port is not None:
            args += ["--port", str(port)]
        if backend is not None:
            args += ["--backend", backend]
        if config is not None:
            args += ["--config", config]
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("RINGCAST_")}
        child_env.update({f"RINGCAST_{key}": value for key, value in overrides.items()})
        fd, name = tempfile.mkstemp(prefix="ringcast-serve-", suffix=".log")
        with os.fdopen(fd, "wb") as stderr:
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                env=child_env,
                preexec_fn=None if nofile is None else _limit_nofile(nofile),  # noqa: PLW1509
            )
        return cls(proc, args, Path(name), env=overrides)

    def wait_listening(self) -> None:
        """Return once the log says the server listens.

        When it exits first, or START_TIMEOUT passes, or the log contradicts itself, the
        process is killed, its log removed, and AssertionError raised with the log.
        """
        try:
            deadline = time.monotonic() + self.START_TIMEOUT
            while not self._listening():
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"ringcast serve exited before listening:\n{self.stderr_text()}")
                if time.monotonic() >= deadline:
                    raise AssertionError(f"{self.NOT_LISTENING} within {self.START_TIMEOUT}s:\n"
                                         f"{self.stderr_text()}")
                time.sleep(POLL_INTERVAL)
        except BaseException:
            self.cleanup()
            raise

    def _listening(self) -> bool:
        """Whether the log has the start-up line; if so, its fields are taken."""
        match = LISTENING.search(self.stderr_text())
        if match is not None:
            self._take(match)
        return match is not None

    def _take(self, match: re.Match[str]) -> None:
        """Take host, port, backend and reason from a `LISTENING` match."""
        self.host = match["host"]
        self.port = int(match["port"])
        self.backend = match["backend"]
        self.reason = match["reason"]
        assert self.port != 0, match.group(0)

    # -- what can be seen from outside -------------------------------------------------

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_text(self) -> str:
        """The log so far ("" once `cleanup` removed it)."""
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS line")

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    # -- stopping ----------------------------------------------------------------------

    def terminate(self) -> None:
        """SIGTERM, unless it has exited already."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> int:
        """The exit code; after ``timeout`` (STOP_TIMEOUT) the process is killed and
        AssertionError raised with its log."""
        timeout = self.STOP_TIMEOUT if timeout is None else timeout
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"ringcast serve did not exit within {timeout}s:\n"
                                 f"{self.stderr_text()}") from None

    def stop(self, timeout: float | None = None) -> int | str:
        """SIGTERM, then the exit code, or why there is none (killed after ``timeout``)."""
        timeout = self.STOP_TIMEOUT if timeout is None else timeout
        self.terminate()
        try:
            return self.wait(timeout)
        except AssertionError:
            return f"no exit within {timeout}s of SIGTERM (killed)"

    def cleanup(self) -> None:
        """Kill the process if it still runs and remove its log."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr_path.unlink(missing_ok=True)
