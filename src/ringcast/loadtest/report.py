"""The result of a run: a JSON-able dict made from its `RunRecord`, and the text a person reads.

Latencies arrive as HDR histograms (``hdrhistogram``), made from the scanner's C
buckets at the end of the run; percentiles and curves are read from them here.

Bytes per delivery: ``run.payload_bytes_per_delivery`` is the message (``--size``),
``run.wire_bytes_per_delivery`` the frame bytes that carried it as received (headers
and payload, compressed when it was). With ``--compression`` the ``compression``
section says how many connections agreed to permessage-deflate and with what, how
many messages came compressed, and what inflating cost the client.

Over a team (several client processes) it is one report: ``connect`` has when each
process had all its subscribers, when publishing was allowed and began, and each
process's source pairs; ``rounds`` the time of each round (``--rounds``);
``server_total`` every measured server process together: CPU per handshake and per
delivery, RSS and PSS per connection, and the keepalive's CPU over ``--hold``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from ringcast import __version__
from ringcast.loadtest.handshake import DECLINED
from ringcast.loadtest.procstat import ProcSample
from ringcast.loadtest.record import RunRecord, Tally

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
FAULT_KEYS = ("lost", "undelivered", "duplicated", "out_of_order", "corrupted", "bad_opcode",
              "protocol_errors")
CLIENT_BUSY = 85.0
"""Client CPU (% of one core) above which the report warns the client may be the limit."""


def _latency(h: HdrHistogram) -> dict[str, float]:
    n = h.get_total_count()
    if not n:
        return {"count": 0}
    out: dict[str, float] = {"count": n}
    for p in PERCENTILES:
        out[f"p{p:g}"] = round(h.get_value_at_percentile(p) / 1e6, 4)
    out["max"] = round(h.get_max_value() / 1e6, 4)
    out["mean"] = round(h.get_mean_value() / 1e6, 4)
    return out


def _curve(h: HdrHistogram) -> list[list[float]]:
    """(percentile, ms) points, dense towards the tail, for the plot."""
    if not h.get_total_count():
        return []
    points = []
    for i in range(0, 61):
        pct = 100.0 * (1 - 10 ** (-i / 10))
        points.append([round(pct, 5), round(h.get_value_at_percentile(pct) / 1e6, 4)])
    points.append([100.0, round(h.get_max_value() / 1e6, 4)])
    return points


def _server(pids: list[int], samples: tuple[list[ProcSample], ...], *, deliveries: int,
            conns: int, asked: tuple[int, ...] = (),
            held: list[ProcSample] | None = None) -> list[dict[str, Any]]:
    """Per server process: CPU of the publishing phase (after ``--hold``), memory before,
    once connected and at the end."""
    s0, s1, s2 = samples
    out = []
    for i, (pid, a, b, c) in enumerate(zip(pids, s0, s1, s2, strict=True)):
        cpu = (c.cpu_ns - (held[i] if held else b).cpu_ns) / 1e9
        entry: dict[str, Any] = {
            "pid": pid,
            "found_as_child": bool(asked) and pid not in asked,
            "alive": c.alive,
            "cpu_seconds": round(cpu, 4),
            "cpu_us_per_1000_deliveries": (round(cpu * 1e6 / (deliveries / 1000), 2)
                                           if deliveries else None),
            "rss_mb_before": round(a.rss_bytes / 2**20, 2),
            "rss_mb_connected": round(b.rss_bytes / 2**20, 2),
            "rss_mb_end": round(c.rss_bytes / 2**20, 2),
            "rss_peak_mb": round(c.hwm_bytes / 2**20, 2),
            "rss_bytes_per_connection": (round((b.rss_bytes - a.rss_bytes) / conns)
                                         if conns else None),
            "pss_mb_connected": round(b.pss_bytes / 2**20, 2),
            "pss_bytes_per_connection": (round((b.pss_bytes - a.pss_bytes) / conns)
                                         if conns and b.pss_bytes else None),
        }
        out.append(entry)
    return out


def _server_total(rec: RunRecord, *, deliveries: int, conns: int) -> dict[str, Any] | None:
    """Every measured server process together (a supervisor and its workers): CPU per
    handshake (the connect phase: before anyone connected to all connected, over the
    connections opened), per delivery (the publishing phase), memory per connection (RSS
    and PSS once connected, less before), and with ``--hold`` the keepalive's CPU."""
    if not rec.server_pids:
        return None
    s0, s1, s2 = rec.server

    def total(samples: list[ProcSample], key: str) -> int:
        return sum(int(getattr(x, key)) for x in samples)

    held = rec.hold[1] if rec.hold else s1
    connect_cpu = total(s1, "cpu_ns") - total(s0, "cpu_ns")
    run_cpu = total(s2, "cpu_ns") - total(held, "cpu_ns")
    out: dict[str, Any] = {
        "pids": rec.server_pids,
        "connect_cpu_seconds": round(connect_cpu / 1e9, 4),
        "cpu_us_per_handshake": round(connect_cpu / 1e3 / conns, 3) if conns else None,
        "run_cpu_seconds": round(run_cpu / 1e9, 4),
        "cpu_us_per_delivery": round(run_cpu / 1e3 / deliveries, 4) if deliveries else None,
        "rss_mb_connected": round(total(s1, "rss_bytes") / 2**20, 2),
        "pss_mb_connected": round(total(s1, "pss_bytes") / 2**20, 2),
        "rss_bytes_per_connection": (round((total(s1, "rss_bytes") - total(s0, "rss_bytes"))
                                           / conns) if conns else None),
        "pss_bytes_per_connection": (round((total(s1, "pss_bytes") - total(s0, "pss_bytes"))
                                           / conns)
                                     if conns and total(s1, "pss_bytes") else None),
        "keepalive": None,
    }
    if rec.hold:
        seconds, h = rec.hold
        cpu = (total(h, "cpu_ns") - total(s1, "cpu_ns")) / 1e9
        per_s = cpu / seconds if seconds > 0 else 0.0
        out["keepalive"] = {
            "seconds": round(seconds, 3),
            "cpu_seconds": round(cpu, 4),
            "cpu_percent_of_one_core": round(per_s * 100, 3),
            "cpu_us_per_second": round(per_s * 1e6, 1),
            "cpu_ns_per_second_per_connection": round(per_s * 1e9 / conns, 3) if conns else None,
        }
    return out


