#!/usr/bin/env python3
"""Compressed fan-out (issue 14): permessage-deflate on ringcast beside uWebSockets.

1 KiB JSON messages (`ringcast loadtest --payload json --size 1024`, a ticker-like
object that deflates as a real feed does), 8 in flight, published over the loadtest's
WebSocket publisher connection, to 1,000 and to 10,000 subscribers, each with
compression on and off, on:

  ringcast io_uring, ringcast epoll   `ringcast serve --backend X`; compression on is
                                      the default (one zlib stream per worker and window,
                                      each message compressed once for every subscriber
                                      that agreed), off is RINGCAST_COMPRESSION_ENABLED=false
  bun                                 bench/peers/bun_server.js (Bun.serve: uWebSockets),
                                      with --compression for the compressed cells:
                                      uWebSockets' shared compressor (one zlib stream for
                                      every connection) and compressed publishes

In a compressed cell every subscriber offers permessage-deflate (`--compression`, as a
browser does) and must get it; in an uncompressed one nobody offers and the server has
it off. Per cell: deliveries/s, server CPU µs per delivery, wire and payload bytes per
delivery, faults; for each server the compressed/uncompressed CPU-per-delivery ratio at
the same subscriber count, and ringcast's ratios to bun.

And, ringcast only (both backends, compression on in the server): server RSS per idle
connection with 10,000 connections that agreed on permessage-deflate and with 10,000
that did not (`--messages 0`, with and without `--compression`).

Each server runs alone pinned to core 0 (taskset), a fresh process per cell, the load
client pinned to core 1, as in bench/run.py. ringcast runs from a snapshot of
src/ringcast taken at the start (bench/results/tmp/compression-src), so edits to the
work tree meanwhile do not mix versions; its log is kept (bench/results/tmp/
compression-logs) and searched for warnings and errors. Within a run, the compressed
cell of a server follows its uncompressed one at once, so the pair sees the same
machine. The raw results go to bench/results/compression-*.json.

    .venv/bin/python bench/compression.py --quick --runs 1          # a smoke test (~3 min)
    .venv/bin/python bench/compression.py --runs 2 --write-docs     # the real run (~10 min)

--write-docs writes the section "Compression: permessage-deflate (issue 14)" of
docs/benchmarks.md (replacing it between its markers when it is already there); the
reading of the ratios in it is generated from the numbers measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
storms = importlib.import_module("storms")  # bun, the server with its log, the snapshot
peer_bench = storms.peer_bench                # bench/run.py: machine, pick, fmt, docs
storms.SNAPSHOT = storms.TMP / "compression-src"
storms.LOGS = storms.TMP / "compression-logs"
free_port: Callable[[], int] = peer_bench.free_port
pick: Callable[[dict[str, Any], str], float | None] = peer_bench.pick
fmt: Callable[[float | None], str] = peer_bench.fmt

PY = ROOT / ".venv" / "bin" / "python"
PEERS = BENCH / "peers"
RESULTS = BENCH / "results"
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Compression: permessage-deflate (issue 14)"
ANCHOR = "compression-permessage-deflate"   # what docs/framing.md and config.md link to
BEGIN, END = "<!-- compression:begin -->", "<!-- compression:end -->"
CLIENT_CORE = storms.CLIENT_CORE
SIZE = 1024
WINDOW = 8
ACCEPTANCE = 1.3   # compressed / uncompressed server CPU per delivery, ringcast, at:
ACCEPTANCE_AT = 1000  # subscribers
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z ")   # ringcast's text log time stamp
LOADTEST_COMMON = ("-q", "--max-time", "40", "--drain-timeout", "3", "--message-timeout", "5",
                   "--connect-concurrency", "512")


@dataclass(frozen=True)
class Server:
    name: str
    kind: str            # "ringcast" or "bun"
    backend: str = ""
    compression: bool = True

    def command(self, port: int) -> list[str]:
        if self.kind == "ringcast":
            return [str(PY), "-m", "ringcast", "serve", "--port", str(port),
                    "--backend", self.backend]
        return [str(storms.BUN), str(PEERS / "bun_server.js"), "--port", str(port),
                *(["--compression"] if self.compression else [])]

    def settings(self) -> dict[str, str]:
        """RINGCAST_* variables (storms.start_server adds the prefix)."""
        if self.kind != "ringcast":
            return {}
        out = {"LIMITS_MAX_CONNECTIONS": "20000"}
        if not self.compression:
            out["COMPRESSION_ENABLED"] = "false"
        return out

    def ready_line(self) -> str:
        return "listening on" if self.kind == "ringcast" else f"READY {self.kind}"

    def shown(self) -> str:
        """The command as the docs show it (PORT for the port, paths from the root)."""
        env = "".join(f"RINGCAST_{k}={v} " for k, v in self.settings().items())
        cmd = shlex.join(["taskset", "-c", storms.SERVER_CORE, *self.command(0)])
        return (env + cmd).replace(str(ROOT) + "/", "").replace("--port 0", "--port PORT")


SERVERS = [("ringcast io_uring", "ringcast", "io_uring"), ("ringcast epoll", "ringcast", "epoll"),
           ("bun", "bun", "")]


def server(name: str, compression: bool) -> Server:
    kind, backend = next((k, b) for n, k, b in SERVERS if n == name)
    return Server(name, kind, backend, compression)


@dataclass(frozen=True)
class Sizes:
    subscribers: tuple[int, int]
    idle: int
    duration: str
    idle_duration: str


def sizes(quick: bool) -> Sizes:
    if quick:
        return Sizes((100, 1000), 1000, "2", "2")
    return Sizes((1000, 10000), 10000, "8", "3")


def load_args(subs: int, sz: Sizes, compression: bool) -> list[str]:
    return ["-c", str(subs), "--payload", "json", "--size", str(SIZE), "--window", str(WINDOW),
            "--duration", sz.duration, *(["--compression"] if compression else [])]


def idle_args(sz: Sizes, compression: bool) -> list[str]:
    return ["-c", str(sz.idle), "--messages", "0", "--duration", sz.idle_duration,
            *(["--compression"] if compression else [])]


def cell_key(name: str, subs: int, compression: bool) -> str:
    return f"{name}|{subs}|{'on' if compression else 'off'}"


# -- one cell -------------------------------------------------------------------------


def loadtest_command(port: int, pid: int, args: list[str], out: Path) -> list[str]:
    return ["taskset", "-c", CLIENT_CORE, str(PY), "-m", "ringcast", "loadtest",
            f"ws://127.0.0.1:{port}/bench", *args, *LOADTEST_COMMON,
            "--server-pid", str(pid), "--json", str(out)]


def run_cell(srv: Server, args: list[str], tag: str) -> dict[str, Any]:
    """A fresh server on core 0, one loadtest on core 1; the loadtest's JSON result with
    the commands, the load average before and the server log's complaints."""
    res: dict[str, Any] = {"loadavg_before": storms.loadavg()}
    port = free_port()
    log = storms.LOGS / f"{tag}.log"
    out = storms.LOGS / f"{tag}.json"
    out.unlink(missing_ok=True)
    try:
        running = storms.start_server(srv, port, log, pin=True, settings=srv.settings())
    except RuntimeError as exc:
        return {**res, "error": str(exc)}
    cmd = loadtest_command(port, running.proc.pid, args, out)
    print("$ " + shlex.join(cmd), flush=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGCAST_")}
    env["PYTHONPATH"] = str(storms.SNAPSHOT)
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False,
                           env=env)
    except subprocess.TimeoutExpired:
        return {**res, "error": "loadtest timed out (120 s)"}
    finally:
        storms.stop(running.proc)
    res.update(server_command=running.command, client_command=shlex.join(cmd),
               wall_seconds=round(time.monotonic() - t0, 2))
    if srv.kind == "ringcast":
        res["server_log"] = storms.log_problems(log)
    if not out.exists():
        return {**res, "error": (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]}
    got: dict[str, Any] = json.loads(out.read_text())
    got.pop("percentile_curves", None)
    got.pop("timeline", None)
    return {**got, **res, "exit_code": r.returncode}


