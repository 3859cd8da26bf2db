"""Real processes for the cluster tests: `ringcast serve` (with workers) and `redis-server`."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

import hiredis

from tests.support.serverproc import LISTENING, ServerProcess

WORKER_LISTENING = re.compile(r"\[worker (\d+)\] ringcast \S+ " + LISTENING.pattern)
SUPERVISOR = re.compile(r"supervisor: (\d+) workers on \S+:(\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- redis-server --------------------------------------------------------------------


class RedisServer:
    """``redis-server`` on a free port, no persistence; can be stopped and started again."""

    # The port is picked up front: port 0 would turn redis-server's TCP listener off.
    START_ATTEMPTS = 5
    START_TIMEOUT = 15.0
    STOP_TIMEOUT = 20.0

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
        # A restart keeps its port (the nodes were given the URL); a first start
        # that lost its port to another process tries another one.
        fixed = self.port
        for _ in range(self.START_ATTEMPTS):
            port = fixed or free_port()
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [self.exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--daemonize", "no", "--loglevel", "notice",
                     *self.extra],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=tempfile.gettempdir())
            self.port = port
            deadline = time.monotonic() + self.START_TIMEOUT
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
            self.proc.wait(self.STOP_TIMEOUT)
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
class Node(ServerProcess):
    """One `ringcast serve` process: a supervisor and its workers, or a single worker."""

    START_TIMEOUT: ClassVar[float] = 15.0
    STOP_TIMEOUT: ClassVar[float] = 20.0
    NOT_LISTENING: ClassVar[str] = "not every worker listening"

    workers: int = 1

    @classmethod
    def start(cls, workers: int = 1, backend: str | None = None,
              config: str | None = None, cpus: set[int] | None = None, port: int = 0,
              **env: object) -> Self:
        """``workers``: how many the test expects (RINGCAST_SERVER_WORKERS unless in ``env``);
        ``cpus``: the CPU affinity of the process; ``port``: 0 for any free one. Returns once
        every worker listens."""
        # taskset execs the server: same pid
        prefix = () if cpus is None else ("taskset", "-c", ",".join(map(str, sorted(cpus))))
        node = cls.spawn({"SERVER_WORKERS": workers, **env}, backend=backend, config=config,
                         prefix=prefix, port=port)
        node.workers = workers
        node.wait_listening()
        return node

    def listening_lines(self) -> list[re.Match[str]]:
        """The start-up lines logged so far; with several workers, group 1 is the worker's
        index (a restarted worker logs another)."""
        pattern = LISTENING if self.workers == 1 else WORKER_LISTENING
        return list(pattern.finditer(self.stderr_text()))

    def _listening(self) -> bool:
        """With several workers: once each of them logged its line, which must agree with
        the supervisor's on the count and the port."""
        if self.workers == 1:
            return super()._listening()
        lines = self.listening_lines()
        if {int(m[1]) for m in lines} != set(range(self.workers)):
            return False
        text = self.stderr_text()
        sup = SUPERVISOR.search(text)
        assert sup is not None and int(sup[1]) == self.workers, text
        assert all(m["port"] == sup[2] for m in lines), text
        self._take(lines[0])
        return True

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
