"""Keepalive at 100,000 connections (issue 18): server CPU per ping-pong.

100,000 idle subscribers (6 storm.c hold processes from their own source addresses,
pinned to core 1; storm.c answers every ping with a pong) on `ringcast serve` with 8
workers (not pinned), once with `limits.ping_interval = 0` (no keepalive) and once with
`ping_interval = 5`, interleaved, --runs times. Once every client has all its connections
open and 10 s have passed (the connect storm's work is over, and the first round of pings
started), the server's CPU (supervisor and workers, /proc utime+stime) is read over a
--window of idle seconds, and the pings the loop sent meanwhile are summed over the
workers' `ringcast_keepalive_pings_total` (a scrape reaches one worker: scrapes repeat
until every worker has answered, before and after). Then:

    CPU per ping-pong = (CPU with pings - CPU without) / pings in the window

Nothing is published: the subscribers are idle, as most of a fan-out server's are.

    .venv/bin/python bench/keepalive.py --runs 2 --write-docs     # about 8 minutes
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import importlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
storms = importlib.import_module("storms")  # the client fleet, the server, the machine
storms.SNAPSHOT = storms.TMP / "keepalive-src"
storms.LOGS = storms.TMP / "keepalive-logs"

SUBSCRIBERS = 100_000
INTERVAL = 5.0
SETTLE = 10.0
DOC = storms.DOC
BEGIN, END = "<!-- keepalive:begin -->", "<!-- keepalive:end -->"
SECTION = "## Keepalive at 100,000 connections (issue 18)"
PINGS = re.compile(r'^ringcast_keepalive_pings_total\{worker="(\d+)"\} (\S+)$', re.M)


def pings_sent(port: int, workers: int) -> float:
    """ringcast_keepalive_pings_total summed over every worker (new connections until
    each has answered a scrape)."""
    seen: dict[str, float] = {}
    for _ in range(400):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        seen.update({w: float(v) for w, v in PINGS.findall(text)})
        if len(seen) == workers:
            return sum(seen.values())
    raise RuntimeError(f"only workers {sorted(seen)} answered /metrics")


def cell(interval: float, window: float, tag: str) -> dict[str, Any]:
    per_client = storms.split(SUBSCRIBERS, storms.CLIENTS)
    storms.wait_conntrack(storms.CONNTRACK_QUIET)
    res: dict[str, Any] = {"ping_interval": interval, "loadavg_before": storms.loadavg()}
    port = storms.free_port()
    srv = storms.start_server(storms.RINGCAST, port, storms.LOGS / f"{tag}.log", pin=False,
                              workers=storms.WORKERS,
                              settings={"LIMITS_PING_INTERVAL": f"{interval:g}"})
    fleet = None
    try:
        every = [srv.proc.pid, *storms.children(srv.proc.pid)]
        cmds = [storms.client_command("hold", port, k, i, ["--duration", "600"])
                for i, k in enumerate(per_client)]
        fleet = storms.Fleet(cmds, storms.LOGS / f"{tag}-clients.log")
        got = fleet.wait("connected", 300)
        if got is None:
            return {**res, "error": "not every client connected within 300 s"}
        time.sleep(SETTLE)
        pings0, cpu0, t0 = pings_sent(port, storms.WORKERS), storms.cpu_seconds(every), \
            time.monotonic()
        time.sleep(window)
        cpu1, t1 = storms.cpu_seconds(every), time.monotonic()
        pings1 = pings_sent(port, storms.WORKERS)
        reports = fleet.stop()
        res.update(server_command=srv.command, client_commands=[" ".join(c) for c in cmds],
                   opened=storms.total(got, "connect", "opened"), seconds=t1 - t0,
                   cpu_s=cpu1 - cpu0, cores=(cpu1 - cpu0) / (t1 - t0), pings=pings1 - pings0,
                   open_at_end=sum(r["messages"]["open"] for r in reports if r),
                   server_closes=sum(r["messages"]["server_closes"] for r in reports if r),
                   pongs_failed=sum(r["messages"]["pongs_failed"] for r in reports if r))
    finally:
        if fleet is not None:
            fleet.stop()
        storms.stop(srv.proc)
        res["log"] = storms.log_problems(srv.log)
    return res


def table(runs: list[dict[str, Any]]) -> list[str]:
    lines = ["| run | ping_interval | connections open (start / end) | closed by the server "
             "| window, s | server CPU, cores | pings sent in the window | CPU per ping-pong, "
             "µs | server log warnings | load avg before |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for i, run in enumerate(runs, 1):
        off, on = run["off"], run["on"]
        per = ((on["cpu_s"] - off["cpu_s"] * on["seconds"] / off["seconds"]) * 1e6
               / on["pings"]) if on.get("pings") and "cpu_s" in off else None
        for c, value in ((off, ""), (on, f"{per:.1f}" if per is not None else "n/a")):
            if "error" in c:
                lines.append(f"| {i} | {c['ping_interval']:g} | {c['error']} | | | | | | | |")
                continue
            lines.append(
                f"| {i} | {c['ping_interval']:g} | {c['opened']:,} / {c['open_at_end']:,} | "
                f"{c['server_closes']:,} | {c['seconds']:.1f} | {c['cores']:.3f} | "
                f"{c['pings']:,.0f} | {value} | {c['log']['count']} | {c['loadavg_before']} |")
    return lines


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc:
        doc = doc[:doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip("\n") + f"\n\n{SECTION}\n\n{block}\n"
    DOC.write_text(doc)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--window", type=float, default=30.0, help="seconds measured (30)")
    p.add_argument("--write-docs", action="store_true")
    args = p.parse_args()
    info = storms.machine()
    storms.print_machine(info)
    storms.build_client()
    storms.snapshot()
    storms.LOGS.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    runs = []
    for r in range(1, args.runs + 1):
        run = {}
        for key, interval in (("off", 0.0), ("on", INTERVAL)):
            print(f"\n== run {r}: ping_interval {interval:g} (load {storms.loadavg()})",
                  flush=True)
            run[key] = cell(interval, args.window, f"run{r}-{key}")
            print(json.dumps(run[key]), flush=True)
        runs.append(run)
    raw = {"machine": info, "started": started, "runs": runs}
    out = storms.TMP.parent / f"keepalive-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(raw, indent=1))
    lines = table(runs)
    print("\n".join(lines))
    if args.write_docs:
        commands = runs[0]["on"].get("server_command", ""), \
            *runs[0]["on"].get("client_commands", [])[:1]
        text = "\n".join([
            f"Written by `bench/keepalive.py`. Date: {started}. ringcast: commit "
            f"`{info.get('ringcast', '?')}`. Machine: {info.get('nproc')} cores "
            f"({info.get('cpu')}), {info.get('memory')}, kernel {info.get('kernel')}, "
            f"Python {info.get('python')}.", "",
            "```sh", ".venv/bin/python bench/keepalive.py --runs 2 --write-docs",
            *(f"# {c}" for c in commands if c), "```", "", *lines, "",
            f"Raw numbers: `{out.relative_to(storms.ROOT)}`."])
        write_doc(text)
        print(f"wrote {DOC.relative_to(storms.ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