def _team(rec: RunRecord) -> dict[str, Any]:
    """When each process had all its subscribers, and the start barrier: publishing began
    after the last process was connected. Seconds from the earliest process's start."""
    t = rec.team
    if not t:
        return {}
    t0 = min(t["t_begin_ns"])
    connected = t["t_connected_ns"]

    def since(ns: int) -> float | None:
        return round((ns - t0) / 1e9, 4) if ns else None

    last = max(connected)
    return {
        "all_connected_s": since(last),
        "processes_connected_s": [since(x) for x in connected],
        "publishing_allowed_s": since(t["t_go_ns"]),
        "first_publish_s": since(t["t_first_publish_ns"]),
        "barrier_held": (bool(t["t_go_ns"]) and all(connected) and t["t_go_ns"] >= last
                         and (not t["t_first_publish_ns"]
                              or t["t_first_publish_ns"] >= t["t_go_ns"])),
    }


def _rounds(rec: RunRecord) -> dict[str, Any] | None:
    """``--rounds``: each round's time (its send to every subscriber of every process
    having it), with percentiles."""
    if rec.options.rounds is None:
        return None
    h = HdrHistogram(1, 3_600_000_000_000, 3)
    for ns in rec.round_ns:
        h.record_value(max(1, ns))
    return {"asked": rec.options.rounds, "completed": len(rec.round_ns),
            "messages_per_round": rec.sent // max(1, len(rec.round_ns)) if rec.round_ns else 0,
            "round_ms": _latency(h),
            "per_round_ms": [round(ns / 1e6, 3) for ns in rec.round_ns]}


