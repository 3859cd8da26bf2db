"""README's `ringcast loadtest` examples, run as written but scaled down.

Each shell block of README.md with a `ringcast loadtest` command is run against a real
`ringcast serve` started with the block's `RINGCAST_*` assignments; the load test's own
options stay as written (`--storm`, `--processes`, `--json`, `--plot`, ...) except the
sizes, which shrink to what a test may spend: subscribers, messages, seconds. `$!` is the
server's pid. The run must pass (exit 0, "result PASS"), and what it promises to write
must exist.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import StartServer
from .readme import shell_blocks

URL = re.compile(r"ws://127\.0\.0\.1:\d+")

# Option -> the value a test uses instead (the README's values are for a real machine).
SCALED = {"--connections": "120", "--messages": "300", "--duration": "4"}
STORM_AT = 1.5        # seconds into the run, so that the storm happens within --duration


@dataclass(frozen=True)
class Example:
    where: str                  # README.md:<line>
    server_env: dict[str, str]  # RINGCAST_* assignments before `ringcast serve`, unprefixed
    argv: list[str]             # the loadtest's arguments after `ringcast loadtest`


def loadtest_examples() -> list[Example]:
    found = []
    for block in shell_blocks():
        env: dict[str, str] = {}
        for command in block:
            words = shlex.split(command.text, comments=True)
            if "ringcast" in words and "serve" in words:
                env = {k.removeprefix("RINGCAST_"): v for k, _, v in
                       (w.partition("=") for w in words[:words.index("ringcast")])}
            elif words[:2] == ["ringcast", "loadtest"]:
                found.append(Example(command.where, env, words[2:]))
    return found


EXAMPLES = loadtest_examples()


def test_readme_has_the_loadtest_examples() -> None:
    # Guards the parser: the first measurement, the storm and the resume storm.
    assert len(EXAMPLES) >= 3, EXAMPLES
    assert any("--storm" in e.argv for e in EXAMPLES)
    assert any("--resume-storm" in e.argv for e in EXAMPLES)


def _scaled(argv: list[str], *, port: int, pid: int, tmp: Path) -> list[str]:
    out = []
    for i, word in enumerate(argv):
        before = argv[i - 1] if i else ""
        if before in SCALED:
            value = SCALED[before]
        elif before == "--storm":
            value = f"{word.partition('@')[0]}@{STORM_AT}"
        elif before == "--processes" and word == "0":
            value = "2"          # "as many as needed" is one here: make it a team anyway
        elif before in ("--json", "--plot"):
            value = str(tmp / word)
        elif word == "$!":
            value = str(pid)
        else:
            value = word
        out.append(URL.sub(f"ws://127.0.0.1:{port}", value))
    return out


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.where for e in EXAMPLES])
def test_readme_loadtest_runs(example: Example, start_server: StartServer,
                              tmp_path: Path) -> None:
    server = start_server(**example.server_env)
    argv = _scaled(example.argv, port=server.port, pid=server.pid, tmp=tmp_path)
    res = subprocess.run([sys.executable, "-m", "ringcast", "loadtest", *argv],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0 and "result     PASS" in res.stdout, res.stdout + res.stderr
    if "--storm" in argv:
        assert re.search(r"^storm +\d+ subscribers dropped", res.stdout, re.M), res.stdout
    if "--resume-storm" in argv:
        assert re.search(r"^faults +lost 0, duplicated 0, out of order 0, resyncs 0,",
                         res.stdout, re.M), res.stdout
    for option in ("--json", "--plot"):
        if option in argv:
            assert Path(argv[argv.index(option) + 1]).stat().st_size > 0
