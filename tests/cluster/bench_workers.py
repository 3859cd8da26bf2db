"""Benchmark for docs/scaling.md: 1 worker vs 2, and the cost of the cross-worker hand-off.

Run from the repository root (not collected by pytest)::

    .venv/bin/python -m tests.cluster.bench_workers [--subscribers 2000] [--duration 5]

1. Fan-out, 1 vs 2 workers: ``ringcast loadtest`` (closed loop, 2 WebSocket
   publishers, 64-byte messages) against a node with 1 worker, then 2, with
   ``--server-pid`` on every worker for CPU per delivery.
2. Hand-off: one publisher blasts N 64-byte messages (frames prepared in advance)
   at one subscriber, (a) on 1 worker, (b) on 2 workers with publisher and
   subscriber on worker 0 (worker 1 still receives every hand-off and has nobody to
   deliver to), (c) publisher on worker 0, subscriber on worker 1. Each worker's CPU
   comes from /proc/<pid>/task/*/schedstat; the wall time ends when the subscriber
   has every byte.

The load client runs on the same machine as the server and competes for its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.rawws import OP_TEXT, frame

from .procs import Node
from .wsclient import Conn, open_on_workers

ROOT = Path(__file__).resolve().parents[2]
RINGCAST = str(ROOT / ".venv" / "bin" / "ringcast")
NODE_ENV = {"LIMITS_PING_INTERVAL": 3600, "LIMITS_HANDSHAKE_TIMEOUT": 120,
            "LIMITS_QUEUE_MAX_BYTES": 64 << 20}


def cpu_ns(pid: int) -> int:
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
    return total


def pids_of(node: Node) -> dict[int, int]:
    return node.worker_pids() if node.workers > 1 else {0: node.pid}


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- 1. fan-out through ringcast loadtest ---------------------------------------------


def start(workers: int) -> Node:
    """A node whose workers are linked to each other.

    Read from the debug log rather than by probing /healthz: a probe closed before
    the links are made can leave a flush deadline on an id a link then reuses (see
    test_link_made_after_a_restart_survives_close_timeout), which would kill that
    link in the middle of the benchmark.
    """
    node = Node.start(workers, LOGGING_LEVEL="debug", **NODE_ENV)
    want = {(i, j) for i in range(workers) for j in range(workers) if i != j}
    deadline = time.monotonic() + 15
    while True:
        got = {(int(m[1]), int(m[2])) for m in
               re.finditer(r"\[worker (\d+)\] linked to worker (\d+)", node.stderr_text())}
        if want <= got:
            return node
        if time.monotonic() > deadline:
            raise SystemExit(f"workers not linked:\n{node.stderr_text()}")
        time.sleep(0.02)


def fanout(workers: int, subscribers: int, duration: float, window: int) -> dict[str, Any]:
    node = start(workers)
    try:
        pids = pids_of(node)
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [RINGCAST, "loadtest", f"ws://127.0.0.1:{node.port}/bench",
                   "-c", str(subscribers), "-d", str(duration), "--window", str(window),
                   "--publishers", "2", "--size", "64", "--quiet", "--json", out.name]
            for pid in pids.values():
                cmd += ["--server-pid", str(pid)]
            before = loadavg()
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120,
                                  check=False)
            if proc.returncode != 0:
                raise SystemExit(f"loadtest failed ({proc.returncode}):\n{proc.stdout}\n"
                                 f"{proc.stderr}")
            result = json.loads(Path(out.name).read_text())
    finally:
        node.stop()
        node.cleanup()
    run = result["run"]
    servers = result.get("server") or result.get("servers") or []
    return {
        "workers": workers,
        "window": window,
        "command": shlex.join(["ringcast", *cmd[1:]]).replace(out.name, "out.json"),
        "loadavg_before": before,
        "deliveries_per_s": run["deliveries_per_s"],
        "messages_per_s": run["messages_fully_delivered_per_s"],
        "latency_p50_ms": result["latency_ms"]["delivery"]["p50"],
        "latency_p99_ms": result["latency_ms"]["delivery"]["p99"],
        "faults": {k: v for k, v in result["faults"].items() if v},
        "server": servers,
        "client": result.get("client"),
        "stdout": proc.stdout,
    }


# -- 2. the hand-off ------------------------------------------------------------------


class Counter(Conn):
    """A subscriber that only counts the bytes it receives once upgraded."""

    nbytes = 0

    def data_received(self, data: bytes) -> None:
        if self.websocket:
            self.nbytes += len(data)
        else:
            super().data_received(data)
            if self.websocket:
                self.nbytes += len(self.buf)
                self.buf.clear()


async def _blast(node: Node, pub_worker: int, sub_worker: int, n: int) -> dict[str, Any]:
    payload = b"x" * 64
    frame_out = len(payload) + 2                    # server -> client: 2-byte header
    loop = asyncio.get_running_loop()
    sub: Counter | None = None
    while sub is None:                              # a Counter on sub_worker
        _, c = await loop.create_connection(Counter, "127.0.0.1", node.port)
        health = await c.healthz()
        c.worker = int(health.split("worker: ")[1].split()[0])
        if c.worker == sub_worker:
            await c.upgrade("h")
            sub = c
        else:
            c.close()
    pub = (await open_on_workers(node.port, {pub_worker: 1}, "h"))[pub_worker][0]
    blob = frame(OP_TEXT, payload) * n
    pids = pids_of(node)
    cpu0 = {w: cpu_ns(p) for w, p in pids.items()}
    t0 = time.perf_counter()
    assert pub.transport is not None
    pub.transport.write(blob)
    want = n * frame_out
    while sub.nbytes < want:
        await asyncio.sleep(0.001)
        if time.perf_counter() - t0 > 120:
            raise SystemExit(f"hand-off blast: {sub.nbytes}/{want} bytes after 120 s")
    wall = time.perf_counter() - t0
    # A worker with nobody to deliver to may still be reading hand-offs: wait
    # until every worker is idle (< 0.2 ms of CPU in 50 ms) before reading CPU.
    last = {w: cpu_ns(p) for w, p in pids.items()}
    while True:
        await asyncio.sleep(0.05)
        now = {w: cpu_ns(p) for w, p in pids.items()}
        if all(now[w] - last[w] < 200_000 for w in pids):
            break
        last = now
    cpu = {w: (last[w] - cpu0[w]) / 1e9 for w in pids}
    pub.close()
    sub.close()
    return {"wall_s": wall, "messages_per_s": n / wall,
            "cpu_s": cpu, "cpu_us_per_message": {w: c / n * 1e6 for w, c in cpu.items()}}


def handoff(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, workers, pub_w, sub_w in (("a: 1 worker, same worker", 1, 0, 0),
                                        ("b: 2 workers, pub+sub on worker 0", 2, 0, 0),
                                        ("c: 2 workers, pub on 0, sub on 1", 2, 0, 1)):
        node = start(workers)
        try:
            before = loadavg()
            out[name] = asyncio.run(_blast(node, pub_w, sub_w, n))
            out[name]["loadavg_before"] = before
        finally:
            node.stop()
            node.cleanup()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--windows", default="64,256",
                        help="closed-loop windows (messages in flight), comma-separated")
    parser.add_argument("--handoff-messages", type=int, default=50_000)
    parser.add_argument("--json", help="write every number here")
    args = parser.parse_args()

    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(), "kernel": platform.release(),
        "python": platform.python_version(),
        "command": shlex.join([sys.executable.rsplit("/", 1)[-1], "-m",
                               "tests.cluster.bench_workers", *sys.argv[1:]]),
    }
    windows = [int(w) for w in args.windows.split(",")]
    report["fanout"] = [fanout(w, args.subscribers, args.duration, win)
                        for win in windows for w in (1, 2)]
    report["handoff"] = handoff(args.handoff_messages)

    print(f"# {report['date']}  nproc {report['nproc']}  kernel {report['kernel']}")
    print(f"## fan-out: {args.subscribers} subscribers, 2 ws publishers, 64 B, "
          f"{args.duration} s per run")
    for r in report["fanout"]:
        print(f"window {r['window']}, workers {r['workers']}: "
              f"{r['deliveries_per_s']:,.0f} deliveries/s, "
              f"{r['messages_per_s']:,.0f} msg/s, p50 {r['latency_p50_ms']:.1f} ms, "
              f"p99 {r['latency_p99_ms']:.1f} ms, faults {r['faults'] or 'none'}, "
              f"load before {r['loadavg_before']}")
        for line in r["stdout"].splitlines():
            if line.startswith(("server", "client")):
                print("    " + line)
    print(f"## hand-off: {args.handoff_messages} messages of 64 B, one subscriber")
    for name, r in report["handoff"].items():
        cpu = ", ".join(f"worker {w} {us:.2f} µs" for w, us in r["cpu_us_per_message"].items())
        print(f"{name}: {r['messages_per_s']:,.0f} msg/s; CPU per message: {cpu}; "
              f"load before {r['loadavg_before']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