def _compression(rec: RunRecord) -> dict[str, Any] | None:
    """The ``compression`` section (None without ``--compression``): connections that
    agreed to permessage-deflate, by the server's parameters; those it declined (failed
    connections, so counted under faults too); messages that came compressed (data
    messages to subscribers with RSV1, intact or not); what inflating cost the client
    (zlib's streams and bytes at the end of the run, over every client process)."""
    if not rec.options.compression:
        return None
    c = rec.counts
    subs, pubs = rec.subscribers, rec.publishers
    answers = subs.deflate + pubs.deflate
    return {
        "offer": "permessage-deflate; client_max_window_bits",
        "negotiated_subscribers": subs.deflate.total(),
        "negotiated_publishers": pubs.deflate.total(),
        "declined": _declined(subs) + _declined(pubs),
        "parameters": dict(answers.most_common()),
        "compressed_messages": c["compressed"],
        "inflate_errors": c["inflate_errors"],
        "inflate_oversize": c["inflate_oversize"],
        "client_inflate_streams": c["inflate_streams"],
        "client_inflate_bytes": c["inflate_bytes"],
    }


def _declined(t: Tally) -> int:
    return t.failed.get(DECLINED, 0)


def build_result(rec: RunRecord) -> dict[str, Any]:
    """The result of a finished run: what `format_text` shows and ``--json`` writes."""
    o = rec.options
    c = rec.counts
    subs, pubs = rec.subscribers, rec.publishers
    connect_s = rec.connect_seconds
    run_s = max(1e-9, rec.run_seconds)
    send_s = max(1e-9, rec.sending_seconds)
    delivered = c["delivered"]
    handshakes = HdrHistogram(1, 3_600_000_000_000, 3)
    for ns in subs.handshake_ns:
        handshakes.record_value(max(1, ns))
    conn_failures = dict(subs.failed) | {f"publisher: {k}": v for k, v in pubs.failed.items()}
    closed = sum(rec.closed_by_server.values())
    faults = {k: c[k] for k in FAULT_KEYS}
    faults["connections_refused"] = subs.refused + pubs.refused
    faults["connections_failed"] = sum(conn_failures.values())
    faults["closed_by_server"] = closed
    faults["publish_errors"] = sum(rec.publish_errors.values())
    storm = _storm(rec.storm)
    if storm is not None:
        faults["storm_not_recovered"] = storm["dropped"] - storm["receiving"]
    total_faults = sum(faults.values())
    wire_per_delivery = round(c["wire_bytes"] / delivered, 1) if delivered else None
    passed = total_faults == 0 and (rec.idle or delivered > 0)
    client_cpu_ns = sum(rec.client_cpu_ns)
    client_pct = max(rec.client_cpu_ns) / 1e9 / run_s * 100
    if rec.idle:
        mode = "idle connections"
    elif o.rounds is not None:
        mode = f"{o.rounds} rounds"
    elif o.rate is None:
        mode = f"closed loop, window {o.window}"
    else:
        mode = f"open loop, {o.rate:g} messages/s"
    if o.channel_per_process:
        mode += f", a channel per process ({rec.processes})"
    h_del, h_last = rec.delivery, rec.to_last
    return {
        "tool": f"ringcast loadtest {__version__}",
        "target": o.url,
        "engine": rec.engine,
        "started_at": dt.datetime.fromtimestamp(rec.started_at, dt.UTC).isoformat(
            timespec="seconds"),
        "host": {"machine": platform.machine(), "kernel": platform.release(),
                 "cpus": os.cpu_count(), "python": platform.python_version()},
        "mode": mode,
        "options": asdict(o),
        "connect": {
            "subscribers_requested": subs.requested,
            "subscribers_opened": subs.opened,
            "publishers_opened": pubs.opened,
            "refused": subs.refused + pubs.refused,
            "failures": conn_failures,
            "seconds": round(connect_s, 3),
            "per_second": round(subs.opened / connect_s, 1) if connect_s > 0 else None,
            "handshake_ms": _latency(handshakes),
            "source_addresses": rec.source_addresses or 1,
            "processes": rec.processes,
            "binding": rec.binding,
            **_team(rec),
        },
        "rounds": _rounds(rec),
        "run": {
            "seconds": round(run_s, 3),
            "sending_seconds": round(send_s, 3),
            "messages_sent": rec.sent,
            "messages_completed": c["completed"],
            "messages_fully_delivered": c["completed_all"],
            "messages_given_up": c["expired"],
            "deliveries": delivered,
            "expected_deliveries": _expected(c),
            "deliveries_per_s": round(delivered / run_s, 1),
            "messages_fully_delivered_per_s": round(c["completed_all"] / run_s, 1),
            "bytes_received": c["bytes"],
            "payload_bytes_per_delivery": o.size,
            "wire_bytes_per_delivery": wire_per_delivery,
            "frames": c["frames"],
            "reads": rec.reads,
            "frames_per_read": round(c["frames"] / rec.reads, 2) if rec.reads else None,
            "fragmented_messages": c["fragmented"],
            "pings_answered": c["pings"],
            "publisher_echoes_ignored": c["ignored"],
        },
        "latency_ms": {"delivery": _latency(h_del), "to_last_subscriber": _latency(h_last)},
        "compression": _compression(rec),
        "storm": storm,
        "faults": faults,
        "pass": passed,
        "closed_by_server": dict(rec.closed_by_server),
        "publish_errors": dict(rec.publish_errors),
        "server": _server(rec.server_pids or list(o.server_pids), rec.server,
                          deliveries=delivered, conns=subs.opened + pubs.opened,
                          asked=o.server_pids, held=rec.hold[1] if rec.hold else None),
        "server_total": _server_total(rec, deliveries=delivered,
                                      conns=subs.opened + pubs.opened),
        "client": {
            "processes": rec.processes,
            "cpu_seconds": round(client_cpu_ns / 1e9, 4),
            "cpu_percent_of_one_core": round(client_pct, 1),    # the busiest process
            "cpu_us_per_1000_deliveries": (round(client_cpu_ns / 1e3 / (delivered / 1000), 2)
                                           if delivered else None),
            "client_may_be_the_limit": client_pct >= CLIENT_BUSY,
        },
        "timeline": rec.timeline,
        "percentile_curves": {"delivery": _curve(h_del), "to_last_subscriber": _curve(h_last)},
    }


