#!/usr/bin/env python3
"""Connection storms (issue 11): handshake cost, 100,000 subscribers, a full reconnect.

The load comes from bench/storm.c, an independent C client (epoll, one thread, no
code shared with ringcast), compiled here with gcc -O2. Three measurements, each run
--runs times (2 by default), interleaved (every measurement of run 1, then of run 2):

  handshakes   10,000 WebSocket handshakes (storm.c connect, 512 in flight) against
               ringcast io_uring, ringcast epoll, bun (Bun.serve: uWebSockets) and
               socketify (Python on uWebSockets); each server alone, pinned to core 0,
               the client to core 1 (taskset), a fresh server per cell. Connect time,
               server CPU per handshake (/proc/PID/stat utime+stime before and after)
               and each server's ratio to bun.
  subscribers  102,000 subscribers (6 storm.c hold processes x 17,000, each from its own
               40 source addresses) on ringcast io_uring with server.workers = 8: time
               until all are connected, workers' CPU per handshake, workers' RSS per
               connection, then one POST /publish that must reach every one of them.
  storm        100,000 subscribers (6 storm.c storm processes) on the same server; once
               each process has seen the first message everywhere, it closes all its
               connections at once and opens them again (retrying a failed handshake
               after 100 ms). Time until all are back (101) and until every one of them
               has received a message published after it came back: this script
               publishes one message every 2 s throughout, and one more as soon as
               every process has reported all its connections back.

For subscribers and storm the 8 workers are not pinned (8 processes on 2 cores); the
clients are pinned to core 1. ringcast runs with its defaults (no limit raised) from a
snapshot of src/ringcast taken at the start, so edits to the work tree during the run
do not mix versions; its log (level info) is kept and searched for warnings and errors.

Every wait is bounded, and the client processes end by themselves (--duration). The
machine facts, the load average before each cell and every command line are printed;
the results are Markdown tables, the raw numbers in bench/results/storms-*.json.

    .venv/bin/python bench/storms.py --quick --runs 1       # a tenth of the sizes (~2 min)
    .venv/bin/python bench/storms.py --write-docs           # the real run, twice (~12 min)

Before subscribers and storm it waits (up to 150 s) for conntrack's TIME_WAIT entries of
earlier cells to expire: a storm needs about 200,000 of nf_conntrack_max's entries.
Logs, the compiled client and the ringcast snapshot go to bench/results/tmp/.

--write-docs appends the section "Connection storms (issue 11)" to docs/benchmarks.md
(or replaces it, between its markers, when it is already there).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import importlib
import itertools
import json
import os
import queue
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ringcast.loadtest import procstat

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PEERS = BENCH / "peers"
TMP = BENCH / "results" / "tmp"
LOGS = TMP / "storms-logs"
SNAPSHOT = TMP / "storms-src"
STORM_C = BENCH / "storm.c"
STORM = TMP / "storm"
PY = ROOT / ".venv" / "bin" / "python"
PEERS_VENV = BENCH / ".peers-venv"
PEERS_NODE = BENCH / ".peers-node"
BUN = PEERS_NODE / "node_modules" / ".bin" / "bun"
BUN_VERSION = "1.4.5"
DOC = ROOT / "docs" / "benchmarks.md"

sys.path.insert(0, str(BENCH))
peer_bench = importlib.import_module("run")  # bench/run.py: the peers' venv, and helpers
free_port: Callable[[], int] = peer_bench.free_port
raise_nofile: Callable[[], None] = peer_bench.raise_nofile
SECTION = "## Connection storms (issue 11)"
BEGIN, END = "<!-- connection-storms:begin -->", "<!-- connection-storms:end -->"
SERVER_CORE, CLIENT_CORE = "0", "1"
CHANNEL = "storm"
CONCURRENCY = 512          # handshakes in flight per client process
ADDRS_PER_CLIENT = 40      # client k binds to 127.0.0.(2 + 40k) .. (41 + 40k)
WORKERS = 8
CLIENTS = 6
QUIET_LOAD = 1.0           # one-minute load average a handshake cell waits to be under
PUBLISH_EVERY = 2.0        # seconds, during the storm (a publish to 100,000 costs ~1.8 s CPU)
CONNTRACK_QUIET = 40_000   # conntrack entries left before a big cell starts


@dataclass(frozen=True)
class Server:
    name: str
    kind: str  # "ringcast", "bun" or "socketify"
    backend: str = ""

    def command(self, port: int) -> list[str]:
        if self.kind == "ringcast":
            return [str(PY), "-m", "ringcast", "serve", "--port", str(port),
                    "--backend", self.backend]
        if self.kind == "bun":
            return [str(BUN), str(PEERS / "bun_server.js"), "--port", str(port)]
        return [str(PEERS_VENV / "bin" / "python"), str(PEERS / "socketify_server.py"),
                "--port", str(port)]

    def ready_line(self) -> str:
        return "listening on" if self.kind == "ringcast" else f"READY {self.kind}"


SERVERS = [
    Server("ringcast io_uring", "ringcast", "io_uring"),
    Server("ringcast epoll", "ringcast", "epoll"),
    Server("bun", "bun"),
    Server("socketify", "socketify"),
]
RINGCAST = SERVERS[0]
BASE = "bun"  # the ratio column of the handshake table


@dataclass(frozen=True)
class Sizes:
    handshakes: int
    subscribers: list[int]  # per client process
    storm: list[int]


def sizes(quick: bool) -> Sizes:
    scale = 10 if quick else 1
    return Sizes(10_000 // scale, split(102_000 // scale, CLIENTS),
                 split(100_000 // scale, CLIENTS))


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# -- the machine, the builds -----------------------------------------------------------


def sh(cmd: Sequence[str]) -> str:
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, check=False,
                              timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in sh(["lscpu"]).splitlines()
                if line.startswith("Model name:")), "?")
    kb = int(Path("/proc/meminfo").read_text().split()[1])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    commit = sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = sh(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    net = Path("/proc/sys/net")
    return {
        "nproc": sh(["nproc"]),
        "cpu": cpu,
        "memory": f"{kb / 2**20:.0f} GiB",
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "gcc": sh(["gcc", "-dumpfullversion"]),
        "open files limit": f"{soft} soft / {hard} hard",
        "ephemeral ports": (net / "ipv4/ip_local_port_range").read_text().split()[0] + "-"
        + (net / "ipv4/ip_local_port_range").read_text().split()[1],
        "somaxconn / tcp_max_syn_backlog": f"{(net / 'core/somaxconn').read_text().strip()}"
        f" / {(net / 'ipv4/tcp_max_syn_backlog').read_text().strip()}",
        "nf_conntrack_max": sh(["cat", "/proc/sys/net/netfilter/nf_conntrack_max"]) or "-",
        # How long each closed connection of an earlier cell stays in the table: with
        # 120 s (the default), five interleaved runs of four cells nearly fill 262,144.
        "conntrack TIME_WAIT, s": sh(["cat", "/proc/sys/net/netfilter/"
                                          "nf_conntrack_tcp_timeout_time_wait"]) or "-",
        "ringcast": f"{commit}" + (", work tree with uncommitted changes" if dirty else ""),
    }


def build_client() -> None:
    TMP.mkdir(parents=True, exist_ok=True)
    cmd = ["gcc", "-O2", "-Wall", "-Wextra", "-o", str(STORM), str(STORM_C)]
    print("$ " + shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def ensure_bun(log: list[str]) -> str | None:
    """bun from npm into bench/.peers-node (not committed); its version, or None."""
    if not BUN.exists():
        PEERS_NODE.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", f"bun@{BUN_VERSION}"],
                           cwd=PEERS_NODE, capture_output=True, text=True, timeout=600,
                           check=False)
        if r.returncode != 0 or not BUN.exists():
            log.append(f"bun: npm install failed, skipped ({r.stderr.strip()[-200:]})")
            return None
    return sh([str(BUN), "--version"]) or None


def ensure_socketify(log: list[str]) -> str | None:
    """socketify in bench/.peers-venv, through bench/run.py's ensure_peers()."""
    versions: dict[str, str] = peer_bench.ensure_peers(log)
    return versions.get("socketify")


