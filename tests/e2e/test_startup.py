"""Start-up and shutdown of `ringcast serve`: the log lines, SIGTERM exit code."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta

from .conftest import StartServer
from .helpers import http, metrics

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


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

    def test_log_line_names_config_workers_and_cluster(
        self, start_server: StartServer, backend: str
    ) -> None:
        server = start_server(LIMITS_PING_INTERVAL=30)
        line = next(ln for ln in server.stderr_text().splitlines() if "listening on" in ln)
        # Overrides by name only (a value may be a secret), flags after the environment.
        assert line.endswith(f"({server.reason}); config: built-in defaults with "
                             "RINGCAST_LIMITS_PING_INTERVAL, RINGCAST_SHUTDOWN_LAME_DUCK, --port, "
                             "--backend; workers: 1; "
                             "cluster: none"), line

    def test_json_logs_carry_rfc3339_utc_times(self, start_server: StartServer) -> None:
        before = datetime.now(UTC)
        server = start_server(LOGGING_FORMAT="json")
        server.terminate()
        assert server.wait() == 0
        after = datetime.now(UTC)
        docs = [json.loads(line) for line in server.stderr_text().splitlines()]
        assert [d["msg"] for d in docs if d["msg"] == "stopped"], docs
        for doc in docs:
            assert RFC3339_UTC.fullmatch(doc["ts"]), doc
            when = datetime.fromisoformat(doc["ts"])
            # Milliseconds are truncated: a line may read up to 1 ms before `before`.
            assert before - timedelta(milliseconds=1) <= when <= after, (before, doc, after)

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

    def test_a_refusal_is_logged_at_info(self, start_server: StartServer) -> None:
        server = start_server(HTTP_PUBLISH_TOKEN="t" * 32)
        answer = http(server.port, "POST", "/publish/news", b"x")
        assert answer.status == 401
        deadline = time.monotonic() + 10
        while "refused connection" not in server.stderr_text():
            assert time.monotonic() < deadline, server.stderr_text()
            time.sleep(0.02)
        line = next(ln for ln in server.stderr_text().splitlines() if "refused connection" in ln)
        assert " INFO " in line and ": 401 missing_token " in line, line
        assert line.endswith("needs a token\""), line   # the client's explanation, quoted
        assert "t" * 32 not in server.stderr_text()

    def test_sigterm_exits_zero(self, start_server: StartServer) -> None:
        server = start_server()
        server.terminate()
        assert server.wait() == 0
        assert "stopped" in server.stderr_text()
