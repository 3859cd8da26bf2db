"""The real image under rootful podman: build it on a locally made base, run it with the
engine's default seccomp profile (epoll, and the log says io_uring is blocked by seccomp) and
with the derived io_uring profile (io_uring), drive WebSocket traffic from the host, check the
HEALTHCHECK, stop it with SIGTERM (exit 0 after a drain); then the systemd unit under a real
systemd (PID 1 of a container).

Machine settings as in the workplace's container recipe: runc (Debian's crun refuses hybrid
cgroups), ulimits within the hard limits, host networking so all traffic stays on loopback.
"""

from __future__ import annotations

import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from ringcast.ringio import RingUnavailable, probe

from .helpers import (
    REPO,
    close_code,
    free_port,
    http_request,
    missing,
    publish,
    pubsub_round_trip,
    require_tool,
    subscribe,
    wait_healthy,
)

pytestmark = pytest.mark.slow

BASE_TAG = "localhost/python:3.11-slim-bookworm"
IMAGE = "localhost/ringcast:deploy-test"
SYSTEMD_IMAGE = "localhost/ringcast:deploy-test-systemd"
PREFIX = "ringcast-deploy-test"


@dataclass
class Podman:
    exe: str
    env: dict[str, str]
    work: Path

    def __call__(self, *args: str, timeout: float = 120, check: bool = True,
                 ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([self.exe, *args], env=self.env, capture_output=True, text=True,
                             timeout=timeout, check=False)
        if check and res.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {res.returncode}:\n"
                                 f"{res.stdout[-3000:]}{res.stderr[-3000:]}")
        return res

    def logs(self, name: str) -> str:
        res = self("logs", name, check=False)
        return res.stdout + res.stderr

    def running(self, name: str) -> bool:
        res = self("inspect", "--format", "{{.State.Running}}", name, check=False)
        return res.stdout.strip() == "true"

    def remove(self, name: str) -> None:
        # one at a time: podman 4.3's `rm -f a b` can leave b running when a does not exist
        self("rm", "-f", "-t", "0", name, check=False, timeout=60)


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    exe = require_tool("podman", "apt-get install podman runc debootstrap")
    require_tool("runc", "apt-get install runc; Debian's crun refuses this host's cgroups")
    if os.geteuid() != 0:
        missing("these tests use rootful podman (run as root)")
    work = tmp_path_factory.mktemp("podman")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = 1048576 if hard == resource.RLIM_INFINITY else hard
    conf = work / "containers.conf"
    conf.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc=32768:32768"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n')
    return Podman(exe, {**os.environ, "CONTAINERS_CONF": str(conf)}, work)


def _timed(what: str, t0: float) -> None:
    print(f"{what}: {time.monotonic() - t0:.1f}s", file=sys.stderr)


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    if podman("image", "exists", BASE_TAG, check=False).returncode != 0:
        require_tool("debootstrap", "apt-get install debootstrap; it makes the local base image")
        t0 = time.monotonic()
        res = subprocess.run(["sh", str(REPO / "tests/deploy/mkbase.sh"), BASE_TAG,
                              str(podman.work / "rootfs")],
                             env=podman.env, capture_output=True, text=True, timeout=900,
                             check=False)
        assert res.returncode == 0, f"mkbase.sh failed:\n{res.stdout}{res.stderr}"
        _timed("local base image", t0)
    t0 = time.monotonic()
    podman("build", "--pull=never", "--format", "docker", "--build-arg", f"BASE={BASE_TAG}",
           "-t", IMAGE, str(REPO), timeout=1200)
    _timed("image build", t0)
    return IMAGE


