"""Workers on one host: fan-out across workers, a worker killed, signals through the supervisor.

Every client connection first asks ``GET /healthz`` on itself, so the test
knows which worker the kernel's SO_REUSEPORT hash gave it; subscribers and
publishers are then opened until each worker has the wanted number.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from .checks import check_exactly_once, linked, log_lines, publish_all, run
from .conftest import StartNode
from .wsclient import (
    Conn,
    close_all,
    closing_request,
    metric,
    open_many,
    open_on_workers,
    wait_counts,
    wait_until,
)

CLOSE_GOING_AWAY, CLOSE_TOO_BIG = 1001, 1009


def _fan_out_across_workers(start_node: StartNode, per_worker: int, n_ws: int, n_http: int,
                            backend: str | None = None) -> None:
    node = start_node(workers=2, backend=backend)
    channel = "fan"

    async def main() -> None:
        await linked(node)
        subs = await open_on_workers(node.port, {0: per_worker, 1: per_worker}, channel)
        pubs = await open_on_workers(node.port, {0: 2, 1: 2}, channel)
        https = await open_on_workers(node.port, {0: 1, 1: 1})
        ws = {f"ws{w}.{i}": c for w, cs in pubs.items() for i, c in enumerate(cs)}
        http = {f"http{w}": cs[0] for w, cs in https.items()}
        own = {id(c): name for name, c in ws.items()}
        everyone = [c for cs in subs.values() for c in cs] + list(ws.values())

        await publish_all(ws, http, channel, n_ws, n_http)

        expected = {name: list(range(n_ws)) for name in ws}
        expected |= {name: list(range(n_http)) for name in http}
        total = sum(len(s) for s in expected.values())
        await wait_counts(everyone[:-len(ws)], total, 60, "every message at every subscriber")
        await wait_counts(ws.values(), total - n_ws, 30, "the others' messages at publishers")
        check_exactly_once(everyone, expected, own, "2 workers")

        # Server side: each message crossed to the other worker once (not once per
        # subscriber) and each worker fanned every message out once.
        for w, conn in http.items():
            m = await conn.metrics()
            worker = w.removeprefix("http")
            other = "1" if worker == "0" else "0"
            from_other = 2 * n_ws + n_http   # what the other worker's publishers sent
            assert metric(m, "ringcast_messages_from_workers_total", worker=worker) == from_other
            assert metric(m, "ringcast_messages_fanned_out_total", worker=worker) == total
            assert metric(m, "ringcast_workers_linked", worker=worker) == 2   # as /healthz
            published = metric(m, "ringcast_messages_published_total", worker=worker)
            assert published == 2 * n_ws + n_http
            # The host view: this worker live, the other as of its last report (<= 2 s).
            await wait_until(
                lambda c=conn, w=worker, o=other: _host_view_settled(c, w, o, per_worker),
                5, f"ringcast_host_connections on worker {worker}")
        close_all(everyone + list(http.values()))

    run(main())


async def _host_view_settled(conn: Conn, worker: str, other: str, per_worker: int) -> bool:
    m = await conn.metrics()
    if not m.has("ringcast_host_connections", worker=other):
        return False   # no report from the other worker yet
    mine = metric(m, "ringcast_host_connections", worker=worker)
    theirs = metric(m, "ringcast_host_connections", worker=other)
    # per_worker subscribers + 2 publishers + 1 HTTP connection on each worker; no "all"
    # series (a sum() over the workers would count it twice)
    return mine == theirs == per_worker + 3 and m.value("ringcast_host_connections") == \
        2 * (per_worker + 3)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_workers_500_subscribers_each_get_everything_once_in_order(
        start_node: StartNode) -> None:
    """2 workers x 500 subscribers; 2 WebSocket + 1 HTTP publisher on each worker."""
    _fan_out_across_workers(start_node, per_worker=500, n_ws=150, n_http=50)


@pytest.mark.timeout(60)
def test_two_workers_on_epoll(start_node: StartNode) -> None:
    """The same hand-off on the epoll backend, smaller."""
    _fan_out_across_workers(start_node, per_worker=50, n_ws=40, n_http=20, backend="epoll")


@pytest.mark.timeout(60)
def test_three_workers_each_see_every_worker_through_the_collector(
        start_node: StartNode) -> None:
    """The headline numbers go through worker 0: workers 1 and 2 send theirs only to it,
    and each still reports the other's in its ``ringcast_host_*`` series."""
    node = start_node(workers=3)
    subscribers = {0: 2, 1: 3, 2: 4}

    async def main() -> None:
        await linked(node)
        subs = await open_on_workers(node.port, subscribers, "host")
        https = await open_on_workers(node.port, {0: 1, 1: 1, 2: 1})
        # Each worker's open connections: its subscribers and one HTTP connection.
        wanted = {str(w): n + 1 for w, n in subscribers.items()}
        for w, (conn,) in https.items():
            await wait_until(lambda c=conn: _host_view_is(c, wanted), 10,
                             f"every worker's ringcast_host_connections on worker {w}",
                             interval=0.2)
        close_all([c for cs in subs.values() for c in cs] +
                  [c for cs in https.values() for c in cs])

    run(main())


