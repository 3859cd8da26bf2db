"""Start-up and shutdown of `ringcast serve`: the log line, SIGTERM exit code."""

from __future__ import annotations

from .conftest import StartServer
from .helpers import http, metrics


class TestStartup:
    def test_log_line_names_address_backend_and_reason(
        self, start_server: StartServer, backend: str
    ) -> None:
        server = start_server()
        assert server.host == "127.0.0.1"
        assert server.backend == backend
        if backend == "epoll":
            assert server.reason == "configured"
        else:
            assert server.reason.startswith("kernel "), server.reason
        line = next(ln for ln in server.stderr_text().splitlines() if "listening on" in ln)
        assert " INFO " in line, line
        assert f"127.0.0.1:{server.port}" in line

    def test_auto_backend_says_which_and_why(self, start_server: StartServer,
                                             io_uring_skip_reason: str | None) -> None:
        server = start_server(backend_arg=None)  # server.backend = "auto" (the default)
        if io_uring_skip_reason is None:
            assert server.backend == "io_uring"
            assert server.reason.startswith("kernel ")
        else:
            assert server.backend == "epoll"
            assert server.reason, "the fallback must say why io_uring is not used"
        assert http(server.port, "GET", "/healthz").status == 200

    def test_metrics_name_the_backend(self, start_server: StartServer, backend: str) -> None:
        server = start_server()
        m = metrics(server.port)
        assert m.value("ringcast_backend_info", backend=backend) == 1.0

    def test_sigterm_exits_zero(self, start_server: StartServer) -> None:
        server = start_server()
        server.terminate()
        assert server.wait() == 0
        assert "stopped" in server.stderr_text()
