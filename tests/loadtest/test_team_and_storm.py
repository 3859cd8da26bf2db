"""Runs over several client processes (``--processes``) and connection storms
(``--storm``), against a real `ringcast serve` on both backends and the faulty server."""

from __future__ import annotations

import resource

import pytest

from ringcast.loadtest.client import Options, processes_needed, run_load_test
from ringcast.loadtest.options import LoadError

from .helpers import faulty_server, free_port, run
from .test_against_ringcast import ZERO

# -- a team of processes ---------------------------------------------------------


def test_processes_share_the_subscribers_and_the_report_adds_up(
        server: tuple[int, int]) -> None:
    port, _ = server
    r = run(port, channel="team", connections=301, messages=400, processes=3)
    assert r["faults"] == ZERO and r["pass"] is True
    assert r["connect"]["processes"] == 3 and r["client"]["processes"] == 3
    assert r["connect"]["subscribers_opened"] == 301
    assert r["connect"]["handshake_ms"]["count"] == 301
    assert r["run"]["deliveries"] == 301 * 400
    # Every message waited for every process: all 400 complete, each to all 301.
    assert r["run"]["messages_completed"] == 400
    assert r["run"]["messages_fully_delivered"] == 400
    assert r["latency_ms"]["delivery"]["count"] == 301 * 400
    assert r["latency_ms"]["to_last_subscriber"]["count"] == 400


def test_http_publishers_over_processes(server: tuple[int, int]) -> None:
    port, _ = server
    r = run(port, channel="team-http", connections=120, messages=300, publisher="http",
            processes=2)
    assert r["faults"] == ZERO
    assert r["run"]["deliveries"] == 120 * 300
    assert r["run"]["messages_fully_delivered"] == 300


def test_a_fault_seen_by_a_follower_is_in_the_report() -> None:
    # Subscribers 0, 2, 4 lose message 5; with two processes of 3 each, both processes
    # have affected subscribers. (An HTTP publisher: a WebSocket one would take a
    # subscription index too, anywhere among the two processes' subscribers.)
    with faulty_server("--drop", "5", "--affect-every", "2") as port:
        r = run(port, connections=6, messages=20, processes=2, publisher="http")
    assert r["faults"]["lost"] == 3
    assert r["run"]["messages_fully_delivered"] == 19
    assert r["pass"] is False


def test_no_subscriber_anywhere_is_an_error_naming_every_process_failures() -> None:
    port = free_port()                      # nothing listens there
    with pytest.raises(LoadError, match="6 refused"):
        run(port, connections=6, messages=5, processes=3)


def test_processes_default_to_what_the_open_files_limit_needs() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    opts = Options(url="ws://127.0.0.1:9/x", connections=10, messages=1)
    assert processes_needed(opts) == 1
    assert processes_needed(Options(url="ws://127.0.0.1:9/x", connections=10, messages=1,
                                    processes=4)) == 4
    if hard != resource.RLIM_INFINITY:
        many = Options(url="ws://127.0.0.1:9/x", connections=3 * hard, messages=1)
        assert processes_needed(many) >= 3


@pytest.mark.parametrize("bad", [{"processes": 65}, {"processes": 11},
                                 {"storm": (0.0, 1.0)}, {"storm": (1.5, 1.0)},
                                 {"storm": (1.0, 5.0), "duration": 2.0, "messages": None,
                                  "rate": 10.0},
                                 {"storm": (1.0, 1.0), "messages": 0, "duration": 2.0}])
def test_bad_team_and_storm_options_are_refused_before_anything_starts(
        bad: dict[str, object]) -> None:
    opts = Options(**{"url": "ws://127.0.0.1:9/x", "connections": 10, "messages": 5, **bad})
    with pytest.raises(LoadError):
        run_load_test(opts, progress_stream=None)


# -- storms ----------------------------------------------------------------------


def test_a_storm_drops_every_subscriber_and_every_one_comes_back_receiving(
        server: tuple[int, int]) -> None:
    port, _ = server
    r = run(port, channel="storm", connections=200, messages=None, duration=3.0, rate=200.0,
            storm=(1.0, 1.0))
    st = r["storm"]
    assert st["dropped"] == st["back"] == st["receiving"] == 200
    assert st["all_back_s"] is not None and st["all_receiving_s"] is not None
    assert st["all_back_s"] <= st["all_receiving_s"]
    assert st["reconnect_ms"]["count"] == 200
    # Nothing published while they were away counts against them; nothing else is lost.
    assert r["faults"] == {**ZERO, "storm_not_recovered": 0}
    assert r["pass"] is True


def test_a_storm_over_processes_merges_into_one(server: tuple[int, int]) -> None:
    port, _ = server
    r = run(port, channel="storm-team", connections=300, messages=None, duration=3.0,
            rate=200.0, storm=(0.5, 1.0), processes=3)
    st = r["storm"]
    assert st["dropped"] == st["back"] == st["receiving"] == 150      # half of each 100
    assert st["all_receiving_s"] is not None
    assert r["faults"] == {**ZERO, "storm_not_recovered": 0}


def test_subscribers_that_cannot_come_back_fail_the_run() -> None:
    # The server takes the first 20 upgrades and refuses every later one (503): the
    # dropped subscribers try again and again, and the run says they never came back.
    with faulty_server("--refuse-after", "21") as port:       # 20 subscribers + publisher
        r = run(port, connections=20, messages=None, duration=2.0, rate=50.0,
                storm=(0.25, 0.5))
    st = r["storm"]
    assert st["dropped"] == 5 and st["back"] == 0 and st["all_back_s"] is None
    assert r["faults"]["storm_not_recovered"] == 5
    assert st["failed_attempts"].get("HTTP 503", 0) >= 5
    assert r["pass"] is False
