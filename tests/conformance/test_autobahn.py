"""RFC 6455 conformance: the Autobahn|Testsuite fuzzing client, cases 1.* to 11.*.

The issue's acceptance: 0 FAILED and 0 NON-STRICT on both backends, with the
server in echo mode (the fuzzing client expects its own messages back).
12.*/13.* (permessage-deflate) are left out by the script, since ringcast
declines compression.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .conftest import EchoServer

RUN_TIMEOUT = 900  # the first run installs wstest into /tmp/autobahn


def _brief(cases: list[dict[str, object]]) -> str:
    return "\n".join(
        f"  {c.get('id')}: {c.get('behavior')}/{c.get('behaviorClose')} "
        f"close {c.get('remoteCloseCode')} - {c.get('description')!s:.100}"
        for c in cases
    )


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_fuzzingclient(autobahn_script: Path, echo_server: EchoServer, tmp_path: Path) -> None:
    out = tmp_path / "ab.json"
    cmd = ["bash", str(autobahn_script), "--json", str(out), "--path", "/autobahn",
           "127.0.0.1", str(echo_server.port)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False,
        cwd=Path(__file__).resolve().parents[2])
    output = f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert out.exists(), f"no JSON summary from the Autobahn script:\n{output}"
    summary = json.loads(out.read_text())
    counts = summary["counts"]
    print(f"autobahn on {echo_server.backend}: {counts} total {summary['total']} "
          f"in {summary.get('duration_s')}s")
    assert summary["status"] == "completed", output
    assert counts["FAILED"] == 0, (
        f"{counts}\nFAILED:\n{_brief(summary['failed'])}\n{echo_server.stderr_text()[-3000:]}")
    assert counts["NON-STRICT"] == 0, f"{counts}\nNON-STRICT:\n{_brief(summary['non_strict'])}"
    assert counts["UNIMPLEMENTED"] == 0, counts
    assert summary["total"] >= 300, summary["total"]
    # Every closing handshake clean too (behaviorClose OK or INFORMATIONAL).
    assert not summary["close_issues"], _brief(summary["close_issues"])
    assert proc.returncode == 0, output
