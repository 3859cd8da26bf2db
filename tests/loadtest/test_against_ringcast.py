"""The loadtest against a real `ringcast serve`, on both backends: zero faults."""

from __future__ import annotations

import pytest

from .helpers import run

ZERO = {"lost": 0, "undelivered": 0, "duplicated": 0, "out_of_order": 0, "corrupted": 0,
        "bad_opcode": 0, "protocol_errors": 0, "connections_refused": 0, "connections_failed": 0,
        "closed_by_server": 0, "publish_errors": 0}


@pytest.mark.parametrize("engine", ["auto", "epoll"])
def test_closed_loop_zero_faults(server: tuple[int, int], engine: str) -> None:
    port, pid = server
    r = run(port, channel=f"closed-{engine}", connections=300, messages=2000, window=8,
            engine=engine, server_pids=(pid,))
    assert r["faults"] == ZERO
    assert r["pass"] is True
    assert r["run"]["deliveries"] == 300 * 2000
    assert r["run"]["messages_fully_delivered"] == 2000
    srv = r["server"][0]
    assert srv["alive"] and srv["cpu_us_per_1000_deliveries"] > 0 and srv["rss_mb_end"] > 0


def test_open_loop_zero_faults(server: tuple[int, int]) -> None:
    port, _ = server
    r = run(port, channel="open", connections=200, duration=1.0, messages=None, rate=500.0)
    assert r["faults"] == ZERO
    assert 400 <= r["run"]["messages_sent"] <= 501
    assert r["run"]["deliveries"] == 200 * r["run"]["messages_sent"]


def test_http_publisher_and_big_messages(server: tuple[int, int]) -> None:
    port, _ = server
    r = run(port, channel="http", connections=50, messages=300, size=16384, publisher="http")
    assert r["faults"] == ZERO
    assert r["run"]["deliveries"] == 50 * 300


def test_several_publishers(server: tuple[int, int]) -> None:
    port, _ = server
    r = run(port, channel="multi", connections=50, messages=600, publishers=3, window=12)
    assert r["faults"] == ZERO
    assert r["run"]["deliveries"] == 50 * 600


def test_idle_connections(server: tuple[int, int]) -> None:
    port, pid = server
    r = run(port, channel="idle", connections=200, messages=0, duration=0.5,
            server_pids=(pid,))
    assert r["pass"] is True and r["mode"] == "idle connections"
    assert r["connect"]["subscribers_opened"] == 200