def snapshot() -> None:
    """One version of ringcast for the whole run, whatever happens to the work tree."""
    shutil.rmtree(SNAPSHOT, ignore_errors=True)
    shutil.copytree(ROOT / "src" / "ringcast", SNAPSHOT / "ringcast",
                    ignore=shutil.ignore_patterns("__pycache__", "*.o"))


# -- processes: CPU, memory -------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The process's children (a supervisor's workers)."""
    return sorted(procstat.children(pid))


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU time of the processes, every thread of each, in seconds (the scheduler's count
    in nanoseconds where the kernel keeps it: a 10 ms tick is a few % of a cell)."""
    return sum(procstat.sample(pid, pss=False).cpu_ns for pid in pids) / 1e9


def rss_bytes(pids: Sequence[int]) -> int:
    return sum(procstat.sample(pid, pss=False).rss_bytes for pid in pids)


# -- the kernel's view: TCP counters, conntrack, kernel log ----------------------------

# What can delay or refuse a handshake: a full accept queue (ListenOverflows, ListenDrops),
# a full SYN queue (SyncookiesSent, TCPReqQFull*), a SYN sent again (TCPSynRetrans), and a
# SYN that met an old connection of the same addresses and ports, not closed yet on the
# server (TCPChallengeACK, TCPSYNChallenge).
TCP_COUNTERS = ("ListenOverflows", "ListenDrops", "SyncookiesSent", "TCPReqQFullDrop",
                "TCPReqQFullDoCookies", "TCPSynRetrans", "TCPChallengeACK", "TCPSYNChallenge",
                "TCPTimeWaitOverflow")
CONNTRACK = Path("/proc/sys/net/netfilter/nf_conntrack_count")
CONNTRACK_MAX = Path("/proc/sys/net/netfilter/nf_conntrack_max")


def tcp_counters() -> dict[str, int]:
    """TcpExt counters of /proc/net/netstat (system-wide: other work counts too)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    out: dict[str, int] = {}
    for head, vals in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("TcpExt:"):
            out.update({k: int(v) for k, v in zip(head.split()[1:], vals.split()[1:],
                                                   strict=False) if k in TCP_COUNTERS})
    return out


def conntrack() -> int | None:
    try:
        return int(CONNTRACK.read_text())
    except (OSError, ValueError):
        return None


def kernel_log() -> list[str]:
    return sh(["dmesg"]).splitlines()


@dataclass
class KernelWatch:
    """What the kernel said and counted while one cell ran."""

    tcp: dict[str, int] = field(default_factory=tcp_counters)
    log_len: int = field(default_factory=lambda: len(kernel_log()))
    conntrack_before: int | None = field(default_factory=conntrack)

    def result(self) -> dict[str, Any]:
        after = tcp_counters()
        new = kernel_log()[self.log_len:]
        return {"tcp": {k: after[k] - self.tcp.get(k, 0) for k in after
                        if after[k] != self.tcp.get(k, 0)},
                "conntrack_before": self.conntrack_before, "conntrack_after": conntrack(),
                "kernel_log": [ln for ln in new if any(w in ln for w in (
                    "TCP", "conntrack", "SYN", "socket", "oom", "Out of memory"))][:5]}


def wait_conntrack(limit: int, timeout: float = 150) -> None:
    """Let TIME_WAIT entries of earlier cells expire (120 s in conntrack) so that a big
    cell cannot fill the conntrack table (nf_conntrack_max) and have SYNs dropped."""
    deadline = time.monotonic() + timeout
    count = conntrack()
    while count is not None and count > limit and time.monotonic() < deadline:
        print(f"  waiting for conntrack entries to expire: {count:,} > {limit:,}", flush=True)
        time.sleep(10)
        count = conntrack()