async def _host_view_is(conn: Conn, wanted: dict[str, int]) -> bool:
    m = await conn.metrics()
    return all(m.has("ringcast_host_connections", worker=w)
               and metric(m, "ringcast_host_connections", worker=w) == n
               for w, n in wanted.items())


@pytest.mark.timeout(90)
def test_killed_worker_is_restarted_and_the_other_loses_nothing(start_node: StartNode) -> None:
    node = start_node(workers=2)
    channel = "k"

    async def main() -> None:
        await linked(node)
        pids = node.worker_pids()
        assert set(pids) == {0, 1}, pids
        subs = await open_on_workers(node.port, {0: 100, 1: 100}, channel)
        pubs = await open_on_workers(node.port, {0: 1, 1: 1}, channel)
        survivors, victims = subs[0], subs[1] + pubs[1]
        pub0 = pubs[0][0]
        sent = 0

        def send() -> None:
            nonlocal sent
            pub0.send_text(f"p0:{sent}")
            sent += 1

        for _ in range(50):                  # before
            send()
        await wait_counts(survivors + victims, 50, 20, "the first 50 messages")

        os.kill(pids[1], signal.SIGKILL)
        restarted = rf"worker 1 \(pid {pids[1]}\) killed by SIGKILL; restarting in [\d.]+s"

        def back() -> bool:
            return (bool(log_lines(node, restarted))
                    and len([m for m in node.listening_lines() if m[1] == "1"]) == 2)

        # During: keep publishing until the victims saw their connections drop and
        # the supervisor brought worker 1 back.
        while not (all(c.closed for c in victims) and back()):
            send()
            await asyncio.sleep(0.005)
            assert sent < 5000, (f"worker 1 not back: victims closed "
                                 f"{sum(c.closed for c in victims)}/{len(victims)}, "
                                 f"log:\n{node.stderr_text()}")
        during = sent
        await linked(node)                   # the new worker 1 and worker 0 linked again
        for _ in range(50):                  # after
            send()

        await wait_counts(survivors, sent, 20, "every message at worker 0's subscribers")
        check_exactly_once(survivors, {"p0": list(range(sent))}, what="survivors")
        assert not any(c.closed for c in survivors)
        for c in victims:
            assert c.close_code is None      # no close frame: the process died
            got = [int(t.rpartition(":")[2]) for t in c.texts() if t.startswith("p0:")]
            assert got == list(range(len(got))) and len(got) >= 50, got[:5]

        # The victims reconnect; some land on the new worker 1.
        again = await open_many(node.port, len(victims), channel)
        new1 = (await open_on_workers(node.port, {1: 20}, channel))[1]
        pub1 = (await open_on_workers(node.port, {1: 1}, channel))[1][0]
        fresh = again + new1
        assert {c.worker for c in fresh} == {0, 1}
        base = sent
        for _ in range(20):
            send()
        for i in range(20):
            pub1.send_text(f"p1:{i}")
        await wait_counts(fresh, 40, 20, "messages after reconnecting")
        await wait_counts(survivors, sent + 20, 20, "new worker 1's messages at worker 0")
        check_exactly_once(fresh, {"p0": list(range(base, sent)), "p1": list(range(20))},
                           what="reconnected")
        check_exactly_once(survivors, {"p0": list(range(sent)), "p1": list(range(20))},
                           what="survivors after")
        assert during > 50
        new_pids = node.worker_pids()
        assert new_pids[0] == pids[0] and new_pids[1] != pids[1], (pids, new_pids)
        close_all(survivors + fresh + [pub0, pub1])

    run(main())


@pytest.mark.timeout(60)
def test_sighup_reaches_every_worker_and_sigterm_drains_them(
        start_node: StartNode, tmp_path: Path) -> None:
    config = tmp_path / "ringcast.toml"
    config.write_text("[limits]\nmax_message_size = 100000\n")
    node = start_node(workers=2, config=str(config))

    async def main() -> None:
        await linked(node)
        pids = node.worker_pids()

        # SIGHUP with nothing changed, then with a live setting changed.
        node.signal(signal.SIGHUP)
        for w in (0, 1):
            await wait_until(lambda w=w: bool(log_lines(
                node, rf"\[worker {w}\] reload: no live-reloadable setting changed")),
                10, f"worker {w}'s reload line")
        config.write_text("[limits]\nmax_message_size = 1000\n")
        node.signal(signal.SIGHUP)
        for w in (0, 1):
            await wait_until(lambda w=w: bool(log_lines(
                node, rf"\[worker {w}\] reload: applied limits\.max_message_size \d+ -> 1000")),
                10, f"worker {w} applying limits.max_message_size")
        # Applied in both workers: a 2000-byte message is too big on either.
        big = await open_on_workers(node.port, {0: 1, 1: 1}, "h")
        for conns in big.values():
            conns[0].send_text("x" * 2000)
        for conns in big.values():
            await asyncio.wait_for(conns[0].lost, 10)
            assert conns[0].close_code == CLOSE_TOO_BIG
        assert node.worker_pids() == pids    # reloaded, not restarted
        assert not log_lines(node, "restarting")

        # SIGTERM: every worker closes its clients with 1001 and exits; the supervisor exits 0.
        clients = await open_on_workers(node.port, {0: 20, 1: 20}, "t")
        node.signal(signal.SIGTERM)
        every = clients[0] + clients[1]
        await asyncio.wait_for(asyncio.gather(*(c.lost for c in every)), 15)
        assert {c.close_code for c in every} == {CLOSE_GOING_AWAY}

    run(main())
    assert node.wait(15) == 0
    for w in (0, 1):
        assert log_lines(node, rf"\[worker {w}\] draining: ")
        assert log_lines(node, rf"INFO worker {w} stopped$")
    assert log_lines(node, r"INFO stopping 2 workers")
    assert not log_lines(node, r"ERROR|WARNING")