@pytest.fixture(scope="module")
def io_uring_profile(podman: Podman) -> Path:
    out = podman.work / "seccomp-io_uring.json"
    res = subprocess.run([sys.executable, str(REPO / "deploy/seccomp/make-profile.py"), str(out)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    return out


@pytest.fixture(scope="module")
def host_io_uring() -> None:
    result = probe()
    if isinstance(result, RingUnavailable):
        pytest.skip(f"io_uring is unavailable on this host itself: {result}")


@contextmanager
def container(podman: Podman, name: str, *run_args: str) -> Iterator[str]:
    podman.remove(name)
    podman("run", "-d", "--replace", "--name", name, "--network=host", *run_args, timeout=120)
    try:
        yield name
    finally:
        podman.remove(name)


def drain_on_sigterm(podman: Podman, name: str, port: int) -> str:
    """A message accepted before `podman stop` reaches the subscriber, then close 1001, exit 0."""
    with subscribe(port, "drain") as ws:
        deadline = time.monotonic() + 5
        while publish(port, "drain", b"warm-up").get("subscribers") != 1:
            assert time.monotonic() < deadline, "the subscriber never counted"
            time.sleep(0.05)
        assert publish(port, "drain", b"last words")["subscribers"] == 1
        t0 = time.monotonic()
        podman("stop", "-t", "30", name, timeout=60)
        took = time.monotonic() - t0
        got, code = close_code(ws)
    assert "last words" in got, got
    assert code == 1001, f"close code {code}"
    exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    logs = podman.logs(name)
    assert exit_code == "0", f"exit code {exit_code} after {took:.1f}s:\n{logs}"
    assert "draining" in logs and "stopped" in logs, logs
    return logs


def serve_and_check(podman: Podman, name: str, port: int) -> str:
    wait_healthy(port, 60, lambda: podman.running(name), lambda: podman.logs(name))
    pubsub_round_trip(port)
    hc = podman("healthcheck", "run", name, check=False)
    assert hc.returncode == 0, f"HEALTHCHECK failed: {hc.stdout}{hc.stderr}"
    logs = podman.logs(name)
    return logs + drain_on_sigterm(podman, name, port)


def test_image_contents(podman: Podman, image: str) -> None:
    script = (
        "set -e; id -u; "
        "if command -v gcc cc; then echo COMPILER-PRESENT; fi; "
        "dpkg-query -W -f='${Status}\\n' liburing2; "
        "if dpkg-query -W liburing-dev 2>/dev/null; then echo DEV-PRESENT; fi; "
        "python -c 'import ringcast, ringcast.ringio._ringio as m; print(ringcast.__file__); "
        "print(m.__file__)'; ringcast version")
    out = podman("run", "--rm", "--entrypoint", "/bin/sh", image, "-c", script).stdout
    lines = out.splitlines()
    assert lines[0] == "10001", out
    assert "COMPILER-PRESENT" not in out and "DEV-PRESENT" not in out, out
    assert "install ok installed" in out
    assert re.search(r"^/opt/venv/lib/python3\.\d+/site-packages/ringcast/__init__\.py$", out,
                     re.M), out
    assert re.search(r"/site-packages/ringcast/ringio/_ringio\.\S+\.so$", out, re.M), out
    assert lines[-1].startswith("ringcast "), out


def test_entrypoint_takes_ringcast_arguments_a_ringcast_command_or_any_command(
        podman: Podman, image: str) -> None:
    version = podman("run", "--rm", image, "ringcast", "--version").stdout
    assert re.fullmatch(r"ringcast \S+\n", version), version
    for args in (["--version"], ["version"]):
        assert podman("run", "--rm", image, *args).stdout == version, args
    assert podman("run", "--rm", image, "sh", "-c", "echo $((6 * 7))").stdout == "42\n"


def test_default_seccomp_falls_back_to_epoll(podman: Podman, image: str) -> None:
    port = free_port()
    # A config file mounted where the image looks for one, but not passed to the server: the
    # health check must ask the port the server was given, not the file's.
    unused = podman.work / "unused.toml"
    unused.write_text(f"[server]\nport = {free_port()}\n")
    unused.chmod(0o644)
    with container(podman, f"{PREFIX}-epoll", "-e", "RINGCAST_SERVER_HOST=127.0.0.1",
                   "-e", f"RINGCAST_SERVER_PORT={port}",
                   "-v", f"{unused}:/etc/ringcast/ringcast.toml:ro", image) as name:
        logs = serve_and_check(podman, name, port)
    line = next((ln for ln in logs.splitlines() if "listening on" in ln), "")
    assert f"127.0.0.1:{port}, backend epoll" in line, logs
    assert re.search(r"io_uring_setup is blocked by .*seccomp", line), line
    assert "--security-opt seccomp=" in line, line  # how to enable it


def readme_docker_run(work: Path, image: str) -> list[str]:
    """The options and command of README's `docker run` with a mounted config, as this test
    runs it: ``$PWD`` is ``work`` (where the test puts ``ringcast.toml`` and the seccomp
    profile, under README's names), the image is ``image``, and ``-p 8080:8080`` goes: the
    test runs on the host's network, on the port its config file sets."""
    text = (REPO / "README.md").read_text()
    (line,) = [" ".join(part.strip().removesuffix("\\") for part in run.split("\n"))
               for run in re.findall(r"^docker run (?:.*\\\n)*.*$", text, re.M)
               if "--config" in run]
    args = shlex.split(line.replace("$PWD", str(work)))
    assert args[:2] == ["docker", "run"], line
    args = args[2:]
    published = args.index("-p")
    assert args[published + 1] == "8080:8080", line
    del args[published:published + 2]
    args[args.index("ringcast")] = image
    return args


def test_io_uring_profile_and_mounted_config_as_readme_runs_it(
    podman: Podman, image: str, io_uring_profile: Path, host_io_uring: None,
) -> None:
    port = free_port()
    config = podman.work / "ringcast.toml"
    config.write_text(f"[server]\nport = {port}\n\n[shutdown]\ndrain_timeout = 5.0\n")
    config.chmod(0o644)
    assert io_uring_profile == podman.work / "seccomp-io_uring.json"   # README's name
    run_args = readme_docker_run(podman.work, image)
    assert run_args[-3:] == ["serve", "--config", "/etc/ringcast/ringcast.toml"], run_args
    with container(podman, f"{PREFIX}-uring", "-e", "RINGCAST_SERVER_HOST=127.0.0.1",
                   *run_args) as name:
        logs = serve_and_check(podman, name, port)
    line = next((ln for ln in logs.splitlines() if "listening on" in ln), "")
    assert f"127.0.0.1:{port}, backend io_uring" in line, logs
    assert "config: /etc/ringcast/ringcast.toml with RINGCAST_SERVER_HOST;" in line, line
    assert "up to 5.0s" in logs  # the mounted file's drain_timeout was used


# -- the systemd unit under systemd ------------------------------------------------------------

SYSTEMD_DOCKERFILE = """\
ARG APP
FROM ${APP}
USER 0
RUN apt-get update \\
 && apt-get install -y --no-install-recommends systemd systemd-sysv dbus procps \\
 && rm -rf /var/lib/apt/lists/*
# ExecReload runs /bin/kill (procps); ExecStart /opt/ringcast/bin/ringcast (venv: /opt/venv)
RUN ln -s /opt/venv /opt/ringcast
COPY ringcast.service /etc/systemd/system/ringcast.service
# Container artifact, not the unit's: with podman's masked /proc paths, ProtectProc= together
# with PrivateUsers= fails with 217/USER (systemd issue 29656). Real hosts keep "invisible".
COPY container.conf /etc/systemd/system/ringcast.service.d/container.conf
COPY ringcast.toml /etc/ringcast/ringcast.toml
RUN chmod 0644 /etc/ringcast/ringcast.toml && systemctl enable ringcast.service
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/sbin/init"]
CMD []
"""


def systemctl(podman: Podman, name: str, *args: str, check: bool = True) -> str:
    res = podman("exec", name, "systemctl", "--no-pager", *args, check=False, timeout=90)
    if check and res.returncode != 0:
        journal = podman("exec", name, "journalctl", "--no-pager", "-n", "40", "-o", "cat",
                         check=False).stdout
        raise AssertionError(f"systemctl {' '.join(args)} exited {res.returncode}: "
                             f"{res.stdout}{res.stderr}\njournal:\n{journal}")
    return res.stdout.strip()


def wait_for(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.5)


def wait_workers_linked(port: int, count: int, timeout: float) -> None:
    """Until every worker has answered /healthz with all its peer links up.

    READY=1 may come before the workers have linked, and a publish reaching one worker before
    its link to another is up does not reach that other worker's subscribers.
    """
    linked: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(linked) < count:
        assert time.monotonic() < deadline, f"only workers {sorted(linked)} reported all links"
        try:
            status, body = http_request(port, "GET", "/healthz", timeout=2.0)
        except OSError:
            continue
        text = body.decode(errors="replace")
        worker = re.search(r"^worker: (\d+)$", text, re.M)
        if status == 200 and worker and f"workers linked: {count}/{count}" in text:
            linked.add(worker.group(1))
        else:
            time.sleep(0.05)


def test_systemd_unit_in_a_container(
    podman: Podman, image: str, io_uring_profile: Path, host_io_uring: None,
) -> None:
    # Type=notify: the unit turns active only on the server's READY=1 (test_sdnotify checks
    # that it sends one without systemd).
    ctx = podman.work / "systemd"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(SYSTEMD_DOCKERFILE)
    shutil.copy(REPO / "deploy" / "ringcast.service", ctx / "ringcast.service")
    shutil.copy(REPO / "deploy" / "ringcast.toml", ctx / "ringcast.toml")
    (ctx / "container.conf").write_text("[Service]\nProtectProc=default\n")
    t0 = time.monotonic()
    podman("build", "--pull=never", "--build-arg", f"APP={image}", "-t", SYSTEMD_IMAGE,
           str(ctx), timeout=900)
    _timed("systemd image build", t0)
    port = free_port()
    env_file = podman.work / "ringcast.env"
    env_file.write_text(f"RINGCAST_SERVER_HOST=127.0.0.1\nRINGCAST_SERVER_PORT={port}\n")
    with container(podman, f"{PREFIX}-systemd", "--systemd=always", "--cap-add", "SYS_ADMIN",
                   "--security-opt", f"seccomp={io_uring_profile}",
                   "-v", f"{env_file}:/etc/ringcast/ringcast.env:ro", SYSTEMD_IMAGE) as name:
        state = ""

        def booted() -> bool:
            nonlocal state
            res = podman("exec", name, "timeout", "30", "systemctl", "is-system-running",
                         "--wait", check=False, timeout=60)
            state = res.stdout.strip()
            return state in ("running", "degraded")

        wait_for(booted, 90, "systemd to boot")
        assert state == "running", systemctl(podman, name, "--failed", check=False)

        def journal() -> str:
            return podman("exec", name, "journalctl", "-u", "ringcast", "--no-pager",
                          "-o", "cat", check=False).stdout

        assert systemctl(podman, name, "is-active", "ringcast", check=False) == "active", \
            journal()
        assert "backend io_uring" in journal()
        wait_healthy(port, 30, lambda: podman.running(name), journal)
        pubsub_round_trip(port)

        systemctl(podman, name, "reload", "ringcast")
        assert systemctl(podman, name, "is-active", "ringcast", check=False) == "active"
        pubsub_round_trip(port)

        # Restart=on-failure brings a killed server back
        main_pid = systemctl(podman, name, "show", "-p", "MainPID", "--value", "ringcast")
        podman("exec", name, "kill", "-KILL", main_pid)
        wait_for(lambda: systemctl(podman, name, "show", "-p", "NRestarts", "--value",
                                   "ringcast") == "1"
                 and systemctl(podman, name, "is-active", "ringcast", check=False) == "active",
                 30, "the restart after SIGKILL")
        wait_healthy(port, 30, lambda: podman.running(name), journal)
        pubsub_round_trip(port)

        def stopped_cleanly() -> None:
            systemctl(podman, name, "stop", "ringcast")
            props = systemctl(podman, name, "show", "-p", "Result,ExecMainStatus,ActiveState",
                              "ringcast")
            assert sorted(props.splitlines()) == [
                "ActiveState=inactive", "ExecMainStatus=0", "Result=success"], props + journal()

        stopped_cleanly()

        # Two workers: READY=1 from the supervisor, SIGTERM forwarded (KillMode=mixed).
        # The env file is bind-mounted: rewriting it in place changes what the unit reads.
        with env_file.open("a") as f:
            f.write("RINGCAST_SERVER_WORKERS=2\n")
        systemctl(podman, name, "start", "ringcast")
        status = systemctl(podman, name, "show", "-p", "StatusText", "--value", "ringcast")
        assert "2 workers" in status, status + journal()
        wait_healthy(port, 30, lambda: podman.running(name), journal)
        wait_workers_linked(port, 2, 30)
        pubsub_round_trip(port, one_worker=False)
        systemctl(podman, name, "reload", "ringcast")
        assert systemctl(podman, name, "is-active", "ringcast", check=False) == "active"
        stopped_cleanly()
        podman("stop", "-t", "20", name, timeout=60)
