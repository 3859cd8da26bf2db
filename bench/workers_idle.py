#!/usr/bin/env python3
"""What workers cost while nothing happens: server CPU of ``ringcast serve`` with W workers
and no client at all, for one or more builds (issue 18).

A million connections need at least 51 workers on this machine (20,000 open files a
process), so whatever every worker does for every other worker while idle is paid
N(N-1) times. For each W in --workers and each build (interleaved, --runs times): start
``ringcast serve`` with ``server.workers = W``, wait until ``/healthz`` says every worker
is linked, let it settle 2 s, then read the CPU (user + system) of the supervisor and all
its workers over --seconds, and the context switches of the whole machine meanwhile.
Builds are prepared as in bench/builds.py (a git worktree per revision, ``.`` for the work
tree); nothing else should run meanwhile.

    .venv/bin/python bench/workers_idle.py --build 449d0d6 --build . --runs 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from builds import Build, prepare
from run import PY, free_port, machine

from ringcast.loadtest import procstat


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its workers, as the load tester reads a server's."""
    return sum(procstat.sample(p, pss=False).cpu_ns
               for p in procstat.with_children([pid])) / 1e9


def context_switches() -> int:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("ctxt "):
            return int(line.split()[1])
    raise RuntimeError("no ctxt line in /proc/stat")


def linked(port: int, workers: int) -> bool:
    """/healthz (of whichever worker answers) says all ``workers`` are linked."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/healthz")
        body = conn.getresponse().read().decode()
        conn.close()
    except OSError:
        return False
    return workers == 1 or f"workers linked: {workers}/{workers}" in body


def measure(build: Build, workers: int, seconds: float) -> dict[str, float | str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(build.src), "RINGCAST_SERVER_WORKERS": str(workers),
           "RINGCAST_LOGGING_LEVEL": "warning"}
    server = subprocess.Popen([str(PY), "-m", "ringcast", "serve", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not linked(port, workers):
            if server.poll() is not None or time.monotonic() > deadline:
                return {"error": f"not linked within 60 s (exit {server.poll()})"}
            time.sleep(0.2)
        time.sleep(2)  # the start-up's last steps (collections, first reports)
        cpu0, cs0, t0 = tree_cpu(server.pid), context_switches(), time.monotonic()
        time.sleep(seconds)
        cpu1, cs1, t1 = tree_cpu(server.pid), context_switches(), time.monotonic()
    finally:
        server.terminate()
        server.wait(30)
    return {"cores": (cpu1 - cpu0) / (t1 - t0), "context_switches_per_s": (cs1 - cs0) / (t1 - t0)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", action="append", required=True,
                   help="a git revision, or . for the work tree (one or more)")
    p.add_argument("--workers", default="1,10,40,58", help="worker counts (1,10,40,58)")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    builds = [prepare(label) for label in args.build]
    print(f"# ringcast workers while idle, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    for k, v in machine().items():
        print(f"# {k}: {v}")
    print(f"# command: {shlex.join(['bench/workers_idle.py', *sys.argv[1:]])}\n")
    print("| run | workers | " + " | ".join(f"{b.label}: cores, context switches/s"
                                           for b in builds) + " |")
    print("|---|---|" + "---|" * len(builds))
    for run in range(1, args.runs + 1):
        for w in counts:
            cells = []
            for b in builds:
                r = measure(b, w, args.seconds)
                cells.append(str(r["error"]) if "error" in r else
                             f"{r['cores']:.3f}, {r['context_switches_per_s']:,.0f}")
            print(f"| {run} | {w} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
