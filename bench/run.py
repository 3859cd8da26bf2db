#!/usr/bin/env python3
"""The peer benchmark: ringcast against other WebSocket broadcast servers, same load.

Runs, one after another, each server pinned to core 0 and `ringcast loadtest`
pinned to core 1 (taskset), a fresh server process per scenario:

  servers    ringcast (io_uring), ringcast (epoll backend), and the reference
             servers in bench/peers/ on websockets, picows, aiohttp and socketify
             (uWebSockets), installed into bench/.peers-venv (skipped with a note
             when pip cannot install one)
  scenarios  1,000 and 10,000 subscribers, 64-byte messages, 8 in flight;
             1,000 subscribers, 16 KiB messages, 8 in flight;
             10,000 subscribers at 20 messages/s, open loop;
             10,000 idle connections (server RSS per connection)

It prints a table of ratios against ringcast (io_uring) and writes the section
"Peer benchmark (issue 5)" of docs/benchmarks.md: machine, date, commands and
the raw numbers of every run (``--runs 2`` by default, so readers see the noise).

    .venv/bin/python bench/run.py                 # the whole benchmark, twice (~25 min)
    .venv/bin/python bench/run.py --quick --runs 1 --no-docs   # a smoke test (~2 min)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PEERS = BENCH / "peers"
PEERS_VENV = BENCH / ".peers-venv"
RESULTS = BENCH / "results"
DOC = ROOT / "docs" / "benchmarks.md"
PY = ROOT / ".venv" / "bin" / "python"
SNAPSHOT = RESULTS / "tmp" / "src"
BEGIN, END = "<!-- peer-benchmark:begin -->", "<!-- peer-benchmark:end -->"
SECTION = "## Peer benchmark (issue 5)"
CEIL_BEGIN, CEIL_END = "<!-- client-ceiling:begin -->", "<!-- client-ceiling:end -->"
CEIL_SECTION = "## The load client's own ceiling (issue 5)"
SERVER_CORE, CLIENT_CORE = "0", "1"
PEER_PACKAGES = ("websockets", "picows", "aiohttp", "socketify")


@dataclass(frozen=True)
class Server:
    name: str
    kind: str                   # "ringcast" or a peer package
    backend: str = ""

    def command(self, port: int) -> list[str]:
        if self.kind == "ringcast":
            return [str(PY), "-m", "ringcast", "serve", "--port", str(port),
                    "--backend", self.backend]
        return [str(PEERS_VENV / "bin" / "python"), str(PEERS / f"{self.kind}_server.py"),
                "--port", str(port)]


SERVERS = [
    Server("ringcast io_uring", "ringcast", "io_uring"),
    Server("ringcast epoll", "ringcast", "epoll"),
    *(Server(p, p) for p in PEER_PACKAGES),
]


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    args: tuple[str, ...]
    metrics: tuple[tuple[str, str, bool], ...]   # (label, result path, higher is better)


def scenarios(quick: bool) -> list[Scenario]:
    k1, k10 = ("100", "1000") if quick else ("1000", "10000")
    dur = "2" if quick else "8"
    thr = (("deliveries/s", "run.deliveries_per_s", True),
           ("p99 per delivery, ms", "latency_ms.delivery.p99", False),
           ("server CPU µs / 1000 deliveries", "server.0.cpu_us_per_1000_deliveries", False))
    return [
        Scenario("sub1k-64B", f"{k1} subscribers, 64 B, 8 in flight",
                 ("-c", k1, "--size", "64", "--window", "8", "--duration", dur), thr),
        Scenario("sub10k-64B", f"{k10} subscribers, 64 B, 8 in flight",
                 ("-c", k10, "--size", "64", "--window", "8", "--duration", dur), thr),
        Scenario("sub1k-16KiB", f"{k1} subscribers, 16 KiB, 8 in flight",
                 ("-c", k1, "--size", "16384", "--window", "8", "--duration", dur), thr),
        Scenario("sub10k-20ps", f"{k10} subscribers, 20 msg/s open loop",
                 ("-c", k10, "--rate", "20", "--duration", dur),
                 (("p50 to last subscriber, ms", "latency_ms.to_last_subscriber.p50", False),
                  ("p99 to last subscriber, ms", "latency_ms.to_last_subscriber.p99", False),
                  ("server CPU µs / 1000 deliveries",
                   "server.0.cpu_us_per_1000_deliveries", False))),
        Scenario("idle10k", f"{k10} idle connections",
                 ("-c", k10, "--messages", "0", "--duration", "2" if quick else "3"),
                 (("server RSS bytes / connection", "server.0.rss_bytes_per_connection",
                   False),)),
    ]


LOADTEST_COMMON = ("-q", "--max-time", "20", "--drain-timeout", "3", "--message-timeout", "5",
                   "--connect-concurrency", "512")


# -- environment --------------------------------------------------------------------


def sh(cmd: list[str], **kw: Any) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False,
                              timeout=600, **kw).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def ensure_peers(log: list[str]) -> dict[str, str]:
    """Install the peer libraries into their own venv; returns name -> version."""
    py = PEERS_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    versions: dict[str, str] = {}
    for pkg in PEER_PACKAGES:
        ok = subprocess.run([str(py), "-c", f"import {pkg}"], capture_output=True,
                            check=False).returncode == 0
        if not ok:
            r = subprocess.run([str(py), "-m", "pip", "install", "-q", pkg],
                               capture_output=True, text=True, timeout=600, check=False)
            ok = r.returncode == 0 and subprocess.run(
                [str(py), "-c", f"import {pkg}"], capture_output=True, check=False
            ).returncode == 0
            if not ok:
                log.append(f"{pkg}: not installable here, skipped "
                           f"({(r.stderr or r.stdout).strip().splitlines()[-1:]})")
                continue
        out = sh([str(py), "-m", "pip", "show", pkg])
        m = re.search(r"^Version: (.+)$", out, re.M)
        versions[pkg] = m.group(1) if m else "?"
    return versions


def machine() -> dict[str, str]:
    cpu = ""
    for line in sh(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            cpu = line.split(":", 1)[1].strip()
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    commit = sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = sh(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    return {
        "cpu": cpu or platform.processor() or "?",
        "cores": str(os.cpu_count()),
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "open files limit": f"{soft} soft / {hard} hard",
        "ringcast": f"{commit}{' (with uncommitted changes)' if dirty else ''}",
        "port range": Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().strip()
        .replace("\t", "-"),
    }


# -- one cell -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_nofile() -> None:
    """The child's soft open-files limit at its hard one (a preexec_fn)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def snapshot() -> None:
    """Copy src/ringcast (with its built extensions) so that the whole benchmark runs one
    version of the code, whatever happens to the work tree meanwhile."""
    shutil.rmtree(SNAPSHOT, ignore_errors=True)
    shutil.copytree(ROOT / "src" / "ringcast", SNAPSHOT / "ringcast",
                    ignore=shutil.ignore_patterns("__pycache__", "*.o"))


