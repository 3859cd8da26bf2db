"""Real processes for the cluster tests: `ringcast serve` (with workers) and `redis-server`."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import hiredis

START_TIMEOUT = 15.0
STOP_TIMEOUT = 20.0
START_ATTEMPTS = 5
WORKER_LISTENING = re.compile(
    r"\[worker (\d+)\] ringcast \S+ listening on \S+:(\d+), backend (\S+)")
LISTENING = re.compile(r"ringcast \S+ listening on \S+:(\d+), backend (\S+)")
SUPERVISOR = re.compile(r"supervisor: (\d+) workers on \S+:(\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll_until(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


# -- redis-server --------------------------------------------------------------------


class RedisServer:
    """``redis-server`` on a free port, no persistence; can be stopped and started again."""

    def __init__(self, *extra: str, auth: tuple[str, ...] = ()) -> None:
        """``extra``: more redis-server arguments; ``auth``: AUTH arguments for `command`."""
        self.extra = extra
        self.auth = auth
        exe = shutil.which("redis-server")
        assert exe is not None, ("redis-server is not installed: `apt-get install redis-server` "
                                 "(.ci/run does it)")
        self.exe = exe
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        fd, name = tempfile.mkstemp(prefix="ringcast-redis-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.proc is None
        for _ in range(START_ATTEMPTS):
            port = self.port or free_port()
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [self.exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--daemonize", "no", "--loglevel", "notice",
                     *self.extra],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=tempfile.gettempdir())
            self.port = port
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if self.command("PING") == b"PONG":
                        return
                except OSError:
                    time.sleep(0.02)
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            if "Address already in use" not in self.log_path.read_text(errors="replace"):
                break
        raise AssertionError(f"redis-server did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        """Stop it (SIGTERM; it closes every client connection) and wait."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def command(self, *args: str) -> object:
        """One command on a fresh connection (after AUTH), its reply parsed by hiredis."""
        commands = [("AUTH", *self.auth)] if self.auth else []
        commands.append(args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as sock:
            parts = []
            for cmd in commands:
                parts.append(b"*%d\r\n" % len(cmd))
                for a in cmd:
                    data = a.encode()
                    parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
            sock.sendall(b"".join(parts))
            reader = hiredis.Reader()
            replies: list[object] = []
            while len(replies) < len(commands):
                while (reply := reader.gets()) is False:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("redis closed the connection")
                    reader.feed(chunk)
                replies.append(reply)
            return replies[-1]

    def numsub(self, channel: str) -> int:
        """Subscriber connections on the ringcast channel (one per node worker)."""
        reply = self.command("PUBSUB", "NUMSUB", f"ringcast:{channel}")
        assert isinstance(reply, list)
        return int(reply[1])

    def cleanup(self) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)


# -- ringcast serve ------------------------------------------------------------------


@dataclass
class Node:
    """One `ringcast serve` process: a supervisor and its workers, or a single worker."""

    proc: subprocess.Popen[bytes]
    args: list[str]
    stderr_path: Path
    workers: int
    port: int = 0
    backend: str = ""
    env: dict[str, str] = field(default_factory=dict)
    expect_exit: int | None = 0   # checked by the fixture at teardown (None: not checked)

    @classmethod
    def start(cls, workers: int = 1, backend: str | None = None,
              config: str | None = None, cpus: set[int] | None = None, **env: object) -> Node:
        """``workers``: how many the test expects (RINGCAST_SERVER_WORKERS unless in ``env``);
        ``cpus``: the CPU affinity of the process."""
        last = ""
        for _ in range(START_ATTEMPTS):
            port = free_port()
            args = [sys.executable, "-m", "ringcast", "serve", "--port", str(port)]
            if cpus is not None:   # taskset execs the server: same pid
                args = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *args]
            if backend is not None:
                args += ["--backend", backend]
            if config is not None:
                args += ["--config", config]
            full_env = {k: v for k, v in os.environ.items() if not k.startswith("RINGCAST_")}
            full_env["RINGCAST_SERVER_WORKERS"] = str(workers)
            full_env.update({f"RINGCAST_{k}": str(v) for k, v in env.items()})
            fd, name = tempfile.mkstemp(prefix="ringcast-cluster-", suffix=".log")
            with os.fdopen(fd, "wb") as stderr:
                proc = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                    env=full_env)
            node = cls(proc, args, Path(name), workers, port=port, env=full_env)
            if node._wait_started():
                return node
            last = node.stderr_text()
            node.cleanup()
            if "cannot listen" not in last:
                break
        raise AssertionError(f"ringcast serve did not start:\n{last}")

    def listening_lines(self) -> list[re.Match[str]]:
        text = self.stderr_text()
        if self.workers == 1:
            return list(LISTENING.finditer(text))
        return list(WORKER_LISTENING.finditer(text))

    def _wait_started(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            lines = self.listening_lines()
            if self.workers == 1 and lines:
                self.backend = lines[0][2]
                return True
            if self.workers > 1 and {int(m[1]) for m in lines} == set(range(self.workers)):
                sup = SUPERVISOR.search(self.stderr_text())
                assert sup is not None and int(sup[1]) == self.workers, self.stderr_text()
                assert all(int(m[2]) == self.port for m in lines), self.stderr_text()
                self.backend = lines[0][3]
                return True
            time.sleep(0.02)
        self.proc.kill()
        self.proc.wait()
        raise AssertionError(f"not every worker listening within {START_TIMEOUT}s:\n"
                             f"{self.stderr_text()}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def worker_pids(self) -> dict[int, int]:
        """Worker index -> pid, from who holds the abstract link socket ``@ringcast-<pid>-<i>``."""
        assert self.workers > 1
        inode_of: dict[str, int] = {}
        prefix = f"@ringcast-{self.pid}-"
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            parts = line.split()
            # unconnected (01) with the listening flag: the worker's link listener
            if (len(parts) >= 8 and parts[7].startswith(prefix) and parts[5] == "01"
                    and int(parts[3], 16) & 0x10000):
                inode_of[parts[6]] = int(parts[7][len(prefix):])
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        out: dict[int, int] = {}
        for child in map(int, children):
            try:
                fds = os.listdir(f"/proc/{child}/fd")
            except FileNotFoundError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(f"/proc/{child}/fd/{fd}")
                except OSError:
                    continue
                m = re.fullmatch(r"socket:\[(\d+)\]", target)
                if m and m[1] in inode_of:
                    out[inode_of[m[1]]] = child
        return out

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"ringcast serve did not exit within {timeout}s:\n"
                                 f"{self.stderr_text()}") from None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except AssertionError:
            return f"no exit within {timeout}s of SIGTERM (killed)"

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr_path.unlink(missing_ok=True)
