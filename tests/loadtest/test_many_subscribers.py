"""What a million-subscriber run rests on, at small scale and on real sockets: explicit
(address, port) pairs, disjoint over the team's processes and the ones the server sees;
the start barrier (nobody publishes before every process is connected); rounds; and the
merged report's server figures (CPU per handshake and per delivery, RSS and PSS per
connection over a supervisor and its workers, keepalive CPU)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from ringcast.cli import main
from ringcast.loadtest import procstat
from ringcast.loadtest.client import Options, explicit_pairs, run_load_test
from ringcast.loadtest.connector import pair_plan
from ringcast.loadtest.options import LoadError
from ringcast.loadtest.target import parse_target
from ringcast.ringio import Engine, RingUnavailable, probe

from .helpers import faulty_server, free_port, ringcast_server, run
from .test_against_ringcast import ZERO

# -- the pairs ------------------------------------------------------------------------


def test_pairs_are_in_order_and_disjoint_over_processes() -> None:
    plans = [pair_plan(k, 500, 0, (30000, 30199)) for k in range(4)]
    assert [p.addresses for p in plans] == [3, 3, 3, 3]          # 200 ports each
    assert plans[0].pair(0) == ("127.1.0.1", 30000)
    assert plans[0].pair(199) == ("127.1.0.1", 30199)
    assert plans[0].pair(200) == ("127.1.0.2", 30000)
    assert plans[2].pair(450) == ("127.3.0.3", 30050)
    taken = [{p.pair(j) for j in range(500)} for p in plans]
    assert all(len(t) == 500 for t in taken)
    assert len(set().union(*taken)) == 4 * 500                    # no pair in two processes
    wide = pair_plan(0, 300 * 10, 300, (1, 10))
    assert wide.address(253) == "127.1.0.254" and wide.address(254) == "127.1.1.1"


def test_too_few_pairs_fail_at_start_with_why() -> None:
    with pytest.raises(ValueError, match=r"needs 101 .* hold only 50"):
        pair_plan(0, 101, 1, (20000, 20049))
    # Through the run: refused before any process or socket (nothing listens there).
    opts = Options(url=f"ws://127.0.0.1:{free_port()}/x", connections=300, messages=1,
                   processes=3, bind="explicit", source_addresses=1,
                   source_ports=(20000, 20049), progress=False)
    with pytest.raises(LoadError, match=r"client process 1 needs 101 \(address, port\) pairs"):
        run_load_test(opts, progress_stream=None)


def test_auto_binds_explicitly_only_where_one_address_is_not_enough() -> None:
    t = parse_target("ws://127.0.0.1:8080/x")

    def explicit(**kw: object) -> bool:
        return explicit_pairs(Options(url=t.url, messages=1, **kw), t)  # type: ignore[arg-type]

    assert not explicit(connections=1000)
    assert explicit(connections=1_000_000)
    assert not explicit(connections=1_000_000, bind="kernel")
    assert explicit(connections=10, bind="explicit")
    remote = parse_target("ws://192.0.2.7:8080/x", allow_remote=True)
    with pytest.raises(LoadError, match="loopback"):
        explicit_pairs(Options(url=remote.url, messages=1, bind="explicit"), remote)


# -- the pairs used, and the barrier ----------------------------------------------------


def test_the_server_sees_each_process_pairs_and_no_message_before_all_connected(
        tmp_path: Path) -> None:
    """Three processes of 100 subscribers; the server holds back the 101s of the third
    process's address for 1 s. The server's own log: every connection came from its
    process's planned pairs, in order; the first message came after the last 101."""
    events = tmp_path / "events"
    with faulty_server("--events", str(events), "--slow-from", "127.3.0.1",
                       "--slow-seconds", "1.0") as port:
        r = run(port, channel="pairs", connections=300, messages=20, processes=3,
                bind="explicit", source_ports=(40000, 40999), max_time=30.0)
    assert r["faults"] == ZERO and r["pass"] is True
    assert r["run"]["deliveries"] == 300 * 20
    upgrades: dict[str, list[tuple[int, int]]] = defaultdict(list)
    messages: list[int] = []
    for line in events.read_text().splitlines():
        word, ns, *peer = line.split()
        if word == "upgrade":
            upgrades[peer[0]].append((int(ns), int(peer[1])))
        else:
            messages.append(int(ns))
    # The lead: 100 subscribers then its publisher; each follower 100 subscribers.
    ports = {a: sorted(p for _, p in v) for a, v in upgrades.items()}
    assert ports == {"127.1.0.1": list(range(40000, 40101)),
                     "127.2.0.1": list(range(40000, 40100)),
                     "127.3.0.1": list(range(40000, 40100))}
    binding = r["connect"]["binding"]
    assert [b["first_address"] for b in binding] == ["127.1.0.1", "127.2.0.1", "127.3.0.1"]
    assert [b["pairs_taken"] for b in binding] == [101, 100, 100]
    assert all(b["mode"] == "explicit" and not b["pairs_skipped"] for b in binding)
    # The barrier had something to wait for, and held.
    first_101 = min(ns for v in upgrades.values() for ns, _ in v)
    last_101 = max(ns for v in upgrades.values() for ns, _ in v)
    slow_first = min(ns for ns, _ in upgrades["127.3.0.1"])
    assert slow_first - first_101 >= 0.9e9
    assert len(messages) == 20 and min(messages) > last_101
    cn = r["connect"]
    assert cn["barrier_held"] is True
    assert cn["processes_connected_s"][2] >= cn["processes_connected_s"][0] + 0.9
    assert cn["all_connected_s"] == max(cn["processes_connected_s"])
    assert cn["first_publish_s"] >= cn["publishing_allowed_s"] >= cn["all_connected_s"]