def snap_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SNAPSHOT)}


def start_server(server: Server, port: int) -> subprocess.Popen[str]:
    env = {**snap_env(), "RINGCAST_LIMITS_MAX_CONNECTIONS": "20000",
           "RINGCAST_LOGGING_LEVEL": "warning", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(["taskset", "-c", SERVER_CORE, *server.command(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                            env=env, cwd=str(PEERS),
                            preexec_fn=raise_nofile)  # noqa: PLW1509 (no threads here)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.1)
    stop_server(proc)
    raise RuntimeError(f"{server.name} did not listen on {port} within 20s")


def stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_cell(server: Server, sc: Scenario, tmp: Path) -> dict[str, Any]:
    load = round(os.getloadavg()[0], 2)
    res = _run_cell(server, sc, tmp)
    res["loadavg_before"] = load
    return res


def _run_cell(server: Server, sc: Scenario, tmp: Path) -> dict[str, Any]:
    port = free_port()
    out = tmp / f"{server.kind}-{server.backend}-{sc.key}.json"
    out.unlink(missing_ok=True)
    try:
        proc = start_server(server, port)
    except RuntimeError as exc:
        return {"error": str(exc)}
    cmd = ["taskset", "-c", CLIENT_CORE, str(PY), "-m", "ringcast", "loadtest",
           f"ws://127.0.0.1:{port}/bench", *sc.args, *LOADTEST_COMMON,
           "--server-pid", str(proc.pid), "--json", str(out)]
    try:
        t0 = time.monotonic()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False,
                           env=snap_env())
        wall = time.monotonic() - t0
    except subprocess.TimeoutExpired:
        return {"error": "loadtest timed out"}
    finally:
        stop_server(proc)
    if not out.exists():
        return {"error": (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1],
                "command": shlex.join(cmd)}
    res: dict[str, Any] = json.loads(out.read_text())
    res.pop("percentile_curves", None)
    res["exit_code"] = r.returncode
    res["wall_seconds"] = round(wall, 2)
    res["command"] = shlex.join(cmd).replace(str(ROOT) + "/", "")
    return res


def pick(res: dict[str, Any], path: str) -> float | None:
    cur: Any = res
    for part in path.split("."):
        if isinstance(cur, list):
            idx = int(part)
            cur = cur[idx] if idx < len(cur) else None
        elif isinstance(cur, dict):
            cur = cur.get(part)
        else:
            return None
        if cur is None:
            return None
    return float(cur) if isinstance(cur, int | float) else None


# -- tables ---------------------------------------------------------------------------


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def cell_status(res: dict[str, Any]) -> str:
    if "error" in res:
        return "error: " + str(res["error"])[:60]
    if not res.get("pass"):
        faults = {k: v for k, v in res.get("faults", {}).items() if v}
        return "FAIL " + ", ".join(f"{k}={v}" for k, v in faults.items())
    return ""


def ratio_table(run: dict[str, dict[str, dict[str, Any]]], scs: list[Scenario],
                servers: list[Server]) -> list[str]:
    """Markdown: rows = scenario metrics, columns = servers, 'value (ratio)'."""
    base = SERVERS[0].name
    head = "| scenario | metric | " + " | ".join(s.name for s in servers) + " |"
    lines = [head, "|" + "---|" * (len(servers) + 2)]
    for sc in scs:
        for label, path, higher in sc.metrics:
            ref = pick(run.get(base, {}).get(sc.key, {}), path)
            cells = []
            for s in servers:
                res = run.get(s.name, {}).get(sc.key, {})
                v = pick(res, path)
                status = cell_status(res)
                if v is None:
                    cells.append(status or "-")
                    continue
                text = fmt(v)
                if ref and s.name != base and v:
                    ratio = v / ref
                    text += f" ({ratio:.2f}x)"
                if status:
                    text += f" **{status}**"
                cells.append(text)
            arrow = "higher is better" if higher else "lower is better"
            lines.append(f"| {sc.title} | {label} ({arrow}) | " + " | ".join(cells) + " |")
    return lines


def extra_table(run: dict[str, dict[str, dict[str, Any]]], scs: list[Scenario],
                servers: list[Server]) -> list[str]:
    """Raw numbers that are not in the ratio table, one row per cell."""
    lines = ["| server | scenario | subscribers | deliveries | msgs/s (all subs) | "
             "p50 / p99 / max per delivery ms | server CPU s | server RSS MiB | "
             "client CPU % | connect s | load avg before | result |", "|" + "---|" * 12]
    for s in servers:
        for sc in scs:
            res = run.get(s.name, {}).get(sc.key)
            if res is None:
                continue
            if "error" in res:
                lines.append(f"| {s.name} | {sc.key} | | | | | | | | | | {cell_status(res)} |")
                continue
            lat = res["latency_ms"]["delivery"]
            srv = (res.get("server") or [{}])[0]
            lines.append(
                f"| {s.name} | {sc.key} | {res['connect']['subscribers_opened']} | "
                f"{res['run']['deliveries']:,} | "
                f"{fmt(res['run']['messages_fully_delivered_per_s'])} | "
                + (f"{fmt(lat['p50'])} / {fmt(lat['p99'])} / {fmt(lat['max'])}"
                   if lat.get("count") else "-")
                + f" | {fmt(srv.get('cpu_seconds'))} | {fmt(srv.get('rss_mb_end'))} | "
                f"{fmt(res['client']['cpu_percent_of_one_core'])} | "
                f"{fmt(res['connect']['seconds'])} | {fmt(res.get('loadavg_before'))} | "
                f"{'pass' if res['pass'] else 'FAIL'} |")
    return lines


# -- docs -----------------------------------------------------------------------------


def write_doc(section: str, begin: str = BEGIN, end: str = END) -> None:
    block = f"{begin}\n{section.rstrip()}\n{end}\n"
    if DOC.exists():
        text = DOC.read_text()
        if begin in text and end in text:
            pre, _, rest = text.partition(begin)
            _, _, post = rest.partition(end)
            text = pre + block.rstrip("\n") + post
        else:
            text = text.rstrip("\n") + "\n\n" + block
    else:
        text = ("# Benchmarks\n\nMeasurements of ringcast, each in its own section with the "
                "machine, the date, the commands and the raw numbers. Sections are written "
                "by the scripts named in them; rerun the script rather than editing the "
                "numbers.\n\n" + block)
    DOC.write_text(text)


def doc_section(runs: list[dict[str, dict[str, dict[str, Any]]]], *, info: dict[str, str],
                versions: dict[str, str], notes: list[str], scs: list[Scenario],
                servers: list[Server], started: str, argv: list[str]) -> str:
    out = [SECTION, "",
           "ringcast against WebSocket broadcast servers written with other libraries, under "
           "the same load from `ringcast loadtest`, on the same machine. Written by "
           "`bench/run.py`; do not edit the numbers by hand.", "",
           "How: each server runs alone, pinned to core 0, a fresh process per scenario; "
           "the load client is pinned to core 1 (`taskset`). Every server implements the "
           "same protocol (`bench/peers/`): subscribe with a WebSocket to `/<channel>`, "
           "a message from the publisher connection is broadcast to every other subscriber "
           "of the channel. The client checks every delivery (sequence, pattern, opcode); a "
           "cell with a fault says so. Ratios are against ringcast (io_uring): above 1 means "
           "more for deliveries/s, and worse for latency, CPU and memory.", "",
           "The Python peers run on the default asyncio event loop, with compression off; "
           "socketify is the Python binding of uWebSockets (C++).", "",
           f"Date: {started}", "",
           "| machine | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in info.items()]
    out += [f"| {k} | {v} |" for k, v in versions.items()]
    out += ["", "File descriptors: 10,000 subscribers need 10,001 sockets in the client and "
            "10,001 in the server, each process under the 20,000 limit, so the 10k scenarios "
            "run at full size in one process pair.", ""]
    if notes:
        out += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    out += ["Commands (the client's; `PORT` and `PID` are the server's):", "", "```sh",
            f".venv/bin/python bench/run.py {shlex.join(argv)}".rstrip()]
    for sc in scs:
        out.append("taskset -c 1 .venv/bin/python -m ringcast loadtest "
                   f"ws://127.0.0.1:PORT/bench {shlex.join(sc.args)} "
                   f"{shlex.join(LOADTEST_COMMON)} --server-pid PID --json out.json")
    out += ["```", "", "Servers:", "", "```sh"]
    for s in servers:
        cmd = " ".join(s.command(0)).replace(str(ROOT) + "/", "").replace("--port 0",
                                                                            "--port PORT")
        out.append(f"taskset -c 0 {cmd}")
    out += ["```", ""]
    for i, run in enumerate(runs, 1):
        out += [f"### Run {i} of {len(runs)}", "", "Ratios:", ""]
        out += ratio_table(run, scs, servers)
        out += ["", "Raw numbers:", ""]
        out += extra_table(run, scs, servers)
        out.append("")
    return "\n".join(out)


# -- the client's ceiling -------------------------------------------------------------


def ceiling(runs: int, quick: bool) -> str:
    """How many deliveries/s the load client handles on its one core.

    ringcast (io_uring) on core 0 and the client on core 1, 1,000 subscribers,
    64-byte messages; the window sets how many frames the server coalesces per
    send, so per read. The client's ceiling is its deliveries/s divided by the
    share of its core it used (its own CPU time, user + system, over the run).
    """
    server = SERVERS[0]
    rows = ["| run | window | frames per read | deliveries/s | client CPU, % of one core | "
            "client CPU µs / 1000 deliveries | ceiling: deliveries/s at 100% | result |",
            "|" + "---|" * 8]
    tmp = RESULTS / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    subs = "100" if quick else "1000"
    args = ("-c", subs, "--size", "64", "--duration", "2" if quick else "8")
    for r in range(runs):
        for window in ("8", "16", "32"):
            sc = Scenario("ceiling", "", (*args, "--window", window), ())
            res = run_cell(server, sc, tmp)
            print(f"ceiling run {r + 1} window {window}: {cell_status(res) or 'ok'}",
                  file=sys.stderr)
            if "error" in res:
                rows.append(f"| {r + 1} | {window} | | | | | | {cell_status(res)} |")
                continue
            d = res["run"]["deliveries_per_s"]
            pct = res["client"]["cpu_percent_of_one_core"]
            rows.append(f"| {r + 1} | {window} | {fmt(res['run']['frames_per_read'])} | "
                        f"{fmt(d)} | {fmt(pct)} | "
                        f"{fmt(res['client']['cpu_us_per_1000_deliveries'])} | "
                        f"{fmt(d * 100 / pct) if pct else '-'} | "
                        f"{'pass' if res['pass'] else 'FAIL'} |")
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cmd = ("taskset -c 1 .venv/bin/python -m ringcast loadtest ws://127.0.0.1:PORT/bench "
           f"{shlex.join(args)} --window W {shlex.join(LOADTEST_COMMON)} --server-pid PID")
    return "\n".join([
        CEIL_SECTION, "",
        "The load client must not be what a benchmark measures: it has to sustain at least "
        "1 million deliveries/s on one core when the server coalesces 8 frames per read. "
        "ringcast (io_uring) runs on core 0, the client on core 1; the window (messages "
        "in flight) sets how many frames the server puts in one send. The client's "
        "ceiling is its deliveries/s divided by the share of its core it used. Written "
        "by `bench/run.py --ceiling`.", "",
        f"Date: {started}. Machine: as in the peer benchmark above. Load average when it "
        f"ended: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (anything near 2 means the "
        "two cores were shared with other work and the numbers are low).", "",
        "```sh", "taskset -c 0 .venv/bin/ringcast serve --port PORT --backend io_uring",
        cmd, "```", "", *rows, "",
        "Most of the client's CPU time is the kernel's (receiving on loopback, and sending "
        "the ACKs); its Python and C parsing are a small share of it.", ""])


# -- main -----------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="a tenth of the connections, 2 s")
    p.add_argument("--servers", help="comma-separated subset of: "
                   + ", ".join(s.name.replace(" ", "-") for s in SERVERS))
    p.add_argument("--scenarios", help="comma-separated subset of scenario keys")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    p.add_argument("--ceiling", action="store_true",
                   help="measure the load client's own ceiling instead of the peers")
    p.add_argument("--from-json", metavar="RAW",
                   help="rewrite the docs section from a raw results file of an earlier run")
    p.add_argument("--note", action="append", default=[], help="a note for the docs section")
    args = p.parse_args()
    if args.from_json:
        raw = json.loads(Path(args.from_json).read_text())
        scs = scenarios(quick=any("--quick" in n for n in raw["notes"]))
        names = {name for run in raw["runs"] for name in run}
        write_doc(doc_section(raw["runs"], info=raw["machine"], versions=raw["versions"],
                              notes=raw["notes"] + args.note, scs=scs,
                              servers=[s for s in SERVERS if s.name in names],
                              started=raw["started"], argv=raw.get("argv", [])))
        print(f"wrote {DOC.relative_to(ROOT)}")
        return 0
    if (os.cpu_count() or 1) < 2:
        print("bench: needs 2 cores (server on core 0, client on core 1)", file=sys.stderr)
        return 2
    if args.ceiling:
        snapshot()
        section = ceiling(args.runs, args.quick)
        print(section)
        if not args.no_docs:
            write_doc(section, CEIL_BEGIN, CEIL_END)
            print(f"wrote {DOC.relative_to(ROOT)}")
        return 0
    notes: list[str] = []
    versions = ensure_peers(notes)
    servers = [s for s in SERVERS if s.kind == "ringcast" or s.kind in versions]
    if args.servers:
        want = {w.strip().replace("-", " ") for w in args.servers.split(",")}
        servers = [s for s in servers if s.name in want or s.kind in want]
    scs = scenarios(args.quick)
    if args.scenarios:
        keys = set(args.scenarios.split(","))
        scs = [s for s in scs if s.key in keys]
    if args.quick:
        notes.append("--quick: a tenth of the connections and 2-second scenarios")
    info = machine()
    info["load average at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    snapshot()
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    tmp = RESULTS / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, dict[str, dict[str, Any]]]] = []
    total = args.runs * len(servers) * len(scs)
    n = 0
    for r in range(args.runs):
        run: dict[str, dict[str, dict[str, Any]]] = {}
        for s in servers:
            for sc in scs:
                n += 1
                print(f"[{n}/{total}] run {r + 1}: {s.name}: {sc.title} ...", end=" ",
                      flush=True, file=sys.stderr)
                res = run_cell(s, sc, tmp)
                run.setdefault(s.name, {})[sc.key] = res
                main_metric = pick(res, sc.metrics[0][1])
                print(f"{sc.metrics[0][0]} {fmt(main_metric)} {cell_status(res)}",
                      file=sys.stderr)
                time.sleep(1)
        runs.append(run)
        print(f"\nRun {r + 1} of {args.runs}:")
        print("\n".join(ratio_table(run, scs, servers)))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    raw = RESULTS / f"peers-{stamp}.json"
    raw.write_text(json.dumps({"machine": info, "versions": versions, "notes": notes,
                               "started": started, "argv": sys.argv[1:], "runs": runs},
                              indent=1) + "\n")
    print(f"\nraw results: {raw.relative_to(ROOT)}")
    if not args.no_docs:
        write_doc(doc_section(runs, info=info, versions=versions, notes=notes, scs=scs,
                              servers=servers, started=started, argv=sys.argv[1:]))
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