def _storm(s: dict[str, Any] | None) -> dict[str, Any] | None:
    """The merged storm (`storm.merge_storms`) as the report shows it: seconds from the
    drop until all were back (101) and all receiving; None where that never happened."""
    if s is None:
        return None
    reconnects = HdrHistogram(1, 3_600_000_000_000, 3)
    for ns in s["reconnect_ns"]:
        reconnects.record_value(max(1, ns))
    t0 = s["t_drop_ns"]

    def since_drop(t: int) -> float | None:
        return round((t - t0) / 1e9, 3) if t0 and t else None

    return {"fraction": s["fraction"], "at_s": s["at"], "dropped": s["dropped"],
            "back": s["back"], "receiving": s["receiving"],
            "all_back_s": since_drop(s["t_back_ns"]),
            "all_receiving_s": since_drop(s["t_receiving_ns"]),
            "reconnect_ms": _latency(reconnects),
            "failed_attempts": s["failed"]}


def _expected(c: dict[str, int]) -> int:
    return sum(c[k] for k in ("delivered", "lost", "undelivered", "corrupted", "bad_opcode"))


def _fmt_lat(d: dict[str, float]) -> str:
    if not d.get("count"):
        return "no samples"
    keys = [f"p{p:g}" for p in PERCENTILES] + ["max"]
    return "  ".join(f"{k} {_ms(d[k])}" for k in keys)


def _ms(v: float) -> str:
    return f"{v * 1000:.0f}µs" if v < 1 else f"{v:.2f}ms"