def wait_quiet(limit: float = QUIET_LOAD, timeout: float = 180) -> None:
    """Wait (at most ``timeout``) until the one-minute load average is under ``limit``. A
    handshake cell is two busy cores, so whatever else runs skews it, and right after a
    big run the kernel is still tearing down its connections. Six runs measured then, the
    load average still at 9 (2026-12-04 18:52), put ringcast's mean connect time 3-6 %
    above bun's; the same runs on a quiet machine that evening, from 0.5 % above to 10 %
    below."""
    deadline = time.monotonic() + timeout
    while os.getloadavg()[0] >= limit and time.monotonic() < deadline:
        print(f"  waiting for a quiet machine: load average {loadavg()}", flush=True)
        time.sleep(10)


def tcp_text(cell: dict[str, Any]) -> str:
    k = cell.get("kernel", {})
    return ", ".join(f"{n} {v:,}" for n, v in k.get("tcp", {}).items()
                     if n in TCP_COUNTERS) or "none"


# -- servers -----------------------------------------------------------------------------


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    log: Path
    command: str


def start_server(server: Server, port: int, log: Path, *, pin: bool, workers: int = 1,
                 settings: dict[str, str] | None = None) -> Running:
    """``settings``: more ``RINGCAST_*`` variables (``{"LIMITS_PING_INTERVAL": "5"}``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGCAST_")}
    env["PYTHONPATH"] = str(SNAPSHOT)
    extra = dict(settings or {})
    if workers > 1:
        extra["SERVER_WORKERS"] = str(workers)
    env.update({f"RINGCAST_{k}": v for k, v in extra.items()})
    cmd = (["taskset", "-c", SERVER_CORE] if pin else []) + server.command(port)
    shown = "".join(f"RINGCAST_{k}={v} " for k, v in extra.items()) + shlex.join(cmd)
    print(f"$ {shown}", flush=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=str(PEERS), preexec_fn=raise_nofile)  # noqa: PLW1509
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {proc.returncode}: "
                               + log.read_text(errors="replace")[-300:])
        if log.read_text(errors="replace").count(server.ready_line()) >= workers:
            time.sleep(0.5)  # let start-up work settle before the first CPU reading
            return Running(proc, log, shown)
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"{server.name} was not ready within 30 s")


def stop(proc: subprocess.Popen[bytes], wait: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_problems(log: Path) -> dict[str, Any]:
    """Warnings, errors and tracebacks in a server's log."""
    bad = [line for line in log.read_text(errors="replace").splitlines()
           if any(w in line for w in (" WARNING ", " ERROR ", " CRITICAL ", "Traceback",
                                      "rror:"))]
    return {"count": len(bad), "first": bad[:5]}


# -- the client processes ---------------------------------------------------------------


def client_command(mode: str, port: int, n: int, k: int, extra: Sequence[str]) -> list[str]:
    first = 2 + ADDRS_PER_CLIENT * k
    src = f"127.0.0.{first}-127.0.0.{first + ADDRS_PER_CLIENT - 1}"
    return ["taskset", "-c", CLIENT_CORE, str(STORM), mode, "--port", str(port), "-n", str(n),
            "-c", str(CONCURRENCY), "--src", src, "--channel", CHANNEL, "--label", f"c{k}",
            *extra]


class Fleet:
    """storm.c processes and the JSON lines they print, read by one thread each."""

    def __init__(self, commands: list[list[str]], log: Path) -> None:
        self.commands = commands
        self.events: list[list[dict[str, Any]]] = [[] for _ in commands]
        self.lines: queue.Queue[tuple[int, dict[str, Any] | None]] = queue.Queue()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.errlog = log.open("wb")
        for i, cmd in enumerate(commands):
            print(f"$ {shlex.join(cmd)}", flush=True)
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.errlog)
            self.procs.append(p)
            threading.Thread(target=self._read, args=(i, p.stdout), daemon=True).start()
        self.done = [False] * len(commands)
        self.stopped = False

    def _read(self, i: int, stream: IO[bytes] | None) -> None:
        assert stream is not None
        for raw in stream:
            try:
                self.lines.put((i, json.loads(raw)))
            except json.JSONDecodeError:
                self.lines.put((i, {"event": "garbage", "text": raw.decode(errors="replace")}))
        self.lines.put((i, None))  # end of output: the process is ending

    def wait(self, event: str, timeout: float,
             accept: Callable[[dict[str, Any]], bool] = lambda e: True,
             ) -> list[dict[str, Any]] | None:
        """The first `event` of every process that `accept`s, or None (timeout, or a
        process ended without one)."""
        deadline = time.monotonic() + timeout

        def found(i: int) -> dict[str, Any] | None:
            return next((e for e in self.events[i] if e["event"] == event and accept(e)), None)

        while True:
            got = [found(i) for i in range(len(self.procs))]
            if all(g is not None for g in got):
                return [g for g in got if g is not None]
            if any(self.done[i] and got[i] is None for i in range(len(self.procs))):
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                i, ev = self.lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if ev is None:
                self.done[i] = True
            else:
                self.events[i].append(ev)

    def stop(self, timeout: float = 60) -> list[dict[str, Any] | None]:
        """SIGTERM (a process that has ended already is left alone); the reports."""
        if self.stopped:
            return [next((e for e in ev if e["event"] == "report"), None) for ev in self.events]
        self.stopped = True
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        reports = self.wait("report", timeout)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.errlog.close()
        if reports is not None:
            return list(reports)
        return [next((e for e in ev if e["event"] == "report"), None) for ev in self.events]


def publish(port: int, body: bytes, conn: list[http.client.HTTPConnection]) -> dict[str, Any]:
    """POST /publish/<channel>, on a kept-alive connection (conn holds it, or nothing)."""
    t0 = time.monotonic_ns()
    for attempt in (1, 2):  # the kept-alive connection may have been closed
        if not conn:
            conn.append(http.client.HTTPConnection("127.0.0.1", port, timeout=30))
        try:
            conn[0].request("POST", f"/publish/{CHANNEL}", body=body,
                            headers={"Content-Type": "text/plain"})
            r = conn[0].getresponse()
            text = r.read().decode(errors="replace")
            return {"t_ns": t0, "status": r.status, "ms": (time.monotonic_ns() - t0) / 1e6,
                    "body": text[:200]}
        except (OSError, http.client.HTTPException) as exc:
            conn.pop().close()
            if attempt == 2:
                return {"t_ns": t0, "status": 0, "ms": (time.monotonic_ns() - t0) / 1e6,
                        "body": f"{type(exc).__name__}: {exc}"}
    raise AssertionError("unreachable")


