"""The result of a resume storm: the JSON-able dict ``--json`` writes (`build_result`,
from a `ResumeRun` that is over) and the text a person reads (`format_text`).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from ringcast import __version__
from ringcast.loadtest import procstat
from ringcast.loadtest.report import CLIENT_BUSY
from ringcast.loadtest.resume_run import WARMUP_MESSAGES, ResumeRun

__all__ = ["build_result", "format_text"]


def _dist(values: Iterable[float]) -> dict[str, float]:
    """count, p50, p90, p99, max and mean of ``values`` (ms), nearest-rank."""
    v = sorted(values)
    if not v:
        return {"count": 0}

    def pct(p: float) -> float:
        return round(v[min(len(v) - 1, max(0, math.ceil(p / 100 * len(v)) - 1))], 3)

    return {"count": len(v), "p50": pct(50), "p90": pct(90), "p99": pct(99),
            "max": round(v[-1], 3), "mean": round(sum(v) / len(v), 3)}


def build_result(run: ResumeRun, cpu_seconds: float, wall: float) -> dict[str, Any]:
    """What ``run`` (over) found, with the client's ``cpu_seconds`` over ``wall`` seconds:
    what `format_text` shows and ``--json`` writes."""
    o = run.options
    live = [s for s in run.subs if s.epoch is not None]
    corrupted = run.bad_data
    for ch in run.channels:                 # what arrived at each offset is what was sent
        for (epoch, offset), seq in run.seq_at[ch.name].items():
            if epoch == ch.epoch and ch.offset_seq.get(offset, seq) != seq:
                corrupted += 1
    per_sub: list[dict[str, Any]] = []
    for s in live:
        expected, received = s.expected(), s.received_expected()
        per_sub.append({
            "subscriber": s.index, "channel": s.channel.name, "first_offset": s.start,
            "expected": expected, "received": received, "recovered": s.recovered,
            "lost": expected - received, "duplicated": s.duplicated,
            "out_of_order": s.out_of_order, "resumed": s.resumes, "resyncs": s.resyncs,
            "not_replayed": s.not_replayed, "epoch_changes": s.epoch_changes,
            "complete": s.complete(),
            "back_ms": (round((s.back_at - run.t_reconnect) * 1e3, 3)
                        if s.back_at is not None else None),
            "recover_ms": (round((s.recover_at - run.t_reconnect) * 1e3, 3)
                           if s.recover_at is not None else None),
            "closed_by_server": dict(s.ended), "errors": dict(s.errors),
        })

    def total(key: str) -> int:
        return sum(int(p[key]) for p in per_sub)

    published = sum(ch.acked for ch in run.channels)
    during = sum(ch.at_reconnect - ch.at_drop for ch in run.channels)
    expected_each = [p["expected"] for p in per_sub] or [0]
    received_each = [p["received"] for p in per_sub] or [0]
    closed: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for s in live:
        closed.update(s.ended)
        errors.update(s.errors)
    publish_errors: Counter[str] = Counter()
    for ch in run.channels:
        publish_errors.update({f"{ch.name}: {k}": v for k, v in ch.errors.items()})
        if ch.lost is not None:
            publish_errors[f"{ch.name}: {ch.lost}"] += 1
    complete = sum(1 for p in per_sub if p["complete"])
    faults = {
        "lost": total("lost"), "duplicated": total("duplicated"),
        "out_of_order": total("out_of_order"), "resyncs": total("resyncs"),
        "corrupted": corrupted,
        "foreign": sum(s.foreign + s.unexpected for s in live),
        "incomplete_subscribers": len(live) - complete,
        "not_back": sum(1 for s in live if s.back_at is None),
        "connections_failed": run.connect_failures.total(),
        "closed_by_server": closed.total(),
        "error_replies": errors.total(),
        "publish_errors": publish_errors.total(),
        "protocol_errors": run.protocol_errors.total(),
    }
    passed = not any(faults.values()) and bool(live) and not run.cut_short
    server = _server(run, len(live))
    verdict = _verdict(faults, total("not_replayed"), during, total("recovered"), run)
    cpu_pct = cpu_seconds / max(1e-9, wall) * 100
    resume_cpu, resume_wall = run.resume_cpu
    resume_pct = resume_cpu / resume_wall * 100 if resume_wall > 0 else 0.0
    return {
        "tool": f"ringcast loadtest {__version__}",
        "target": o.url,
        "mode": "resume storm",
        "started_at": dt.datetime.fromtimestamp(time.time() - wall, dt.UTC).isoformat(
            timespec="seconds"),
        "host": {"machine": platform.machine(), "kernel": platform.release(),
                 "cpus": os.cpu_count(), "python": platform.python_version()},
        "options": asdict(o),
        "connect": {
            "subscribers_requested": o.connections, "subscribers_opened": len(live),
            "failures": dict(run.connect_failures), "seconds": run.times.get("connected"),
            "handshake_ms": _dist(run.handshake_ms),
        },
        "channels": [{"channel": ch.name, "epoch": ch.epoch, "subscribers": ch.subscribers,
                      "published": ch.acked, "first_offset": ch.first_offset,
                      "offset_at_drop": ch.at_drop, "offset_at_reconnect": ch.at_reconnect,
                      "last_offset": ch.final} for ch in run.channels],
        "storm": {
            "dropped": len(live), "outage_s": o.outage,
            "published_during_outage": during,
            "back": sum(1 for s in live if s.back_at is not None),
            "resumed": sum(1 for s in live if s.resumes),
            "resynced": sum(1 for s in live if s.resyncs),
            "epoch_changes": sum(s.epoch_changes for s in live),
            "reconnect_failures": dict(run.reconnect_failures),
            "back_ms": _dist(p["back_ms"] for p in per_sub if p["back_ms"] is not None),
            "recovered_subscribers": sum(1 for p in per_sub if p["recover_ms"] is not None),
            "recover_ms": _dist(p["recover_ms"] for p in per_sub
                                if p["recover_ms"] is not None),
            "warmup_complete": run.warmup_complete,
        },
        "messages": {
            "published": published, "sent": sum(ch.sent for ch in run.channels),
            "expected": total("expected"), "received": total("received"),
            "expected_per_subscriber": [min(expected_each), max(expected_each)],
            "received_per_subscriber": [min(received_each), max(received_each)],
            "recovered": total("recovered"), "not_replayed": total("not_replayed"),
            "complete_subscribers": complete,
        },
        "faults": faults,
        "pass": passed,
        "verdict": verdict,
        "cut_short": run.cut_short,
        "closed_by_server": dict(closed),
        "error_replies": dict(errors),
        "publish_errors": dict(publish_errors),
        "protocol_errors": dict(run.protocol_errors),
        "timeline_s": run.times,
        "server": server,
        "client": {"cpu_seconds": round(cpu_seconds, 3),
                   "cpu_percent_of_one_core": round(cpu_pct, 1),
                   # The resume is the busy part (every replay checked): its share decides.
                   "resume_cpu_percent_of_one_core": round(resume_pct, 1),
                   "client_may_be_the_limit": max(cpu_pct, resume_pct) >= CLIENT_BUSY},
        "subscribers": per_sub,
    }


def _server(run: ResumeRun, subscribers: int) -> dict[str, Any] | None:
    """``--server-pid``: the servers' CPU over the first connections (handshake and
    subscribe, per subscriber) and over the resume (reconnect to all recovered: the
    handshakes, the replays and the live messages meanwhile), and whether it was busy."""
    ns = run.server_ns
    if not run.server_pids or "end" not in ns:
        return None
    connect = (ns["connected"] - ns["start"]) / 1e9
    resume = (ns["recovered"] - ns["reconnect"]) / 1e9
    wall = run.resume_cpu[1]
    pct = resume / wall * 100 if wall > 0 else 0.0
    return {
        "pids": run.server_pids,
        "connect_cpu_seconds": round(connect, 4),
        "cpu_us_per_subscribe": round(connect * 1e6 / subscribers, 1) if subscribers else None,
        "resume_cpu_seconds": round(resume, 4),
        "resume_cpu_percent_of_one_core": round(pct, 1),
        "cpu_us_per_resume": round(resume * 1e6 / subscribers, 1) if subscribers else None,
        "server_may_be_the_limit": pct >= CLIENT_BUSY,
        "rss_mb_end": round(sum(procstat.sample(pid, pss=False).rss_bytes
                                for pid in run.server_pids) / 2**20, 2),
    }


def _verdict(faults: dict[str, int], not_replayed: int, during: int, recovered: int,
             run: ResumeRun) -> str:
    """One sentence: what the run says about the resume."""
    if faults["resyncs"]:
        return (f"RESYNC: {faults['resyncs']:,} resume(s) answered recovered:false: the "
                f"server no longer held their position, so {not_replayed:,} messages "
                "published while they were away were not replayed (and count as lost). "
                "This is NOT a zero-loss resume: the history kept is smaller (or shorter "
                "lived) than what was published during the outage")
    if run.cut_short:
        return "cut short by --max-time in: " + ", ".join(run.cut_short)
    if any(faults.values()):
        named = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in faults.items() if v)
        return f"FAULTS: {named}"
    if during == 0 or recovered == 0:
        return ("no loss, but nothing was published during the outage to recover: "
                "lengthen --outage or raise --rate")
    return (f"every subscriber resumed with every message once and in order; "
            f"{recovered:,} messages recovered by the resumes")


def _fmt(d: dict[str, float]) -> str:
    """A `_dist` as p50, p99 and max."""
    if not d.get("count"):
        return "no samples"
    return "  ".join(f"{k} {d[k]:,.1f}ms" for k in ("p50", "p99", "max"))


def format_text(r: dict[str, Any]) -> str:
    """The result as a person reads it (``--json`` gives all of it)."""
    o, cn, st, m, f = r["options"], r["connect"], r["storm"], r["messages"], r["faults"]
    opened, asked = cn["subscribers_opened"], cn["subscribers_requested"]
    lines = [
        f"ringcast loadtest: {r['target']}  (resume storm: {asked:,} subscribers on "
        f"{o['channels']} channel(s), {o['rate']:g} messages/s, {o['size']}-character "
        f"messages, {o['publisher']} publisher)",
        f"connect    {opened:,}/{asked:,} subscribers in {cn['seconds'] or 0:.2f}s, "
        f"handshake {_fmt(cn['handshake_ms'])}",
        f"publish    {m['published']:,} messages acknowledged, "
        f"{st['published_during_outage']:,} of them during the {st['outage_s']:g}s outage",
        f"storm      {st['dropped']:,} subscribers reset at once; {st['back']:,}/"
        f"{st['dropped']:,} subscribed again, {_fmt(st['back_ms'])} after the outage",
        f"resume     {st['resumed']:,} recovered:true, {st['resynced']:,} recovered:false; "
        f"{m['recovered']:,} messages recovered (replayed by the resumes)"
        + (f"  <- RESYNC: {m['not_replayed']:,} messages not replayed" if st["resynced"]
           else ""),
        f"recover    {st['recovered_subscribers']:,}/{st['dropped']:,} had every message "
        f"published before their reconnect: {_fmt(st['recover_ms'])}"
        + (f"; {st['resynced']:,} resynced never will" if st["resynced"] else ""),
        f"messages   per subscriber expected {_span(m['expected_per_subscriber'])}, "
        f"received {_span(m['received_per_subscriber'])}; {m['complete_subscribers']:,}/"
        f"{st['dropped']:,} complete",
        "faults     " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in f.items()),
    ]
    if cn["failures"]:
        lines.append("           connection failures: " + _counts(cn["failures"]))
    if not st["warmup_complete"]:
        lines.append(f"           note: not every subscriber had {WARMUP_MESSAGES} messages "
                     "before the drop (waited --drain-timeout)")
    for title, d in (("reconnect failures (retried)", st["reconnect_failures"]),
                     ("closed by server", r["closed_by_server"]),
                     ("error replies", r["error_replies"]),
                     ("publish errors", r["publish_errors"]),
                     ("protocol errors", r["protocol_errors"])):
        if d:
            lines.append(f"           {title}: " + _counts(d))
    worst = sorted((p for p in r["subscribers"] if not p["complete"] or p["lost"]
                    or p["duplicated"] or p["out_of_order"] or p["resyncs"]),
                   key=lambda p: -(p["lost"] + p["duplicated"] + p["out_of_order"]))[:3]
    for p in worst:
        lines.append(f"           e.g. subscriber {p['subscriber']} ({p['channel']}): expected "
                     f"{p['expected']:,}, received {p['received']:,}, lost {p['lost']:,}, "
                     f"duplicated {p['duplicated']:,}, resyncs {p['resyncs']}")
    cl = r["client"]
    sv = r["server"]
    if sv is not None:
        lines.append(
            f"server     pids {', '.join(str(p) for p in sv['pids'])}: cpu "
            f"{sv['cpu_us_per_subscribe']:,.0f}µs per connect and subscribe; over the resume "
            f"{sv['resume_cpu_percent_of_one_core']:.0f}% of one core "
            f"({sv['cpu_us_per_resume']:,.0f}µs per resumed subscriber)"
            + ("  <- the server is the limit" if sv["server_may_be_the_limit"] else ""))
    busy = ("  <- the client may be the limit, not the server (times include its lag)"
            if cl["client_may_be_the_limit"] else "")
    lines.append(f"client     cpu {cl['cpu_seconds']:.2f}s = {cl['cpu_percent_of_one_core']:.0f}% "
                 f"of one core ({cl['resume_cpu_percent_of_one_core']:.0f}% from the "
                 "reconnect until all recovered)" + busy)
    lines.append(f"verdict    {r['verdict']}")
    lines.append("result     " + ("PASS" if r["pass"] else "FAIL"))
    return "\n".join(lines)


def _span(pair: list[int]) -> str:
    lo, hi = pair
    return f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} x{v:,}" for k, v in d.items())

