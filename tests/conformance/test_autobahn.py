"""Conformance: the Autobahn|Testsuite fuzzing client, cases 1.* to 13.*, on both backends.

The acceptance: 0 FAILED, 0 NON-STRICT and 0 UNIMPLEMENTED, every closing handshake clean,
with the server in echo mode (the fuzzing client expects its own messages back) and its
default settings otherwise, compression (permessage-deflate) on. Cases 1.* to 11.*
(RFC 6455; the client offers no extension) and 12.*/13.* (RFC 7692: a thousand compressed
messages each, from 16 bytes to 128 KiB, under every offer the suite makes) run as two
tests, so a failure says which part broke.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.backends import BACKENDS
from tests.support.teardown import stop_all

from .conftest import ECHO_ENV, EchoServer

ROOT = Path(__file__).resolve().parents[2]
RFC6455_TIMEOUT = 900  # the first run installs wstest into /tmp/autobahn
DEFLATE_TIMEOUT = 3000  # 12.*/13.*: 216 cases, up to 512,000 frames each
SETUP_TIMEOUT = 300  # until the first deflate run is past wstest's installation


def _brief(cases: list[dict[str, object]]) -> str:
    return "\n".join(
        f"  {c.get('id')}: {c.get('behavior')}/{c.get('behaviorClose')} "
        f"close {c.get('remoteCloseCode')} - {c.get('description')!s:.100}"
        for c in cases
    )


def _command(script: Path, out: Path, port: int, *, timeout: int, options: list[str],
             cases: str) -> list[str]:
    return ["bash", str(script), "--json", str(out), "--path", "/autobahn",
            "--timeout", str(timeout), *options, "127.0.0.1", str(port), cases]


def _check(out: Path, output: str, server: EchoServer, expected: int) -> None:
    """Every case passed strictly, with a clean close (the summary the script wrote)."""
    assert out.exists(), f"no JSON summary from the Autobahn script:\n{output}"
    summary = json.loads(out.read_text())
    counts = summary["counts"]
    print(f"autobahn on {server.backend}: {counts} total {summary['total']} "
          f"in {summary.get('duration_s')}s")
    assert summary["status"] == "completed", output
    assert counts["FAILED"] == 0, (
        f"{counts}\nFAILED:\n{_brief(summary['failed'])}\n{server.stderr_text()[-3000:]}")
    assert counts["NON-STRICT"] == 0, f"{counts}\nNON-STRICT:\n{_brief(summary['non_strict'])}"
    assert counts["UNIMPLEMENTED"] == 0, counts
    assert summary["total"] >= expected, summary["total"]
    # Every closing handshake clean too (behaviorClose OK or INFORMATIONAL).
    assert not summary["close_issues"], _brief(summary["close_issues"])


@pytest.mark.slow
@pytest.mark.timeout(RFC6455_TIMEOUT + 60)
def test_fuzzingclient_rfc6455(autobahn_script: Path, echo_server: EchoServer,
                               tmp_path: Path) -> None:
    """Cases 1.* to 11.*: the client offers no extension."""
    out = tmp_path / "ab.json"
    cmd = _command(autobahn_script, out, echo_server.port, timeout=RFC6455_TIMEOUT - 60,
                   options=["--no-compression"], cases="*")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RFC6455_TIMEOUT,
                          check=False, cwd=ROOT)
    output = f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    _check(out, output, echo_server, 300)
    assert proc.returncode == 0, output


@dataclass
class DeflateRun:
    """The 12.*/13.* run against one backend's echo server, going on in the background."""

    server: EchoServer
    proc: subprocess.Popen[bytes]
    out: Path
    log: Path

    def output(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"exit {self.proc.returncode}\n{text[-6000:]}"


@pytest.fixture(scope="module")
def deflate_runs(autobahn_script: Path, io_uring_skip_reason: str | None,
                 tmp_path_factory: pytest.TempPathFactory,
                 request: pytest.FixtureRequest) -> Iterator[dict[str, DeflateRun]]:
    """12.*/13.* against every backend at once: each run is one wstest and one server,
    taking turns (a message and its echo), so two runs fill the two cores and take the
    wall time of one. The second starts once the first is past wstest's installation."""
    runs: dict[str, DeflateRun] = {}
    try:
        for backend in BACKENDS:
            if backend == "io_uring" and io_uring_skip_reason is not None:
                continue  # its test says why
            server = EchoServer.spawn(ECHO_ENV, backend=backend)
            server.wait_listening()
            where = tmp_path_factory.mktemp(f"deflate-{backend}")
            out, log = where / "ab.json", where / "run.log"
            cmd = _command(autobahn_script, out, server.port, timeout=DEFLATE_TIMEOUT - 60,
                           options=["--compression"], cases="12.*,13.*")
            with log.open("wb") as sink:
                proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
            runs[backend] = DeflateRun(server, proc, out, log)
            deadline = time.monotonic() + SETUP_TIMEOUT
            while b"run dir" not in log.read_bytes() and proc.poll() is None:
                assert time.monotonic() < deadline, f"wstest not set up:\n{log.read_text()}"
                time.sleep(0.5)
        yield runs
    finally:
        for run in runs.values():
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()
        stop_all([run.server for run in runs.values()], request)


@pytest.mark.slow
@pytest.mark.timeout(DEFLATE_TIMEOUT + 120)
def test_fuzzingclient_permessage_deflate(deflate_runs: dict[str, DeflateRun],
                                          backend: str) -> None:
    """Cases 12.* and 13.*: a thousand compressed messages each, 16 bytes to 128 KiB, in
    one frame or in fragments of 256 bytes up, under every offer the suite makes (window
    sizes 9 and 15, no context takeover asked or not, several offers at once)."""
    run = deflate_runs[backend]
    try:
        run.proc.wait(timeout=DEFLATE_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the Autobahn script did not end:\n{run.output()}")
    _check(run.out, run.output(), run.server, 216)
    assert run.proc.returncode == 0, run.output()
