"""The loadtest against a server that misbehaves on purpose: every fault counted exactly."""

from __future__ import annotations

import pytest

from ringcast.loadtest.client import LoadError

from .helpers import faulty_server, run

N, M = 10, 60
AFFECTED = 4          # subscribers 0, 3, 6, 9 with --affect-every 3

ZERO = {"lost": 0, "undelivered": 0, "duplicated": 0, "out_of_order": 0, "corrupted": 0,
        "bad_opcode": 0, "protocol_errors": 0, "connections_refused": 0, "connections_failed": 0,
        "closed_by_server": 0, "publish_errors": 0}


def faults(r: dict[str, object]) -> dict[str, int]:
    f = r["faults"]
    assert isinstance(f, dict)
    return dict(f)


def test_clean_relay_passes() -> None:
    with faulty_server() as port:
        r = run(port, connections=N, messages=M)
    assert faults(r) == ZERO
    assert r["pass"] is True
    assert r["run"]["deliveries"] == N * M
    assert r["run"]["messages_fully_delivered"] == M
    assert r["latency_ms"]["delivery"]["count"] == N * M
    assert r["latency_ms"]["to_last_subscriber"]["count"] == M


@pytest.mark.parametrize(("flag", "indices", "key"), [
    ("--drop", "3,10,41", "lost"),
    ("--duplicate", "5,6,50", "duplicated"),
    ("--reorder", "4,30,44", "out_of_order"),
    ("--corrupt", "7,8,59", "corrupted"),
])
def test_each_fault_counted_exactly(flag: str, indices: str, key: str) -> None:
    with faulty_server(flag, indices, "--affect-every", "3") as port:
        r = run(port, connections=N, messages=M)
    k = len(indices.split(","))
    assert faults(r) == {**ZERO, key: k * AFFECTED}
    assert r["pass"] is False
    delivered = N * M - (k * AFFECTED if key in ("lost", "corrupted") else 0)
    assert r["run"]["deliveries"] == delivered


def test_drop_on_open_loop_too() -> None:
    with faulty_server("--drop", "0,20", "--affect-every", "5") as port:
        r = run(port, connections=N, messages=40, rate=400.0)
    assert faults(r) == {**ZERO, "lost": 2 * 2}


def test_fragmented_messages_with_interleaved_pings_are_valid() -> None:
    with faulty_server("--fragment", "3") as port:
        r = run(port, connections=N, messages=M, size=100)
    assert faults(r) == ZERO
    assert r["run"]["fragmented_messages"] == N * M
    assert r["run"]["pings_answered"] == N * M
    assert r["run"]["deliveries"] == N * M


def test_frames_split_at_every_byte_are_valid() -> None:
    with faulty_server("--split-bytes") as port:
        r = run(port, connections=4, messages=20, size=300)
    assert faults(r) == ZERO
    assert r["run"]["deliveries"] == 80
    # The bytes did arrive in pieces: more reads than frames.
    assert r["run"]["reads"] > r["run"]["frames"]


def test_bad_accept_is_a_failed_connection() -> None:
    with faulty_server("--bad-accept") as port, pytest.raises(LoadError) as info:
        run(port, connections=N, messages=M)
    assert f"{N} bad Sec-WebSocket-Accept" in str(info.value)


def test_closed_by_server_is_counted() -> None:
    with faulty_server("--close-after", "5", "--affect-every", "2") as port:
        r = run(port, connections=N, messages=M)
    assert faults(r) == {**ZERO, "closed_by_server": 5}
    assert r["closed_by_server"] == {"subscriber: close code 1011": 5}
    assert r["run"]["deliveries"] == 5 * M + 5 * 5


def test_publisher_echo_is_not_counted() -> None:
    with faulty_server("--echo") as port:
        r = run(port, connections=N, messages=M)
    assert faults(r) == ZERO
    # The echo may trail the last subscriber's copy: the run ends before it.
    assert M - 8 <= r["run"]["publisher_echoes_ignored"] <= M
    assert r["run"]["deliveries"] == N * M


def test_http_publisher() -> None:
    with faulty_server("--drop", "2", "--affect-every", "3") as port:
        r = run(port, connections=N, messages=M, publisher="http", window=4)
    # One HTTP connection per publisher id; message 2 of the server's order is dropped.
    assert faults(r) == {**ZERO, "lost": AFFECTED}