def format_text(r: dict[str, Any]) -> str:
    cn, run, f = r["connect"], r["run"], r["faults"]
    kind = " json" if r["options"]["payload"] == "json" else ""
    lines = [
        f"ringcast loadtest: {r['target']}  ({r['mode']}, {r['options']['size']}-byte{kind} "
        "messages,"
        f" {r['options']['publisher']} publisher, client engine {r['engine']})",
        f"connect    {cn['subscribers_opened']}/{cn['subscribers_requested']} subscribers in "
        f"{cn['seconds']:.2f}s ({cn['per_second'] or 0:,.0f}/s"
        + (f", {cn['processes']} client processes" if cn["processes"] > 1 else "")
        + "), handshake "
        + _fmt_lat(cn["handshake_ms"]),
    ]
    binding = cn.get("binding") or []
    pairs = [b for b in binding if b["mode"] == "explicit"]
    if pairs:
        skipped = sum(sum(b["pairs_skipped"].values()) for b in pairs)
        lines.append(f"sources    explicit pairs: {pairs[0]['first_address']}.."
                     f"{pairs[-1]['last_address']} ({len(pairs)} processes, ports "
                     f"{pairs[0]['ports'][0]}-{pairs[0]['ports'][1]}), "
                     f"{sum(b['pairs_taken'] for b in pairs):,} taken, {skipped:,} skipped")
    if cn.get("all_connected_s") is not None:
        lines.append(_barrier_text(cn))
    if r["mode"] != "idle connections":
        lines += [
            f"messages   {run['messages_sent']:,} sent, {run['messages_fully_delivered']:,} "
            f"delivered to every subscriber ({run['messages_fully_delivered_per_s']:,.0f}/s) "
            f"in {run['seconds']:.2f}s",
            f"deliveries {run['deliveries']:,} ({run['deliveries_per_s']:,.0f}/s, "
            f"{run['frames_per_read'] or 0:.1f} frames per read)",
            "latency    per delivery:        " + _fmt_lat(r["latency_ms"]["delivery"]),
            "           to last subscriber:  " + _fmt_lat(r["latency_ms"]["to_last_subscriber"]),
        ]
    rd = r.get("rounds")
    if rd is not None:
        lines.append(f"rounds     {rd['completed']}/{rd['asked']} rounds of "
                     f"{rd['messages_per_round']} message(s), each to every subscriber: "
                     + _fmt_lat(rd["round_ms"]))
    if r["compression"] is not None:
        lines += _compression_text(r)
    st = r["storm"]
    if st is not None:
        lines.append(_storm_text(st))
    fault_text = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in f.items())
    lines.append(f"faults     {fault_text}")
    for title, d in (("connection failures", r["connect"]["failures"]),
                     ("closed by server", r["closed_by_server"]),
                     ("publish errors", r["publish_errors"])):
        if d:
            lines.append(f"           {title}: " + ", ".join(f"{k} x{v}" for k, v in d.items()))
    for s in r["server"]:
        per = s["cpu_us_per_1000_deliveries"]
        lines.append(
            f"server     pid {s['pid']}: cpu {s['cpu_seconds']:.2f}s"
            + (f" ({per:,.0f}µs per 1000 deliveries)" if per is not None else "")
            + f", rss {s['rss_mb_end']:.1f} MiB (peak {s['rss_peak_mb']:.1f})"
            + (f", {s['rss_bytes_per_connection']:,} bytes/connection"
               if s["rss_bytes_per_connection"] is not None else "")
        )
    tot = r.get("server_total")
    if tot is not None:
        lines += _server_total_text(tot)
    cl = r["client"]
    busiest = " (the busiest process)" if cl["processes"] > 1 else ""
    lines.append(f"client     cpu {cl['cpu_seconds']:.2f}s = {cl['cpu_percent_of_one_core']:.0f}% "
                 f"of one core{busiest}" + ("  <- the client may be the limit, not the server"
                                  if cl["client_may_be_the_limit"] else ""))
    lines.append("result     " + ("PASS" if r["pass"] else "FAIL"))
    return "\n".join(lines)