def test_a_channel_per_process_and_rounds_over_every_channel(tmp_path: Path) -> None:
    """--channel-per-process: process k's subscribers upgrade on /c-k, the lead has one
    publisher per channel; each round, every channel sends one message, and every
    subscriber gets its own channel's only."""
    events = tmp_path / "events"
    with faulty_server("--events", str(events)) as port:
        r = run(port, channel="c", connections=150, processes=3, messages=None, rounds=5,
                channel_per_process=True, bind="explicit", source_ports=(41000, 41999))
    assert r["faults"] == ZERO and r["pass"] is True
    assert r["mode"] == "5 rounds, a channel per process (3)"
    assert r["rounds"]["completed"] == 5 and r["rounds"]["messages_per_round"] == 3
    assert r["run"]["messages_sent"] == 15 and r["run"]["messages_fully_delivered"] == 15
    assert r["run"]["deliveries"] == 150 * 5
    assert r["connect"]["publishers_opened"] == 3
    paths: dict[tuple[str, int], str] = {}
    messages = 0
    for line in events.read_text().splitlines():
        word, _ns, *rest = line.split()
        if word == "upgrade":
            paths[(rest[0], int(rest[1]))] = rest[2]
        else:
            messages += 1
    assert messages == 15
    for k in range(3):
        subs = {paths[(f"127.{k + 1}.0.1", 41000 + j)] for j in range(50)}
        assert subs == {f"/c-{k}"}
    # The lead's publishers, after its subscribers: publisher k on channel k.
    assert [paths[("127.1.0.1", 41050 + k)] for k in range(3)] == ["/c-0", "/c-1", "/c-2"]
    assert len(paths) == 153


def test_kernel_ports_stay_the_default_for_small_runs(server: tuple[int, int]) -> None:
    port, _ = server
    r = run(port, channel="kernel-ports", connections=60, messages=10, processes=2)
    assert r["faults"] == ZERO
    assert [b["mode"] for b in r["connect"]["binding"]] == ["kernel", "kernel"]


# -- the merged report against a supervisor and its workers -------------------------------