@dataclass
class Publisher:
    """Publishes a numbered message every `every` seconds, in a thread, until stopped."""

    port: int
    every: float
    sent: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn: list[http.client.HTTPConnection] = []
        seq = 0
        while not self._stop.is_set():
            seq += 1
            self.sent.append(publish(self.port, f"storm {seq}".encode(), conn))
            self._stop.wait(self.every)
        for c in conn:
            c.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(60)


# -- the measurements -----------------------------------------------------------------


def failures(phase: dict[str, Any]) -> str:
    kinds = ("refused", "reset", "eof", "timeout", "http_status", "bad_accept", "protocol",
             "local")
    out = [f"{k} {phase[k]}" for k in kinds if phase.get(k)]
    if phase.get("last_status"):
        out.append(f"last status {phase['last_status']}")
    if phase.get("last_errno"):
        out.append(f"last errno {phase['last_errno']}")
    return ", ".join(out)


def handshakes(server: Server, n: int, tag: str) -> dict[str, Any]:
    """Cell (i): n handshakes, one client on core 1, the server alone on core 0."""
    wait_conntrack(150_000)
    wait_quiet()
    res: dict[str, Any] = {"loadavg_before": loadavg(), "server": server.name}
    port = free_port()
    watch = KernelWatch()
    try:
        srv = start_server(server, port, LOGS / f"{tag}.log", pin=True)
    except RuntimeError as exc:
        return {**res, "error": str(exc)}
    fleet = None
    try:
        pids = [srv.proc.pid, *children(srv.proc.pid)]
        cpu0 = cpu_seconds(pids)
        cmd = client_command("connect", port, n, 0, ["--linger", "60", "--duration", "120"])
        fleet = Fleet([cmd], LOGS / f"{tag}-client.log")
        got = fleet.wait("connected", 120)
        cpu1 = cpu_seconds(pids)
        reports = fleet.stop()
        if got is None:
            return {**res, "error": "no 'connected' line within 120 s", "reports": reports}
        c = got[0]["connect"]
        res.update(server_command=srv.command, client_command=shlex.join(cmd), connect=c,
                   server_cpu_s=cpu1 - cpu0,
                   server_cpu_us_per_handshake=(cpu1 - cpu0) * 1e6 / max(c["opened"], 1),
                   client_core_busy=c["client_cpu_s"] / c["seconds"] if c["seconds"] else None,
                   report=reports[0])
    finally:
        if fleet is not None:
            fleet.stop()
        stop(srv.proc)
        res["log"] = log_problems(srv.log)
        res["kernel"] = watch.result()
    return res


def span(events: Sequence[dict[str, Any]], key: str = "connect") -> float:
    """From the first connect() of any process to the last 101 of any, seconds."""
    return float(max(e[key]["t_last_ns"] for e in events)
                 - min(e[key]["t_first_ns"] for e in events)) / 1e9


def total(events: Sequence[dict[str, Any]], key: str, field_: str) -> int:
    return sum(int(e[key][field_]) for e in events)


def subscribers(per_client: list[int], tag: str) -> dict[str, Any]:
    """Cell (ii): sum(per_client) subscribers on 8 unpinned workers, then one publish."""
    n = sum(per_client)
    wait_conntrack(CONNTRACK_QUIET)
    res: dict[str, Any] = {"loadavg_before": loadavg(), "subscribers": n}
    port = free_port()
    watch = KernelWatch()
    try:
        srv = start_server(RINGCAST, port, LOGS / f"{tag}.log", pin=False, workers=WORKERS)
    except RuntimeError as exc:
        return {**res, "error": str(exc)}
    fleet = None
    try:
        workers = children(srv.proc.pid)
        every = [srv.proc.pid, *workers]
        cpu0, rss0 = cpu_seconds(every), rss_bytes(workers)
        cmds = [client_command("hold", port, k, i, ["--duration", "400"])
                for i, k in enumerate(per_client)]
        fleet = Fleet(cmds, LOGS / f"{tag}-clients.log")
        got = fleet.wait("connected", 300)
        cpu1, rss1 = cpu_seconds(every), rss_bytes(workers)
        if got is None:
            return {**res, "error": "not every client connected within 300 s",
                    "reports": fleet.stop()}
        opened = total(got, "connect", "opened")
        res.update(server_command=srv.command, client_commands=[shlex.join(c) for c in cmds],
                   workers=len(workers), opened=opened,
                   failed=total(got, "connect", "failed"),
                   failures=[failures(e["connect"]) for e in got if e["connect"]["failed"]],
                   connect_s=span(got), server_cpu_s=cpu1 - cpu0,
                   server_cpu_us_per_handshake=(cpu1 - cpu0) * 1e6 / max(opened, 1),
                   rss_before=rss0, rss_after=rss1,
                   rss_bytes_per_connection=(rss1 - rss0) / max(opened, 1),
                   client_cpu_us_per_handshake=sum(e["connect"]["client_cpu_s"] for e in got)
                   * 1e6 / max(opened, 1),
                   p50_ms=max(e["connect"]["p50_ms"] for e in got),
                   p99_ms=max(e["connect"]["p99_ms"] for e in got))
        pub = publish(port, b"one message for everyone", [])
        res["publish"] = pub
        received = fleet.wait("received", 120, lambda e: e["messages"] >= 1)
        cpu2 = cpu_seconds(every)
        res["publish_cpu_s"] = cpu2 - cpu1
        if received is not None:
            res["delivered_ms"] = (max(e["t_ns"] for e in received) - pub["t_ns"]) / 1e6
        reports = fleet.stop()
        res["reports"] = reports
        res["messages"] = [r["messages"] if r else None for r in reports]
        res["all_received"] = received is not None and all(
            r is not None and r["messages"]["open"] == k and r["messages"]["min"] == 1
            and r["messages"]["max"] == 1 for r, k in zip(reports, per_client, strict=True))
    finally:
        if fleet is not None:
            fleet.stop()
        stop(srv.proc)
        res["log"] = log_problems(srv.log)
        res["kernel"] = watch.result()
    return res


