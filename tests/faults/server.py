"""`ringcast serve` for the fault tests, and what can be read about it.

Everything observable about the server comes from outside, as an operator would see it:
its log (stderr, kept in a file), ``/proc/<pid>`` (RSS, open fds) and ``/metrics``.
"""

from __future__ import annotations

from typing import ClassVar

from tests.support import serverproc


class ServerProcess(serverproc.ServerProcess):
    """The shared `ServerProcess`, with longer timeouts (these tests load the machine) and
    checks that the server survived."""

    START_TIMEOUT: ClassVar[float] = 15.0
    STOP_TIMEOUT: ClassVar[float] = 25.0

    def assert_alive(self) -> None:
        rc = self.proc.poll()
        assert rc is None, f"the server died with exit code {rc}:\n{self.stderr_tail()}"

    def stderr_tail(self, lines: int = 60) -> str:
        return "\n".join(self.stderr_text().splitlines()[-lines:])