@pytest.mark.timeout(60)
def test_restarted_worker_gets_messages_published_after_its_clients_joined(
        start_node: StartNode) -> None:
    node = start_node(workers=2)

    async def main() -> None:
        await linked(node)
        pub0 = (await open_on_workers(node.port, {0: 1}, "z"))[0][0]
        h0 = (await open_on_workers(node.port, {0: 1}))[0][0]     # worker 0's /metrics
        for attempt in range(3):
            pids = node.worker_pids()
            seen = len([m for m in node.listening_lines() if m[1] == "1"])
            os.kill(pids[1], signal.SIGKILL)
            await wait_until(
                lambda n=seen: len([m for m in node.listening_lines() if m[1] == "1"]) > n,
                15, "worker 1 restarted", interval=0.002)
            sub = (await open_on_workers(node.port, {1: 1}, "z"))[1][0]
            pub0.send_text(f"r{attempt}:0")    # published after sub had its 101
            # Links only come up: if worker 0 is not linked now, it was not at the publish.
            unlinked = metric(await h0.metrics(), "ringcast_workers_linked", worker="0") == 1
            await linked(node)
            pub0.send_text(f"r{attempt}:1")
            await wait_until(lambda s=sub, a=attempt: f"r{a}:1" in s.texts(), 10,
                             "the message sent once the workers are linked")
            assert sub.texts() == [f"r{attempt}:0", f"r{attempt}:1"], (
                f"restart {attempt + 1}: the subscriber on the new worker 1 missed a message "
                f"published on worker 0 after it joined (worker 0 not yet linked to the new "
                f"worker 1: {unlinked}): got {sub.texts()}")
            sub.close()
            if unlinked:
                break       # the window was hit and nothing was lost
        close_all([pub0, h0])

    run(main())


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or shutil.which("taskset") is None,
                    reason="needs 2 CPUs and taskset")
@pytest.mark.timeout(30)
def test_auto_workers_follow_cpu_affinity(start_node: StartNode) -> None:
    node = start_node(workers=1, cpus={0}, SERVER_WORKERS="auto")
    assert not log_lines(node, r"supervisor: \d+ workers"), node.stderr_text()


@pytest.mark.slow
@pytest.mark.timeout(60)
def _listeners(port: int) -> int:
    """Sockets listening on ``port`` (IPv4, from /proc/net/tcp: state 0A is LISTEN)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            count += 1
    return count


def test_link_made_after_a_restart_survives_close_timeout(start_node: StartNode) -> None:
    node = start_node(workers=2, LIMITS_CLOSE_TIMEOUT=3)

    async def main() -> None:
        await linked(node)
        pub0 = (await open_on_workers(node.port, {0: 1}, "s"))[0][0]
        pids = node.worker_pids()
        seen = len([m for m in node.listening_lines() if m[1] == "1"])
        os.kill(pids[1], signal.SIGKILL)
        await wait_until(lambda: bool(log_lines(node, rf"worker 1 \(pid {pids[1]}\) killed")),
                         10, "the supervisor noticing worker 1's death")
        # The dead worker's listener can outlive it: its io_uring (a multishot accept on
        # the listener holds the file) is torn down by a kernel worker after the process
        # has gone, and until then the kernel still hands it connections, which are
        # reset. Wait until worker 0's is the port's only listener.
        await wait_until(lambda: _listeners(node.port) == 1, 10,
                         "worker 1's listener to leave the port")
        # While worker 1 is down, every connection lands on worker 0: a few closed by
        # the server with a flush leave their ids (and flush deadlines) behind.
        assert await asyncio.gather(*(closing_request(node.port) for _ in range(8))) == [0] * 8
        await wait_until(
            lambda: len([m for m in node.listening_lines() if m[1] == "1"]) > seen,
            15, "worker 1 restarted")
        await linked(node)
        sub = (await open_on_workers(node.port, {1: 1}, "s"))[1][0]
        # Publish past the flush deadlines: each message must reach worker 1.
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < 5.0:
            pub0.send_text(f"s:{i}")
            await wait_until(lambda n=i: len(sub.messages) > n, 2,
                             f"message {i} at worker 1, {time.monotonic() - start:.1f}s "
                             f"after the workers linked again")
            i += 1
            await asyncio.sleep(0.05)
        assert sub.texts() == [f"s:{k}" for k in range(i)]
        close_all([pub0, sub])

    run(main())