def _backend() -> str:
    return "epoll" if isinstance(probe(Engine.IO_URING), RingUnavailable) else "io_uring"


def _wait_children(pid: int, n: int) -> list[int]:
    deadline = time.monotonic() + 20.0
    while len(kids := procstat.children(pid)) < n:
        assert time.monotonic() < deadline, f"supervisor {pid} has {kids}, not {n} workers"
        time.sleep(0.02)
    return kids


def test_merged_report_over_three_processes_and_two_workers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    plot = importlib.util.find_spec("matplotlib") is not None
    with ringcast_server(_backend(), SERVER_WORKERS="2", LIMITS_PING_INTERVAL="0.2") as (
            port, pid):
        workers = _wait_children(pid, 2)
        argv = ["loadtest", f"ws://127.0.0.1:{port}/merged", "-c", "600", "-p", "3",
                "--bind", "explicit", "--rounds", "5", "--hold", "1.0",
                "--server-pid", str(pid), "--json", str(out), "-q", "--max-time", "60"]
        assert main(argv + (["--plot", str(png)] if plot else [])) == 0
    text = capsys.readouterr().out
    assert "Infinity" not in out.read_text()
    r = json.loads(out.read_text())
    assert r["pass"] is True and r["faults"] == ZERO
    assert r["timeline"] and all(0 <= p["t"] < 60 for p in r["timeline"])
    assert r["mode"] == "5 rounds"
    cn = r["connect"]
    assert cn["processes"] == 3 and cn["subscribers_opened"] == 600
    assert 0 < cn["all_connected_s"] < 30 and cn["barrier_held"] is True
    assert cn["first_publish_s"] >= cn["all_connected_s"] + 1.0     # the hold came between
    rd = r["rounds"]
    assert rd["completed"] == 5 and rd["messages_per_round"] == 1
    assert len(rd["per_round_ms"]) == 5 and all(0 < ms < 5000 for ms in rd["per_round_ms"])
    assert 0 < rd["round_ms"]["p50"] <= rd["round_ms"]["p99"]
    assert r["latency_ms"]["to_last_subscriber"]["count"] == 5
    assert r["run"]["deliveries"] == 600 * 5
    tot = r["server_total"]
    assert tot["pids"][0] == pid and sorted(tot["pids"][1:]) == sorted(workers)
    assert [s["found_as_child"] for s in r["server"]] == [False, True, True]
    assert 0 < tot["cpu_us_per_handshake"] < 100_000
    assert 0 < tot["cpu_us_per_delivery"] < 100_000
    assert 0 < tot["rss_bytes_per_connection"] < 1_000_000
    assert 0 < tot["pss_bytes_per_connection"] < 1_000_000
    # PSS shares the pages the workers got from the supervisor: less than the RSS sum.
    assert 0 < tot["pss_mb_connected"] < tot["rss_mb_connected"]
    ka = tot["keepalive"]
    assert 0.99 <= ka["seconds"] < 10 and ka["cpu_seconds"] > 0
    assert ka["cpu_ns_per_second_per_connection"] > 0
    assert r["run"]["pings_answered"] > 0              # the server did ping, every 0.2 s
    for word in ("sources    explicit pairs: 127.1.0.1..127.3.0.1 (3 processes, ports "
                 "10000-32767), 601 taken, 0 skipped", "barrier    all 600 connected",
                 "rounds     5/5 rounds", "server all pids",
                 "pss", "keepalive  1.0s connected and idle"):
        assert word in text, word
    if plot:
        assert png.stat().st_size > 10_000


# -- /proc ---------------------------------------------------------------------------------


def test_pss_and_children_from_proc() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        assert procstat.with_children([os.getpid()])[0] == os.getpid()
        assert child.pid in procstat.with_children([os.getpid()])
        s = procstat.sample(os.getpid())
        assert 0 < s.pss_bytes <= s.rss_bytes * 2
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()
    assert procstat.pss_bytes(2**22 + 12345) == 0                  # no such process
