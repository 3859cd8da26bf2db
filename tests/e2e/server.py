"""`ringcast serve` for the end-to-end tests: the shared process, plus where to connect."""

from __future__ import annotations

from tests.support import serverproc


class ServerProcess(serverproc.ServerProcess):
    """The shared `ServerProcess` (default timeouts), with the URL for WebSocket clients."""

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"
