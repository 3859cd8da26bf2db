#!/usr/bin/env python3
"""ringcast against itself: two builds (git revisions, or the work tree), same load.

What a change costs or saves, measured side by side in one run, the builds interleaved
scenario by scenario so that the machine's noise falls on both alike. Each build is a
``git worktree`` of its revision under bench/results/tmp/builds/, its C core compiled
there; the work tree is snapshotted (``.`` stands for it). The server is pinned to core
0 and ``ringcast loadtest`` (always this checkout's) to core 1, as in bench/run.py.

Scenarios (``--scenarios``, all by default):

  publish   one subscriber, a WebSocket publisher, 32-byte messages, 64 in flight:
            server CPU per published message (the framing cost, paid once per message)
  http-publish  the same published with POST /publish/<channel> on keep-alive
            connections: server CPU per publish and publishes per second
  pongs     10,000 idle subscribers answering a ping every second for 12 s, beside the
            same with pings off: server CPU per ping-pong
  idle      10,000 idle subscribers: server RSS per connection
  fanout    1,000 subscribers, 64-byte messages, 8 in flight: server CPU per delivery

    .venv/bin/python bench/builds.py --build dc6d8ee --build . --runs 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (
    CLIENT_CORE,
    PY,
    ROOT,
    SERVER_CORE,
    free_port,
    machine,
    pick,
)

BUILDS = ROOT / "bench" / "results" / "tmp" / "builds"


@dataclass(frozen=True)
class Build:
    """A ringcast build: ``label`` (a revision, or ``.`` for the work tree) and the
    directory whose ``src`` holds its code and compiled extensions."""

    label: str
    src: Path


def prepare(label: str) -> Build:
    """Check out ``label`` (or snapshot the work tree) and compile its C core there."""
    if label == ".":
        dest = BUILDS / "worktree"
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(ROOT / "src", dest / "src",
                        ignore=shutil.ignore_patterns("__pycache__", "*.o"))
        return Build("work tree", dest / "src")
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", label],
                         capture_output=True, text=True, check=True).stdout.strip()
    dest = BUILDS / rev
    if not (dest / "src" / "ringcast").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--force", "--detach",
                        str(dest), rev], check=True, capture_output=True)
    if not list((dest / "src" / "ringcast" / "ringio").glob("_ringio*.so")):
        subprocess.run([str(PY), "setup.py", "-q", "build_ext", "--inplace"], cwd=dest,
                       check=True, capture_output=True)
    return Build(rev, dest / "src")


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    env: dict[str, str]
    args: tuple[str, ...]


SCENARIOS = [
    Scenario("publish", "1 subscriber, WebSocket publisher, 32 B, 64 in flight",
             {}, ("-c", "1", "--size", "32", "--window", "64", "--messages", "100000")),
    Scenario("http-publish", "1 subscriber, HTTP publisher (keep-alive), 32 B, 64 in flight",
             {}, ("-c", "1", "--size", "32", "--window", "64", "--messages", "50000",
                  "--publisher", "http")),
    Scenario("pongs", "10,000 idle subscribers, a ping every second, 12 s",
             {"RINGCAST_LIMITS_PING_INTERVAL": "1", "RINGCAST_LIMITS_PING_TIMEOUT": "30"},
             ("-c", "10000", "--messages", "0", "--duration", "12")),
    Scenario("nopings", "10,000 idle subscribers, pings off, 12 s",
             {"RINGCAST_LIMITS_PING_INTERVAL": "0"},
             ("-c", "10000", "--messages", "0", "--duration", "12")),
    Scenario("idle", "10,000 idle subscribers",
             {"RINGCAST_LIMITS_PING_INTERVAL": "0"},
             ("-c", "10000", "--messages", "0", "--duration", "3")),
    Scenario("fanout", "1,000 subscribers, 64 B, 8 in flight",
             {}, ("-c", "1000", "--size", "64", "--window", "8", "--messages", "20000")),
]
LOADTEST_COMMON = ("-q", "--max-time", "60", "--drain-timeout", "3", "--message-timeout", "5",
                   "--connect-concurrency", "512")


def run_cell(build: Build, sc: Scenario, out: Path) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(build.src), "RINGCAST_LIMITS_MAX_CONNECTIONS": "20000",
           "RINGCAST_LOGGING_LEVEL": "warning", **sc.env}
    server = subprocess.Popen(
        ["taskset", "-c", SERVER_CORE, str(PY), "-m", "ringcast", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not _listening(port):
            if server.poll() is not None or time.monotonic() > deadline:
                return {"error": f"the server did not start (exit {server.poll()})"}
            time.sleep(0.05)
        cmd = ["taskset", "-c", CLIENT_CORE, str(PY), "-m", "ringcast", "loadtest",
               f"ws://127.0.0.1:{port}/bench", *sc.args, *LOADTEST_COMMON,
               "--server-pid", str(server.pid), "--json", str(out)]
        load = round(os.getloadavg()[0], 2)
        client = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False,
                                env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    finally:
        server.terminate()
        server.wait(10)
    if not out.exists():
        return {"error": (client.stderr.strip().splitlines() or ["no report"])[-1]}
    res: dict[str, Any] = json.loads(out.read_text())
    res.pop("percentile_curves", None)
    res["loadavg_before"] = load
    res["command"] = shlex.join(cmd[3:]).replace(str(ROOT) + "/", "")
    return res


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def figures(cells: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """The numbers of one build in one run, from its scenario reports."""
    def cpu(key: str) -> float | None:
        return pick(cells.get(key, {}), "server.0.cpu_seconds")

    out: dict[str, float | None] = {}
    messages = pick(cells.get("publish", {}), "run.messages_sent")
    publish_cpu = cpu("publish")
    out["µs server CPU per published message"] = (
        publish_cpu / messages * 1e6 if publish_cpu is not None and messages else None)
    out["WebSocket publishes per second"] = pick(cells.get("publish", {}),
                                                  "run.messages_fully_delivered_per_s")
    http_messages = pick(cells.get("http-publish", {}), "run.messages_sent")
    http_cpu = cpu("http-publish")
    out["µs server CPU per HTTP publish"] = (
        http_cpu / http_messages * 1e6 if http_cpu is not None and http_messages else None)
    out["HTTP publishes per second"] = pick(cells.get("http-publish", {}),
                                             "run.messages_fully_delivered_per_s")
    pongs = pick(cells.get("pongs", {}), "run.pings_answered")
    with_pings, without = cpu("pongs"), cpu("nopings")
    out["µs server CPU per ping-pong"] = (
        (with_pings - without) / pongs * 1e6
        if with_pings is not None and without is not None and pongs else None)
    out["server RSS bytes per idle connection"] = pick(
        cells.get("idle", {}), "server.0.rss_bytes_per_connection")
    per_k = pick(cells.get("fanout", {}), "server.0.cpu_us_per_1000_deliveries")
    out["µs server CPU per delivery"] = per_k / 1000 if per_k is not None else None
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", action="append", required=True,
                   help="a git revision, or . for the work tree (give two or more)")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--scenarios", help="comma-separated subset of: "
                   + ", ".join(s.key for s in SCENARIOS))
    p.add_argument("--json", type=Path, help="write every report here")
    args = p.parse_args()
    keys = args.scenarios.split(",") if args.scenarios else [s.key for s in SCENARIOS]
    chosen = [s for s in SCENARIOS if s.key in keys]
    builds = [prepare(label) for label in args.build]
    tmp = BUILDS / "reports"
    tmp.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    print(f"# ringcast builds compared, {started:%Y-%m-%d %H:%M} UTC")
    for k, v in machine().items():
        print(f"# {k}: {v}")
    print(f"# load average before the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"# command: {shlex.join(['bench/builds.py', *sys.argv[1:]])}")
    every: list[dict[str, Any]] = []
    for run in range(1, args.runs + 1):
        cells: dict[str, dict[str, dict[str, Any]]] = {b.label: {} for b in builds}
        for sc in chosen:
            for b in builds:
                out = tmp / f"{b.label.replace(' ', '_')}-{sc.key}-{run}.json"
                out.unlink(missing_ok=True)
                res = run_cell(b, sc, out)
                cells[b.label][sc.key] = res
                every.append({"run_number": run, "build": b.label, "scenario": sc.key,
                              "report": res})
                if "error" in res:
                    print(f"#   run {run} {b.label} {sc.key}: {res['error']}")
        print(f"\n## Run {run} of {args.runs}\n")
        labels = [b.label for b in builds]
        print("| figure | " + " | ".join(labels) + " | ratio |")
        print("|---|" + "---|" * (len(labels) + 1))
        rows = {b.label: figures(cells[b.label]) for b in builds}
        for name in rows[labels[0]]:
            values = [rows[label][name] for label in labels]
            first, last = values[0], values[-1]
            ratio = f"{last / first:.2f}x" if first and last is not None else "-"
            shown = [f"{v:,.2f}" if v is not None else "-" for v in values]
            print(f"| {name} | " + " | ".join(shown) + f" | {ratio} |")
        for sc in chosen:
            for b in builds:
                cmd = cells[b.label][sc.key].get("command")
                if cmd and b is builds[0] and run == 1:
                    env = " ".join(f"{k}={v}" for k, v in sc.env.items())
                    print(f"\n`{sc.key}`: {sc.title}: `{env} ringcast serve` + `{cmd}`")
    if args.json:
        args.json.write_text(json.dumps(every, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