def failed(res: dict[str, Any] | None) -> str:
    """'' for a cell that passed, else why it did not."""
    if res is None:
        return "not run"
    if "error" in res:
        return "error: " + str(res["error"])[:100]
    if not res.get("pass"):
        faults = {k: v for k, v in res.get("faults", {}).items() if v}
        return "FAIL " + (", ".join(f"{k}={v}" for k, v in faults.items()) or "no deliveries")
    return ""


def cpu_us(res: dict[str, Any] | None) -> float | None:
    """Server CPU µs per delivery, from a cell that passed."""
    if res is None or failed(res):
        return None
    v = pick(res, "server.0.cpu_us_per_1000_deliveries")
    return v / 1000 if v is not None else None


def metric(res: dict[str, Any] | None, path: str) -> float | None:
    return None if res is None or failed(res) else pick(res, path)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def rx(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


# -- tables ---------------------------------------------------------------------------


def negotiated(res: dict[str, Any]) -> str:
    c = res.get("compression")
    if not c:
        return "not offered"
    params = "; ".join(c.get("parameters", {})) or "-"
    return (f"{c.get('negotiated_subscribers', 0):,} subscribers + "
            f"{c.get('negotiated_publishers', 0)} publisher: `{params}`; "
            f"{c.get('compressed_messages', 0):,} messages came compressed")


def load_table(run: dict[str, Any], names: list[str], sz: Sizes) -> list[str]:
    out = ["| server | subscribers | compression | deliveries/s | server CPU µs / delivery | "
           "wire bytes / delivery | payload bytes / delivery | client CPU, % of one core | "
           "load avg before | result |", "|" + "---|" * 10]
    for subs in sz.subscribers:
        for name in names:
            for comp in (False, True):
                res = run["load"].get(cell_key(name, subs, comp))
                if res is None:
                    continue
                head = f"| {name} | {subs:,} | {'on' if comp else 'off'} | "
                if "error" in res:
                    out.append(head + "|" * 5 + f" {res['loadavg_before']} | "
                               f"**{failed(res)}** |")
                    continue
                v = pick(res, "server.0.cpu_us_per_1000_deliveries")
                client = fmt(pick(res, "client.cpu_percent_of_one_core"))
                if (res.get("client") or {}).get("client_may_be_the_limit"):
                    client += " (the client may be the limit)"
                out.append(
                    head + f"{fmt(pick(res, 'run.deliveries_per_s'))} | "
                    f"{fmt(v / 1000 if v is not None else None)} | "
                    f"{fmt(pick(res, 'run.wire_bytes_per_delivery'))} | "
                    f"{fmt(pick(res, 'run.payload_bytes_per_delivery'))} | {client} | "
                    f"{res['loadavg_before']} | "
                    + (f"**{failed(res)}**" if failed(res) else "pass") + " |")
    return out


def details_table(run: dict[str, Any], names: list[str], sz: Sizes) -> list[str]:
    """What was negotiated and what else the cell saw (the compressed cells)."""
    out = ["| server | subscribers | permessage-deflate | deliveries | p50 / p99 per delivery, "
           "ms | server CPU s | server RSS end, MiB | server log warnings |",
           "|" + "---|" * 8]
    for subs in sz.subscribers:
        for name in names:
            res = run["load"].get(cell_key(name, subs, True))
            if res is None or "error" in res:
                continue
            lat = (res.get("latency_ms") or {}).get("delivery") or {}
            srv = (res.get("server") or [{}])[0]
            logs = res.get("server_log", {}).get("count")
            out.append(f"| {name} | {subs:,} | {negotiated(res)} | "
                       f"{res['run']['deliveries']:,} | "
                       + (f"{fmt(lat['p50'])} / {fmt(lat['p99'])}" if lat.get("count") else "-")
                       + f" | {fmt(srv.get('cpu_seconds'))} | {fmt(srv.get('rss_mb_end'))} | "
                       f"{'-' if logs is None else logs} |")
    return out


def ratio_table(run: dict[str, Any], names: list[str], sz: Sizes) -> list[str]:
    out = ["| subscribers | server | CPU / delivery, on ÷ off | wire bytes / delivery, "
           "on ÷ off | deliveries/s, on ÷ off | CPU / delivery ÷ bun's, off / on | "
           "deliveries/s ÷ bun's, off / on |", "|" + "---|" * 7]
    for subs in sz.subscribers:
        bun = {c: run["load"].get(cell_key("bun", subs, c)) for c in (False, True)}
        for name in names:
            cell = {c: run["load"].get(cell_key(name, subs, c)) for c in (False, True)}
            if all(v is None for v in cell.values()):
                continue
            vs_bun = "-", "-"
            if name != "bun" and "bun" in names:
                vs_bun = (" / ".join(rx(ratio(cpu_us(cell[c]), cpu_us(bun[c])))
                                     for c in (False, True)),
                          " / ".join(rx(ratio(metric(cell[c], "run.deliveries_per_s"),
                                              metric(bun[c], "run.deliveries_per_s")))
                                     for c in (False, True)))
            out.append(
                f"| {subs:,} | {name} | {rx(ratio(cpu_us(cell[True]), cpu_us(cell[False])))} | "
                + rx(ratio(metric(cell[True], "run.wire_bytes_per_delivery"),
                           metric(cell[False], "run.wire_bytes_per_delivery"))) + " | "
                + rx(ratio(metric(cell[True], "run.deliveries_per_s"),
                           metric(cell[False], "run.deliveries_per_s")))
                + f" | {vs_bun[0]} | {vs_bun[1]} |")
    return out


def idle_table(run: dict[str, Any], names: list[str], sz: Sizes) -> list[str]:
    out = ["| server | connections | permessage-deflate | server RSS bytes / connection | "
           "server RSS before → connected, MiB | load avg before | result |",
           "|" + "---|" * 7]
    for name in names:
        for comp in (False, True):
            res = run["idle"].get(cell_key(name, sz.idle, comp))
            if res is None:
                continue
            agreed = "agreed" if comp else "not offered"
            if comp and res.get("compression"):
                agreed = f"agreed by {res['compression'].get('negotiated_subscribers', 0):,}"
            srv = (res.get("server") or [{}])[0]
            opened = (res.get("connect") or {}).get("subscribers_opened")
            out.append(f"| {name} | {fmt(opened)} | {agreed} | "
                       f"{fmt(pick(res, 'server.0.rss_bytes_per_connection'))} | "
                       f"{fmt(srv.get('rss_mb_before'))} → {fmt(srv.get('rss_mb_connected'))} | "
                       f"{res['loadavg_before']} | "
                       + (f"**{failed(res)}**" if failed(res) else "pass") + " |")
    return out


# -- the reading, from the numbers ----------------------------------------------------


def per_run(values: list[float | None], show: Callable[[float], str]) -> str:
    """'1.12x and 1.18x (runs 1 and 2)', or one value; 'n/a' for a run without it."""
    shown = [show(v) if v is not None else "n/a" for v in values]
    if len(shown) == 1:
        return shown[0]
    return (", ".join(shown[:-1]) + " and " + shown[-1]
            + f" (runs {', '.join(str(i) for i in range(1, len(shown)))} and {len(shown)})")


def x(v: float) -> str:
    return f"{v:.2f}x"


def reading(runs: list[dict[str, Any]], names: list[str], sz: Sizes, cores: str) -> list[str]:
    k1, k10 = sz.subscribers
    ringcasts = [n for n in names if n != "bun"]
    out: list[str] = []

    def cells(name: str, subs: int, comp: bool) -> list[dict[str, Any] | None]:
        return [run["load"].get(cell_key(name, subs, comp)) for run in runs]

    # compressed vs uncompressed CPU per delivery, against the acceptance at k1
    for subs in (k1, k10):
        parts = []
        for name in names:
            rs = [ratio(cpu_us(on), cpu_us(off))
                  for on, off in zip(cells(name, subs, True), cells(name, subs, False),
                                     strict=True)]
            if all(r is None for r in rs):
                continue
            text = f"{name} {per_run(rs, x)}"
            got = [r for r in rs if r is not None]
            if subs == ACCEPTANCE_AT and name != "bun":
                over = [i for i, r in enumerate(rs, 1) if r is not None and r > ACCEPTANCE]
                if not over and len(got) == len(rs):
                    text += f": within the acceptance's {ACCEPTANCE}x in every run"
                elif not over:
                    text += f": within {ACCEPTANCE}x where measured (a run is missing)"
                else:
                    text += (f": **above the acceptance's {ACCEPTANCE}x in run"
                             f"{'s' if len(over) > 1 else ''} "
                             f"{', '.join(map(str, over))}**")
            parts.append(text)
        if parts:
            out.append(f"- **Server CPU per delivery, compressed ÷ uncompressed, {subs:,} "
                       f"subscribers**: " + "; ".join(parts) + ".")
        # where the extra CPU goes: compressing once per message, spread over subscribers
        extra = []
        for name in ringcasts:
            d = [None if cpu_us(on) is None or cpu_us(off) is None
                 else (cpu_us(on) or 0) - (cpu_us(off) or 0)
                 for on, off in zip(cells(name, subs, True), cells(name, subs, False),
                                    strict=True)]
            if any(v is not None for v in d):
                extra.append(f"{name} {per_run(d, lambda v: f'{v:+.3f} µs')}")
        if extra:
            out.append(f"  In µs per delivery, compressed minus uncompressed at {subs:,}: "
                       + "; ".join(extra) + f" (compressing a message once and sending it to "
                       f"{subs:,} subscribers spreads its cost over {subs:,} deliveries).")

    # bytes on the wire
    wire = []
    for name in names:
        on = [metric(c, "run.wire_bytes_per_delivery") for c in cells(name, k1, True)]
        off = [metric(c, "run.wire_bytes_per_delivery") for c in cells(name, k1, False)]
        if all(v is None for v in on + off):
            continue
        share = [ratio(a, b) for a, b in zip(on, off, strict=True)]
        wire.append(f"{name} {per_run(on, fmt)} compressed against "
                    f"{per_run(off, fmt)} uncompressed "
                    f"({per_run(share, lambda v: f'{v * 100:.0f} %')})")
    if wire:
        out.append(f"- **Bytes on the wire per delivery** of a {SIZE:,}-byte JSON message "
                   f"({k1:,} subscribers; headers included): " + "; ".join(wire) + ".")

    # ringcast vs bun
    if "bun" in names:
        for comp in (True, False):
            parts = []
            for subs in (k1, k10):
                bun = cells("bun", subs, comp)
                for name in ringcasts:
                    mine = cells(name, subs, comp)
                    c = [ratio(cpu_us(a), cpu_us(b)) for a, b in zip(mine, bun, strict=True)]
                    d = [ratio(metric(a, "run.deliveries_per_s"),
                               metric(b, "run.deliveries_per_s"))
                         for a, b in zip(mine, bun, strict=True)]
                    if all(v is None for v in c + d):
                        continue
                    parts.append(f"{name} at {subs:,} subscribers: CPU per delivery "
                                 f"{per_run(c, x)} bun's, deliveries/s {per_run(d, x)} bun's")
            if parts:
                out.append(f"- **ringcast ÷ bun (uWebSockets), "
                           f"{'compressed' if comp else 'uncompressed'}** (below 1x: less "
                           "CPU; above 1x: more deliveries/s): " + "; ".join(parts) + ".")

    # idle RSS
    idle = []
    for name in ringcasts:
        on = [metric(run["idle"].get(cell_key(name, sz.idle, True)),
                     "server.0.rss_bytes_per_connection") for run in runs]
        off = [metric(run["idle"].get(cell_key(name, sz.idle, False)),
                      "server.0.rss_bytes_per_connection") for run in runs]
        if all(v is None for v in on + off):
            continue
        diff = [None if a is None or b is None else a - b for a, b in zip(on, off, strict=True)]
        idle.append(f"{name} {per_run(on, lambda v: f'{v:,.0f}')} bytes per connection with "
                    f"the extension, {per_run(off, lambda v: f'{v:,.0f}')} without (difference "
                    f"{per_run(diff, lambda v: f'{v:+,.0f}')} bytes)")
    if idle:
        out.append(f"- **Server RSS per idle connection**, {sz.idle:,} connections: "
                   + "; ".join(idle) + ". For scale: a zlib deflate stream with a 15-bit "
                   "window holds about 256 KiB, an inflate stream about 40 KiB.")

    # what limits the numbers: faults, a busy client, a busy machine
    bad = [f"run {i} {key.replace('|', ', ')}: {failed(res)}"
           for i, run in enumerate(runs, 1) for part in ("load", "idle")
           for key, res in run[part].items() if failed(res)]
    out.append("- **Faults**: " + ("; ".join(bad) if bad else
                                   "none: every delivery of every cell arrived intact, in "
                                   "order, once.") + "")
    busy = [f"run {i} {key.replace('|', ', ')}" for i, run in enumerate(runs, 1)
            for key, res in run["load"].items()
            if (res.get("client") or {}).get("client_may_be_the_limit")]
    if busy:
        out.append("- **The load client was near a full core** (so deliveries/s there may be "
                   "the client's bound, not the server's; CPU per delivery is still the "
                   "server's): " + "; ".join(busy) + ".")
    loads = [float(res["loadavg_before"].split()[0]) for run in runs
             for part in ("load", "idle") for res in run[part].values()]
    if loads and max(loads) > 1.0:
        out.append(f"- The 1-minute load average before a cell reached {max(loads):.2f} "
                   f"({cores} cores: anything near {cores} means other work shared them, and "
                   "the numbers of those cells are worse than a quiet machine's).")
    return out


# -- the docs section -------------------------------------------------------------------


def section(raw: dict[str, Any]) -> str:
    runs, names = raw["runs"], raw["servers"]
    s = raw["sizes"]
    sz = Sizes((s["subscribers"][0], s["subscribers"][1]), s["idle"], s["duration"],
               s["idle_duration"])
    k1, k10 = sz.subscribers
    out = [f'<a id="{ANCHOR}"></a>', "", SECTION, "",
           "Written by `bench/compression.py`; do not edit the numbers by hand. "
           f"{SIZE:,}-byte JSON messages (`--payload json`: a ticker-like object that "
           f"deflates as a real feed does), {WINDOW} in flight, published over a WebSocket "
           f"publisher connection, to {k1:,} and to {k10:,} subscribers, with permessage-"
           "deflate and without. In a compressed cell every subscriber (and the publisher) "
           "offers the extension as a browser does (`permessage-deflate; "
           "client_max_window_bits`) and a connection that does not get it is a fault; in an "
           "uncompressed cell nobody offers it and the server has it off "
           "(`RINGCAST_COMPRESSION_ENABLED=false`, bun without `--compression`). The "
           "loadtest inflates and checks every byte of every delivery.", "",
           "ringcast compresses each message once, with one zlib stream per worker and "
           "window size, fully flushed after each message (`server_no_context_takeover`), "
           "and sends the same compressed frame to every subscriber that agreed, at its "
           "default level (1); bun is `bench/peers/bun_server.js` on Bun.serve "
           "(uWebSockets) with `perMessageDeflate: {compress: \"shared\"}`: uWebSockets' "
           "shared compressor, one zlib stream for every connection, and `publish(..., "
           "true)`. Each server runs alone, pinned to core 0, a fresh process per cell; the "
           "load client is pinned to core 1 (`taskset`). Server CPU per delivery is the "
           "server's CPU time (user + system, every thread) from the moment every subscriber "
           "is connected to the end of the run, over the deliveries; wire bytes per delivery "
           "are the frame bytes received (header and payload, compressed when it was).", "",
           f"Date: {raw['started']}. ringcast: commit `{raw['commit']}`"
           + (", work tree with uncommitted changes (one snapshot of src/ringcast, taken at "
              "the start, served the whole run)." if raw["dirty"] else "."), "",
           "| machine | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in raw["machine"].items()]
    out += [f"| {k} | {v} |" for k, v in raw["versions"].items()]
    out += ["", "Commands (`PORT` is a free port, `PID` the server's; the script prints every "
            "command it runs):", "", "```sh",
            f".venv/bin/python bench/compression.py {shlex.join(raw['argv'])}".rstrip(),
            "# ringcast runs from the snapshot: "
            "PYTHONPATH=bench/results/tmp/compression-src", "# servers, compression off / on:"]
    for name in names:
        for comp in (False, True):
            out.append(server(name, comp).shown())
    out.append("# the load, one per cell (without --compression for the uncompressed cells):")
    for subs in sz.subscribers:
        out.append(shlex.join(loadtest_command(0, 0, load_args(subs, sz, True), Path("out.json")))
                   .replace(str(ROOT) + "/", "").replace(":0/", ":PORT/")
                   .replace("--server-pid 0", "--server-pid PID"))
    out.append("# idle connections (ringcast, compression on in the server), with and "
               "without --compression:")
    out.append(shlex.join(loadtest_command(0, 0, idle_args(sz, True), Path("out.json")))
               .replace(str(ROOT) + "/", "").replace(":0/", ":PORT/")
               .replace("--server-pid 0", "--server-pid PID"))
    out += ["```", "", "### Reading", ""]
    out += reading(runs, names, sz, raw["machine"].get("cores", "?"))
    out.append("")
    for i, run in enumerate(runs, 1):
        out += [f"### Run {i} of {len(runs)}", "", "Cells:", ""]
        out += load_table(run, names, sz)
        out += ["", "Ratios (from the cells above; `-` where a cell failed or is missing):", ""]
        out += ratio_table(run, names, sz)
        out += ["", "Compressed cells, what was negotiated and more:", ""]
        out += details_table(run, names, sz)
        if run["idle"]:
            out += ["", f"Idle connections ({sz.idle:,}, `--messages 0`):", ""]
            out += idle_table(run, [n for n in names if n != "bun"], sz)
        out.append("")
    if raw["notes"]:
        out += ["Notes:", ""] + [f"- {n}" for n in raw["notes"]] + [""]
    logs = log_lines(runs)
    if logs:
        out += ["ringcast's log lines at warning or above (the first five of each cell, the "
                "time stamp cut off, the same line once):", "", *logs, ""]
    return "\n".join(out)


def log_lines(runs: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, list[str]] = {}
    cells = 0
    for i, run in enumerate(runs, 1):
        for part in ("load", "idle"):
            for key, res in run[part].items():
                if "server_log" not in res:
                    continue
                cells += 1
                where = f"run {i} {part} {key.replace('|', ' ')}"
                for line in res["server_log"].get("first", []):
                    text = STAMP.sub("", line.strip())[:240]
                    if where not in seen.setdefault(text, []):
                        seen[text].append(where)
    out = []
    for text, where in seen.items():
        cells_text = (f"every ringcast cell ({cells})" if len(where) == cells
                      else "; ".join(where))
        out.append(f"- `{text}`: {cells_text}")
        if "open-files limit" in text:
            most = max((pick(res, "connect.subscribers_opened") or 0 for run in runs
                        for part in ("load", "idle") for res in run[part].values()),
                       default=0)
            out.append(f"  (a cell here needs at most {most + 1:,.0f} sockets in the server, "
                       "subscribers and the publisher; `RINGCAST_LIMITS_MAX_CONNECTIONS=20000` "
                       "is bench/run.py's setting, and ringcast warns at start when the "
                       "open-files limit could not hold that many)")
    return out


# -- main -------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=2, help="runs of every cell (2)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke test: 100 and 1,000 subscribers, 2-second cells")
    p.add_argument("--servers", help="comma-separated subset of: "
                   + ", ".join(n.replace(" ", "-") for n, _, _ in SERVERS))
    p.add_argument("--only", default="load,idle", help="comma-separated subset of: load, idle")
    p.add_argument("--write-docs", action="store_true",
                   help="write (or replace) the section in docs/benchmarks.md")
    p.add_argument("--note", action="append", default=[], help="a note for the docs section")
    p.add_argument("--from-json", metavar="RAW",
                   help="write the docs section from the raw results of an earlier run")
    args = p.parse_args()
    if args.from_json:
        raw = json.loads(Path(args.from_json).read_text())
        raw["notes"] += args.note
        peer_bench.write_doc(section(raw), BEGIN, END)
        print(f"wrote {DOC.relative_to(ROOT)}")
        return 0
    if args.quick and args.write_docs:
        print("compression: a --quick run's numbers do not go into the docs "
              "(run without --quick)", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print("compression: needs 2 cores (server on core 0, client on core 1)",
              file=sys.stderr)
        return 2
    t_start = time.monotonic()
    only = {w.strip() for w in args.only.split(",")}
    names = [n for n, _, _ in SERVERS]
    if args.servers:
        want = {w.strip().replace("-", " ") for w in args.servers.split(",")}
        names = [n for n in names if n in want]
    notes: list[str] = list(args.note)
    versions: dict[str, str] = {"zlib (Python's, ringcast's)": zlib.ZLIB_RUNTIME_VERSION}
    if "bun" in names and "load" in only:
        bun = storms.ensure_bun(notes)
        if bun:
            versions["bun"] = bun
        else:
            names.remove("bun")
    sz = sizes(args.quick)
    if args.quick:
        notes.append("--quick: 100 and 1,000 subscribers, 1,000 idle connections, 2-second "
                     "cells (a smoke test)")
    info = peer_bench.machine()
    info["load average at start"] = storms.loadavg()
    for k, v in {**info, **versions}.items():
        print(f"# {k}: {v}")
    dirty = bool(storms.sh(["git", "-C", str(ROOT), "status", "--porcelain",
                            "--untracked-files=no"]))
    commit = storms.sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    storms.snapshot()
    storms.LOGS.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    ringcasts = [n for n in names if n != "bun"]
    total = args.runs * (len(sz.subscribers) * len(names) * 2 * ("load" in only)
                         + len(ringcasts) * 2 * ("idle" in only))
    n = 0
    runs: list[dict[str, Any]] = []
    for r in range(1, args.runs + 1):
        run: dict[str, Any] = {"load": {}, "idle": {}}
        todo: list[tuple[str, str, Server, list[str], str]] = []
        if "load" in only:
            for subs in sz.subscribers:
                for name in names:
                    for comp in (False, True):
                        todo.append(("load", cell_key(name, subs, comp), server(name, comp),
                                     load_args(subs, sz, comp),
                                     f"{name} {subs:,} subscribers, compression "
                                     f"{'on' if comp else 'off'}"))
        if "idle" in only:
            for name in ringcasts:
                for comp in (False, True):
                    todo.append(("idle", cell_key(name, sz.idle, comp), server(name, True),
                                 idle_args(sz, comp),
                                 f"{name} {sz.idle:,} idle connections, "
                                 f"{'with' if comp else 'without'} permessage-deflate"))
        for part, key, srv, cell_args, title in todo:
            n += 1
            print(f"\n== [{n}/{total}] run {r}: {title} (load average {storms.loadavg()})",
                  flush=True)
            tag = f"run{r}-{part}-{key.replace('|', '-').replace(' ', '-')}"
            res = run_cell(srv, cell_args, tag)
            run[part][key] = res
            if part == "load":
                v = cpu_us(res)
                print(f"-> deliveries/s {fmt(pick(res, 'run.deliveries_per_s'))}, server CPU "
                      f"µs/delivery {fmt(v)}, wire bytes/delivery "
                      f"{fmt(pick(res, 'run.wire_bytes_per_delivery'))} "
                      f"{failed(res) or 'pass'}", flush=True)
            else:
                print(f"-> server RSS bytes/connection "
                      f"{fmt(pick(res, 'server.0.rss_bytes_per_connection'))} "
                      f"{failed(res) or 'pass'}", flush=True)
            time.sleep(1)
        runs.append(run)
    raw = {"machine": info, "versions": versions, "notes": notes, "started": started,
           "argv": sys.argv[1:], "commit": commit, "dirty": dirty, "servers": names,
           "sizes": vars(sz), "runs": runs}
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"compression-{stamp}.json"
    path.write_text(json.dumps(raw, indent=1) + "\n")
    text = section(raw)
    print("\n" + text)
    print(f"raw results: {path.relative_to(ROOT)}")
    print(f"took {time.monotonic() - t_start:.0f} s")
    if args.write_docs:
        peer_bench.write_doc(text, BEGIN, END)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