def latency_histogram(files: Sequence[Path], phase: str) -> dict[str, int]:
    """Handshakes of a phase by whole seconds of latency ("0": under 1 s), from the
    --latencies files of storm.c."""
    counts: dict[int, int] = {}
    for f in files:
        for line in f.read_text().splitlines() if f.exists() else []:
            name, ms = line.split()
            if name == phase:
                counts[int(float(ms) // 1000)] = counts.get(int(float(ms) // 1000), 0) + 1
    return {str(k): counts[k] for k in sorted(counts)}


def storm(per_client: list[int], tag: str) -> dict[str, Any]:
    """Cell (iii): drop every connection at once, reconnect, until all are receiving."""
    n = sum(per_client)
    wait_conntrack(CONNTRACK_QUIET)
    res: dict[str, Any] = {"loadavg_before": loadavg(), "subscribers": n}
    port = free_port()
    watch = KernelWatch()
    try:
        srv = start_server(RINGCAST, port, LOGS / f"{tag}.log", pin=False, workers=WORKERS)
    except RuntimeError as exc:
        return {**res, "error": str(exc)}
    fleet = None
    publisher = Publisher(port, PUBLISH_EVERY)
    try:
        every = [srv.proc.pid, *children(srv.proc.pid)]
        lat = [LOGS / f"{tag}-latencies-{i}.txt" for i in range(len(per_client))]
        cmds = [client_command("storm", port, k, i, ["--messages", "1", "--fraction", "1.0",
                                                     "--retry-ms", "100", "--duration", "400",
                                                     "--latencies", str(lat[i])])
                for i, k in enumerate(per_client)]
        fleet = Fleet(cmds, LOGS / f"{tag}-clients.log")
        got = fleet.wait("connected", 300)
        if got is None:
            return {**res, "error": "not every client connected within 300 s",
                    "reports": fleet.stop()}
        res.update(server_command=srv.command, client_commands=[shlex.join(c) for c in cmds],
                   opened=total(got, "connect", "opened"), connect_s=span(got))
        publisher.start()  # its first message is the one the clients wait for to drop
        dropped = fleet.wait("dropped", 120)
        cpu0 = cpu_seconds(every)
        back = fleet.wait("back", 240) if dropped is not None else None
        cpu_back = cpu_seconds(every)
        if back is not None:  # every connection is back: one message for all of them
            res["publish_after_back"] = publish(port, b"published after all came back", [])
        reports = fleet.wait("report", 120) if back is not None else None
        cpu1 = cpu_seconds(every)
        publisher.stop()
        res["publishes"] = len(publisher.sent)
        res["publish_errors"] = [p for p in publisher.sent if p["status"] != 200][:5]
        posts = publisher.sent + ([res["publish_after_back"]] if back is not None else [])
        res["publish_max_ms"] = max((p["ms"] for p in posts), default=None)
        if dropped is None or back is None or reports is None:
            res["error"] = "the storm did not finish within its time"
            res["reports"] = fleet.stop()
            return res
        st = [r["storm"] for r in reports]
        t_drop = min(s["t_dropped_ns"] for s in st)
        sent_after = sorted(p["t_ns"] for p in publisher.sent if p["t_ns"] >= t_drop)
        gaps = [(b - a) / 1e6 for a, b in itertools.pairwise(sent_after)]
        res.update(
            reports=reports, dropped=sum(s["dropped"] for s in st),
            back=sum(s["back"] for s in st), receiving=sum(s["receiving"] for s in st),
            back_lost=sum(s["back_lost"] for s in st),
            all_back_s=(max(s["reconnect"]["t_last_ns"] for s in st) - t_drop) / 1e9,
            all_receiving_s=(max(s["t_last_receiving_ns"] for s in st) - t_drop) / 1e9,
            drop_spread_ms=(max(s["t_dropped_ns"] for s in st) - t_drop) / 1e6,
            reconnect_failed=sum(s["reconnect"]["failed"] for s in st),
            reconnect_failures=[failures(s["reconnect"]) for s in st if s["reconnect"]["failed"]],
            p50_ms=max(s["reconnect"]["p50_ms"] for s in st),
            p99_ms=max(s["reconnect"]["p99_ms"] for s in st),
            back_to_receiving_ms=(max(s["t_last_receiving_ns"] for s in st)
                                  - max(s["reconnect"]["t_last_ns"] for s in st)) / 1e6,
            server_cpu_s=cpu1 - cpu0, server_cpu_to_back_s=cpu_back - cpu0,
            server_cpu_us_per_reconnect=(cpu_back - cpu0) * 1e6 / max(
                sum(s["back"] for s in st), 1),
            publish_gap_max_ms=max(gaps, default=None),
            lost_after_open=sum(r["messages"]["eof"] + r["messages"]["reset"]
                                + r["messages"]["server_closes"]
                                + r["messages"]["protocol_errors"] for r in reports))
        res["ok"] = res["back"] == res["dropped"] == n and res["receiving"] == n
        fleet.stop()  # the latency files are written on the way out
        res["reconnect_seconds"] = latency_histogram(lat, "reconnect")
        fleet.stop()
    finally:
        publisher.stop()
        if fleet is not None:
            fleet.stop()
        stop(srv.proc)
        res["log"] = log_problems(srv.log)
        res["kernel"] = watch.result()
    return res


# -- tables --------------------------------------------------------------------------------


def fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.{digits}g}"


def handshake_tables(runs: list[dict[str, Any]], n: int) -> list[str]:
    names = [s.name for s in SERVERS if any(s.name in r["handshakes"] for r in runs)]
    out = [f"{n:,} handshakes, 512 in flight, one client on core 1, the server alone on "
           f"core 0; value (ratio to {BASE}):", "",
           "| metric | run | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for label, key in (("connect time, s (first connect to last 101)", "connect_s"),
                       ("server CPU µs per handshake", "server_cpu_us_per_handshake")):
        for i, run in enumerate(runs, 1):
            cells = run["handshakes"]
            ref = value(cells.get(BASE, {}), key)
            row = []
            for name in names:
                v = value(cells.get(name, {}), key)
                text = fmt(v) if v is not None else cell_error(cells.get(name, {}))
                if v is not None and ref and name != BASE:
                    text += f" ({v / ref:.2f}x)"
                row.append(text)
            out.append(f"| {label} | {i} | " + " | ".join(row) + " |")
    out += ["", "Raw numbers:", "",
            "| server | run | opened | failed | connect s | handshakes/s | handshake p50 / p99 "
            "ms | server CPU s | server CPU µs/handshake | server core busy | "
            "client CPU µs/handshake (user) | client core busy | server log warnings | "
            "TCP counters (system-wide) | load avg before |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        for i, run in enumerate(runs, 1):
            r = run["handshakes"].get(name)
            if r is None:
                continue
            if "error" in r:
                out.append(f"| {name} | {i} | {cell_error(r)} |||||||||||| "
                           f"{r['loadavg_before']} |")
                continue
            c = r["connect"]
            failed = f"{c['failed']} {failures(c)}".strip()
            out.append(
                f"| {name} | {i} | {c['opened']:,} | {failed} | "
                f"{fmt(c['seconds'])} | {fmt(c['opened'] / c['seconds'])} | "
                f"{fmt(c['p50_ms'])} / {fmt(c['p99_ms'])} | {fmt(r['server_cpu_s'])} | "
                f"{fmt(r['server_cpu_us_per_handshake'])} | "
                f"{r['server_cpu_s'] / c['seconds']:.0%} | "
                f"{fmt(c['client_cpu_us_per_handshake'])} "
                f"({fmt(c['client_user_cpu_s'] * 1e6 / max(c['opened'], 1))}) | "
                f"{r['client_core_busy']:.0%} | {r['log']['count']} | {tcp_text(r)} | "
                f"{r['loadavg_before']} |")
    return out


def value(cell: dict[str, Any], key: str) -> float | None:
    if "error" in cell or not cell:
        return None
    if key == "connect_s":
        return float(cell["connect"]["seconds"])
    v = cell.get(key)
    return float(v) if isinstance(v, int | float) else None


def cell_error(cell: dict[str, Any]) -> str:
    return ("error: " + str(cell["error"])[:80]) if "error" in cell else "-"


def subscriber_table(runs: list[dict[str, Any]]) -> list[str]:
    out = ["| run | subscribers opened | failed | all connected, s | handshakes/s | "
           "handshake p50 / p99 ms (worst client) | workers' CPU µs/handshake | "
           "workers' RSS bytes/connection | publish → last delivery, ms | server CPU s from "
           "the POST to the last delivery | every one got it once | server log warnings | "
           "TCP counters (system-wide) | load avg before |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, run in enumerate(runs, 1):
        r = run.get("subscribers")
        if r is None:
            continue
        if "error" in r:
            out.append(f"| {i} | {cell_error(r)} |||||||||||| {r['loadavg_before']} |")
            continue
        out.append(
            f"| {i} | {r['opened']:,} of {r['subscribers']:,} | "
            f"{' '.join([str(r['failed']), *r['failures']])} | {fmt(r['connect_s'])} | "
            f"{fmt(r['opened'] / r['connect_s'])} | {fmt(r['p50_ms'])} / {fmt(r['p99_ms'])} | "
            f"{fmt(r['server_cpu_us_per_handshake'])} | {fmt(r['rss_bytes_per_connection'])} | "
            f"{fmt(r.get('delivered_ms'))} | {fmt(r.get('publish_cpu_s'))} | "
            f"{'yes' if r['all_received'] else '**no**'} | "
            f"{r['log']['count']} | {tcp_text(r)} | {r['loadavg_before']} |")
    return out


def storm_table(runs: list[dict[str, Any]]) -> list[str]:
    out = ["| run | dropped | back (101) | receiving again | all back, s | all receiving, s | "
           "back → receiving, ms | reconnect p50 / p99 ms (worst client) | failed reconnects "
           "(retried) | server CPU s, drop to all back (µs per reconnect) | publishes (slowest "
           "POST, ms) | server log warnings | TCP counters (system-wide) | load avg before |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, run in enumerate(runs, 1):
        r = run.get("storm")
        if r is None:
            continue
        if "error" in r:
            out.append(f"| {i} | {cell_error(r)} |||||||||||| {r['loadavg_before']} |")
            continue
        out.append(
            f"| {i} | {r['dropped']:,} | {r['back']:,} | {r['receiving']:,} | "
            f"{fmt(r['all_back_s'])} | {fmt(r['all_receiving_s'])} | "
            f"{fmt(r['back_to_receiving_ms'])} | {fmt(r['p50_ms'])} / "
            f"{fmt(r['p99_ms'])} | "
            f"{' '.join([str(r['reconnect_failed']), *r['reconnect_failures']])} | "
            f"{fmt(r['server_cpu_to_back_s'])} ({fmt(r['server_cpu_us_per_reconnect'])}) | "
            f"{r['publishes'] + 1} ({fmt(r['publish_max_ms'])}) | {r['log']['count']} | "
            f"{tcp_text(r)} | {r['loadavg_before']} |")
    return out


def log_notes(runs: list[dict[str, Any]]) -> list[str]:
    notes = []
    for i, run in enumerate(runs, 1):
        cells = [(f"handshakes, {k}", v) for k, v in run.get("handshakes", {}).items()]
        cells += [(k, run[k]) for k in ("subscribers", "storm") if k in run]
        for name, cell in cells:
            for line in cell.get("log", {}).get("first", [])[:3]:
                notes.append(f"run {i}, {name}: `{line.strip()[:200]}`")
            for line in cell.get("kernel", {}).get("kernel_log", [])[:3]:
                notes.append(f"run {i}, {name}, kernel log: `{line.strip()[:200]}`")
    return notes


def section(raw: dict[str, Any]) -> str:
    runs, sz = raw["runs"], Sizes(**raw["sizes"])
    info = raw["machine"]
    out = [SECTION, "",
           "Written by `bench/storms.py`; do not edit the numbers by hand. The load client is "
           "`bench/storm.c`, an independent C client (epoll, one thread), that checks every "
           "101 and its Sec-WebSocket-Accept, answers pings, and counts every message on "
           "every connection.", "",
           f"Date: {raw['started']}. ringcast: commit `{raw['commit']}`"
           + (", work tree with uncommitted changes (the server code was being optimised "
              "meanwhile; one snapshot of src/ringcast, taken at the start, served the whole "
              "run)." if raw["dirty"] else "."), "",
           "| machine | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in info.items()]
    out += [f"| {k} | {v} |" for k, v in raw["versions"].items()]
    out += ["", "Commands (`PORT` is a free port; the runner prints every command it runs):",
            "", "```sh", f".venv/bin/python bench/storms.py {shlex.join(raw['argv'])}".rstrip(),
            "# ringcast runs from the snapshot: PYTHONPATH=bench/results/tmp/storms-src",
            "# (i) handshakes, one cell per server:"]
    for s in SERVERS:
        cmd = shlex.join(s.command(0)).replace(str(ROOT) + "/", "")
        out.append(f"taskset -c 0 {cmd.replace('--port 0', '--port PORT')}")
    c0 = shlex.join(client_command("connect", 0, sz.handshakes, 0,
                                   ["--linger", "60", "--duration", "120"]))
    out.append(c0.replace(str(ROOT) + "/", "").replace("--port 0", "--port PORT"))
    out += ["# (ii) subscribers and (iii) storm: 8 workers, not pinned",
            f"RINGCAST_SERVER_WORKERS={WORKERS} .venv/bin/python -m ringcast serve --port PORT "
            "--backend io_uring"]
    for k, n in enumerate(sz.subscribers):
        out.append(shlex.join(client_command("hold", 0, n, k, ["--duration", "400"]))
                   .replace(str(ROOT) + "/", "").replace("--port 0", "--port PORT") + " &")
    out.append(f"curl -X POST -H 'Content-Type: text/plain' -d 'one message for everyone' "
               f"http://127.0.0.1:PORT/publish/{CHANNEL}")
    for k, n in enumerate(sz.storm):
        out.append(shlex.join(client_command("storm", 0, n, k, [
            "--messages", "1", "--fraction", "1.0", "--retry-ms", "100", "--duration", "400",
            "--latencies", f"lat-{k}.txt"]))
            .replace(str(ROOT) + "/", "").replace("--port 0", "--port PORT") + " &")
    out += [f"# and a POST /publish/{CHANNEL} every {PUBLISH_EVERY:g} s until every client "
            "has reported, and one more when every client has printed its \"back\" line",
            "```", ""]
    out += ["How CPU is counted on loopback: the kernel processes the receipt of a packet in "
            "the sender's context (a softirq on the sending core). The connecting client "
            "therefore pays for the server's side of the TCP handshake (the SYN's request "
            "socket, the child socket made at the final ACK, netfilter's conntrack) and for "
            "the receipt of its own upgrade request, and the server pays for the client's "
            "receipt of the 101. \"Server CPU per handshake\" (the scheduler's count, "
            "/proc/PID/task/*/schedstat, every thread; until 2026-12-04 21:40 UTC utime + "
            "stime of /proc/PID/stat, in ticks of 10 ms) is thus the server's own work, "
            "accept to 101 and the subscription, split the same way for every server. "
            "storm.c's CPU is almost "
            "all the kernel's (its user time, in brackets, is a few µs a handshake); "
            "\"client core busy\" is its CPU over the connect time, \"server core busy\" the "
            "server's: the one near 100% is what bounds the cell (both near it: either "
            "would). Each handshake cell waits for the one-minute load average to fall "
            "under 1 first (at most 180 s). \"TCP counters\" are the changes of "
            "/proc/net/netstat's TcpExt counters during the cell, for the whole machine (other "
            "work ran on it too): a full accept queue (ListenOverflows, ListenDrops), a full "
            "SYN queue (SyncookiesSent, TCPReqQFull*), SYNs sent again (TCPSynRetrans), SYNs "
            "that met an old connection of the same ports not yet closed by the server "
            "(TCPChallengeACK, TCPSYNChallenge); \"none\" means none of these moved.", ""]
    if any(run.get("handshakes") for run in runs):
        out += [f"### (i) {sz.handshakes:,} handshakes", ""]
        out += handshake_tables(runs, sz.handshakes)
        out.append("")
    if any("subscribers" in run for run in runs):
        out += [f"### (ii) {sum(sz.subscribers):,} subscribers on ringcast io_uring, "
                f"{WORKERS} workers", "",
                f"{len(sz.subscribers)} client processes x {sz.subscribers[0]:,} (each from "
                f"its own {ADDRS_PER_CLIENT} source addresses, {CONCURRENCY} handshakes in "
                f"flight each), pinned to core 1; the {WORKERS} workers are not pinned "
                f"({WORKERS} processes on 2 cores, sharing core 1 with the clients). CPU and "
                "RSS are summed over the supervisor's workers (CPU with the supervisor's own), "
                "read before the clients start and when the last one has reported all its "
                f"connections open. Then one `POST /publish/{CHANNEL}`; \"every one got it "
                "once\" means each client reported all its connections open with exactly 1 "
                "message.", ""]
        out += subscriber_table(runs)
        out.append("")
    if any("storm" in run for run in runs):
        n = sum(sz.storm)
        out += [f"### (iii) a full disconnect of {n:,} and recovery", "",
                f"{len(sz.storm)} storm.c processes on the same kind of server ({WORKERS} "
                "workers, not pinned). Once a process has seen the first published message on "
                "all its connections, it closes them all at once (close(), no close frame: a "
                "network drop, as the server sees it) and opens them again at once, "
                f"{CONCURRENCY} handshakes in flight per process "
                f"({CONCURRENCY * len(sz.storm):,} in all), a failed handshake retried after "
                "100 ms. Times are from the first process's drop to the last 101 of any "
                "process (all back) and to the last reconnected connection's first message "
                f"(all receiving). A message is published every {PUBLISH_EVERY:g} s throughout "
                "(the first one is the one the clients wait for before they drop), and one "
                "more as soon as every client has all its connections back, so that \"all "
                "receiving\" is at most \"all back\" plus one publish to everyone (the "
                "\"back → receiving\" column). Server CPU is summed over the supervisor and "
                "its workers from the first client's drop to the last one's \"all back\" "
                f"line: {n:,} disconnects, {n:,} handshakes and the publishes meanwhile, "
                "divided by the reconnections.", ""]
        out += storm_table(runs)
    hist = [(i, run["storm"]["reconnect_seconds"]) for i, run in enumerate(runs, 1)
            if run.get("storm", {}).get("reconnect_seconds")]
    if hist:
        width = max(int(k) for _, h in hist for k in h) + 1
        out += ["", "Reconnect handshakes by latency, in whole seconds (connect() to 101; "
                "\"0 s\" is under one second):", "",
                "| run | " + " | ".join(f"{s} s" for s in range(width)) + " |",
                "|---|" + "---|" * width]
        for i, h in hist:
            out.append(f"| {i} | " + " | ".join(f"{h.get(str(s), 0):,}" for s in range(width))
                       + " |")
    if raw["notes"]:
        out += ["", "Notes:", ""] + [f"- {n}" for n in raw["notes"]]
    notes = log_notes(runs)
    if notes:
        out += ["", "Server log lines at warning or above, and kernel log lines about TCP "
                "(first three per cell):", ""]
        out += [f"- {n}" for n in notes]
    out.append("")
    return "\n".join(out)


def write_doc(text: str) -> None:
    block = f"{BEGIN}\n{text.rstrip()}\n{END}\n"
    doc = DOC.read_text()
    if BEGIN in doc and END in doc:
        pre, _, rest = doc.partition(BEGIN)
        _, _, post = rest.partition(END)
        doc = pre + block.rstrip("\n") + post
    else:
        doc = doc.rstrip("\n") + "\n\n" + block
    DOC.write_text(doc)


# -- main -------------------------------------------------------------------------------------


def print_machine(info: dict[str, str]) -> None:
    for k, v in info.items():
        print(f"# {k}: {v}")
    print(f"# load average: {loadavg()}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=2, help="runs of every measurement (2)")
    p.add_argument("--quick", action="store_true", help="a tenth of the sizes: a smoke test")
    p.add_argument("--only", default="handshakes,subscribers,storm",
                   help="comma-separated subset of: handshakes, subscribers, storm")
    p.add_argument("--servers", help="handshakes: comma-separated subset of: "
                   + ", ".join(s.name.replace(" ", "-") for s in SERVERS))
    p.add_argument("--write-docs", action="store_true",
                   help="append (or replace) the section in docs/benchmarks.md")
    p.add_argument("--note", action="append", default=[], help="a note for the docs section")
    p.add_argument("--from-json", metavar="RAW",
                   help="write the docs section from the raw results of an earlier run")
    args = p.parse_args()
    if args.from_json:
        raw = json.loads(Path(args.from_json).read_text())
        raw["notes"] += args.note
        write_doc(section(raw))
        print(f"wrote {DOC.relative_to(ROOT)}")
        return 0
    if (os.cpu_count() or 1) < 2:
        print("storms: needs 2 cores (server on core 0, client on core 1)", file=sys.stderr)
        return 2
    only = {w.strip() for w in args.only.split(",")}
    sz = sizes(args.quick)
    info = machine()
    print_machine(info)
    notes: list[str] = list(args.note)
    if args.quick:
        notes.append("--quick: a tenth of the sizes")
    build_client()
    servers = SERVERS
    if args.servers:
        want = {w.strip().replace("-", " ") for w in args.servers.split(",")}
        servers = [s for s in SERVERS if s.name in want or s.kind in want]
    versions: dict[str, str] = {}
    if "handshakes" in only:
        bun = ensure_bun(notes) if any(s.kind == "bun" for s in servers) else None
        sock = ensure_socketify(notes) if any(s.kind == "socketify" for s in servers) else None
        if bun:
            versions["bun"] = bun
        if sock:
            versions["socketify"] = sock
        servers = [s for s in servers if s.kind == "ringcast" or s.kind in versions]
    dirty = bool(sh(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]))
    snapshot()
    LOGS.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    runs: list[dict[str, Any]] = []
    for r in range(1, args.runs + 1):
        run: dict[str, Any] = {"handshakes": {}}
        if "handshakes" in only:
            for s in servers:
                print(f"\n== run {r}: {sz.handshakes:,} handshakes, {s.name} "
                      f"(load average {loadavg()})", flush=True)
                cell = handshakes(s, sz.handshakes, f"run{r}-handshakes-{s.kind}{s.backend}")
                run["handshakes"][s.name] = cell
                print(json.dumps({k: v for k, v in cell.items() if k != "report"}), flush=True)
                time.sleep(2)
        if "subscribers" in only:
            print(f"\n== run {r}: {sum(sz.subscribers):,} subscribers, {WORKERS} workers "
                  f"(load average {loadavg()})", flush=True)
            run["subscribers"] = subscribers(sz.subscribers, f"run{r}-subscribers")
            print(json.dumps({k: v for k, v in run["subscribers"].items() if k != "reports"}),
                  flush=True)
            time.sleep(2)
        if "storm" in only:
            print(f"\n== run {r}: storm, {sum(sz.storm):,} subscribers, {WORKERS} workers "
                  f"(load average {loadavg()})", flush=True)
            run["storm"] = storm(sz.storm, f"run{r}-storm")
            print(json.dumps({k: v for k, v in run["storm"].items() if k != "reports"}),
                  flush=True)
            time.sleep(2)
        runs.append(run)
    commit = sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    raw = {"machine": info, "versions": versions, "notes": notes, "started": started,
           "argv": sys.argv[1:], "commit": commit, "dirty": dirty, "sizes": vars(sz),
           "runs": runs}
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = TMP.parent / f"storms-{stamp}.json"
    path.write_text(json.dumps(raw, indent=1) + "\n")
    text = section(raw)
    print("\n" + text)
    print(f"raw results: {path.relative_to(ROOT)}")
    if args.write_docs:
        write_doc(text)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