def _barrier_text(cn: dict[str, Any]) -> str:
    procs = cn["processes_connected_s"]
    text = f"barrier    all {cn['subscribers_opened']:,} connected at {cn['all_connected_s']:.2f}s"
    if len(procs) > 1:
        text += " (processes: " + ", ".join(f"{x:.2f}s" for x in procs if x is not None) + ")"
    if cn.get("first_publish_s") is not None:
        text += f", first publish at {cn['first_publish_s']:.2f}s"
    return text + ("" if cn["barrier_held"] else "  <- BARRIER BROKEN")


def _server_total_text(t: dict[str, Any]) -> list[str]:
    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    pids = ", ".join(str(p) for p in t["pids"])
    lines = [
        f"server all pids {pids}: cpu {num(t['cpu_us_per_handshake'], ',.1f')}µs per "
        f"handshake, {num(t['cpu_us_per_delivery'], ',.3f')}µs per delivery",
        f"           memory once connected: rss {t['rss_mb_connected']:,.1f} MiB "
        f"({num(t['rss_bytes_per_connection'], ',')} bytes/connection), pss "
        f"{t['pss_mb_connected']:,.1f} MiB ({num(t['pss_bytes_per_connection'], ',')} "
        "bytes/connection)",
    ]
    k = t["keepalive"]
    if k is not None:
        lines.append(f"keepalive  {k['seconds']:.1f}s connected and idle: server cpu "
                     f"{k['cpu_seconds']:.3f}s ({k['cpu_percent_of_one_core']:.2f}% of one "
                     f"core, {num(k['cpu_ns_per_second_per_connection'], ',.1f')}ns per "
                     "second per connection)")
    return lines


def _compression_text(r: dict[str, Any]) -> list[str]:
    """The compression and bytes-per-delivery lines of ``--compression``."""
    z, cn, run = r["compression"], r["connect"], r["run"]
    params = ", ".join(f"{k} x{v}" for k, v in z["parameters"].items()) or "none"
    text = (f"compression permessage-deflate on {z['negotiated_subscribers']}/"
            f"{cn['subscribers_requested']} subscribers")
    if r["options"]["publisher"] == "ws":
        text += f", {z['negotiated_publishers']}/{cn['publishers_opened']} publishers"
    text += f" ({params})"
    if z["declined"]:
        text += f"; declined {z['declined']}"
    lines = [text]
    if r["mode"] != "idle connections":
        size, wire = run["payload_bytes_per_delivery"], run["wire_bytes_per_delivery"]
        on_wire = (f"{wire:,.1f} on the wire ({wire / size * 100:.1f} %)" if wire is not None
                   else "nothing delivered")
        lines.append(f"bytes      per delivery: {size:,} payload, {on_wire}; "
                     f"{z['compressed_messages']:,} messages came compressed")
    mib = z["client_inflate_bytes"] / 2**20
    lines.append(f"           client inflate memory {mib:.2f} MiB in "
                 f"{z['client_inflate_streams']} zlib streams"
                 + (f"; inflate errors {z['inflate_errors']}, over size "
                    f"{z['inflate_oversize']}" if z["inflate_errors"] or z["inflate_oversize"]
                    else ""))
    return lines


def _storm_text(st: dict[str, Any]) -> str:
    def took(key: str, what: str) -> str:
        s = st[f"all_{key}_s"]
        return f"all {what} in {s:.2f}s" if s is not None else \
            f"{st[key]:,} {what} by the end (not all)"

    text = (f"storm      {st['dropped']:,} subscribers dropped at {st['at_s']:g}s: "
            f"{took('back', 'back')}, {took('receiving', 'receiving')}; reconnect "
            + _fmt_lat(st["reconnect_ms"]))
    failed = st["failed_attempts"]
    if failed:
        text += ("\n           failed reconnect attempts (retried): "
                 + ", ".join(f"{k} x{v}" for k, v in failed.items()))
    return text


def write_json(r: dict[str, Any], path: str | os.PathLike[str]) -> None:
    Path(path).write_text(json.dumps(r, indent=2) + "\n")
