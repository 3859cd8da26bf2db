"""Many nodes through a real redis-server: one order per channel, and the outage rule.

The rule under test (src/ringcast/server/cluster.py): while Redis is up a
publish goes only to Redis and every node, the origin included, delivers what
comes back, so all subscribers see one order per channel and nobody gets a
message twice; while Redis is down a node delivers its publishes locally only
(its own workers included), reconnects with backoff and resubscribes.

Before publishing, a test waits until Redis itself reports the nodes'
subscriptions (``PUBSUB NUMSUB``), not just until a node says "connected".
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import time

import pytest

from .checks import (
    check_exactly_once,
    check_same_order,
    linked,
    publish_all,
    run,
    streams,
    subscribed,
)
from .conftest import MakeRedis, StartNode
from .procs import RedisServer
from .wsclient import (
    Conn,
    close_all,
    closing_request,
    metric,
    open_conn,
    open_many,
    open_on_workers,
    wait_counts,
    wait_until,
)


async def cluster_state(conn: Conn, worker: str = "0") -> tuple[float, str]:
    """(ringcast_cluster_connected, the cluster lines of /healthz) of conn's worker."""
    m = await conn.metrics()
    health = await conn.healthz()
    lines = " ".join(line for line in health.splitlines() if line.startswith("cluster"))
    return metric(m, "ringcast_cluster_connected", worker=worker), lines


async def wait_cluster(conns: list[Conn], connected: bool, timeout: float = 15.0) -> None:
    """Each conn's worker reports the bridge up (or down) in /metrics and /healthz."""
    want = (1.0, "cluster redis: connected") if connected else \
        (0.0, "cluster redis: disconnected")
    for conn in conns:
        last: list[tuple[float, str]] = []

        async def ok(c: Conn = conn, seen: list[tuple[float, str]] = last) -> bool:
            state = await cluster_state(c, str(c.worker))
            seen[:] = [state]
            return state[0] == want[0] and state[1].startswith(want[1])

        await wait_until(ok, timeout, lambda seen=last: f"cluster state {want}, is {seen}")


@pytest.mark.timeout(90)
def test_two_nodes_one_order_exactly_once(start_node: StartNode, redis: RedisServer) -> None:
    a = start_node(CLUSTER_REDIS_URL=redis.url)
    b = start_node(CLUSTER_REDIS_URL=redis.url)
    n_ws, n_http = 60, 25

    async def main() -> None:
        await linked(a, cluster=True)
        await linked(b, cluster=True)
        subs = await open_many(a.port, 100, "r") + await open_many(b.port, 100, "r")
        other = await open_many(a.port, 20, "other") + await open_many(b.port, 20, "other")
        ws = {"a1": await open_conn(a.port), "a2": await open_conn(a.port),
              "b1": await open_conn(b.port), "b2": await open_conn(b.port)}
        for c in ws.values():
            await c.upgrade("r")
        http = {"ha": await open_conn(a.port), "hb": await open_conn(b.port)}
        ho = await open_conn(b.port)
        await subscribed(redis, "r", 2)
        await subscribed(redis, "other", 2)

        await asyncio.gather(publish_all(ws, http, "r", n_ws, n_http),
                             _publish_http(ho, "other", "o", 10))

        expected = {n: list(range(n_ws)) for n in ws} | {n: list(range(n_http)) for n in http}
        total = 4 * n_ws + 2 * n_http
        own = {id(c): n for n, c in ws.items()}
        await wait_counts(subs, total, 30, "every message at every subscriber of r")
        await wait_counts(ws.values(), total - n_ws, 30, "the others' messages at publishers")
        await wait_counts(other, 10, 30, "the messages of channel other")
        check_exactly_once(subs + list(ws.values()), expected, own, "two nodes")
        order = check_same_order(subs + list(ws.values()), own, "two nodes")
        assert len(order) == total
        check_exactly_once(other, {"o": list(range(10))}, what="channel other")

        # Each node took every message from Redis exactly once.
        for conn in http.values():
            m = await conn.metrics()
            assert metric(m, "ringcast_messages_from_cluster_total") == total + 10
            assert metric(m, "ringcast_cluster_local_only_publishes_total") == 0
        close_all([*subs, *other, *ws.values(), *http.values(), ho])

    run(main())


async def _publish_http(conn: Conn, channel: str, name: str, n: int, *, start: int = 0,
                        subscribers: int | None = None) -> None:
    for i in range(start, start + n):
        resp = await conn.publish_http(channel, f"{name}:{i}")
        assert resp.status == 200, resp
        if subscribers is not None:
            assert f'"subscribers":{subscribers}' in resp.text, resp.text


def _publish_ws(conn: Conn, name: str, start: int, n: int) -> None:
    for i in range(start, start + n):
        conn.send_text(f"{name}:{i}")


@pytest.mark.timeout(90)
def test_redis_restart_local_only_during_outage(start_node: StartNode,
                                                redis: RedisServer) -> None:
    a = start_node(CLUSTER_REDIS_URL=redis.url)
    b = start_node(CLUSTER_REDIS_URL=redis.url)
    ch = "o"

    async def main() -> None:
        await linked(a, cluster=True)
        await linked(b, cluster=True)
        subs_a = await open_many(a.port, 30, ch)
        subs_b = await open_many(b.port, 30, ch)
        pa, pb = await open_conn(a.port), await open_conn(b.port)
        await pa.upgrade(ch)
        await pb.upgrade(ch)
        ha, hb = await open_conn(a.port), await open_conn(b.port)
        every = [*subs_a, *subs_b, pa, pb]
        own = {id(pa): "pa", id(pb): "pb"}
        await subscribed(redis, ch, 2)

        async def phase(first: int) -> None:
            _publish_ws(pa, "pa", first * 2, 10)
            _publish_ws(pb, "pb", first * 2, 10)
            # POST /publish answers with the subscribers of the node that took it.
            await _publish_http(ha, ch, "ha", 5, start=first, subscribers=31)
            await _publish_http(hb, ch, "hb", 5, start=first, subscribers=31)

        # 1. Redis up: everything everywhere.
        await phase(0)
        await wait_counts(subs_a + subs_b, 30, 20, "phase 1 at every subscriber")

        # 2. Redis down: each node says so, and delivers its own publishes locally only.
        redis.stop()
        await wait_cluster([ha, hb], connected=False)
        await phase(5)
        await wait_counts(subs_a + subs_b, 45, 20, "the outage messages of the local node")
        for conn in (ha, hb):
            m = await conn.metrics()
            assert metric(m, "ringcast_cluster_local_only_publishes_total") == 15

        # 3. Redis back: both reconnect, resubscribe, and everything goes everywhere again.
        redis.start()
        await wait_cluster([ha, hb], connected=True)
        await subscribed(redis, ch, 2)
        await phase(10)
        await wait_counts(subs_a + subs_b, 75, 20, "phase 3 at every subscriber")
        await wait_counts([pa, pb], 45, 20, "the others' messages at the publishers")

        up = list(range(0, 10)) + list(range(20, 30))
        up_http = list(range(0, 5)) + list(range(10, 15))
        outage, outage_http = list(range(10, 20)), list(range(5, 10))
        # Local publishes all arrived (in order); the other node's outage ones never did.
        check_exactly_once([*subs_a, pa], {"pa": list(range(30)), "ha": list(range(15)),
                                           "pb": up, "hb": up_http}, own, "node a")
        check_exactly_once([*subs_b, pb], {"pb": list(range(30)), "hb": list(range(15)),
                                           "pa": up, "ha": up_http}, own, "node b")
        # While Redis was up, everybody saw one order.
        during = {f"{p}:{i}" for p in ("pa", "pb") for i in outage}
        during |= {f"{p}:{i}" for p in ("ha", "hb") for i in outage_http}
        order = check_same_order(every, own, "Redis up", keep=lambda t: t not in during)
        assert len(order) == 60
        close_all([*every, ha, hb])

    run(main())


@pytest.mark.timeout(90)
def test_redis_restart_under_continuous_publishing(start_node: StartNode,
                                                   redis: RedisServer) -> None:
    """Publishing never stops while Redis goes away and comes back.

    Allowed: losing what was on its way to Redis when it went away. Checked: no
    duplicate and no reordering anywhere; what was published while both nodes said
    "disconnected" (and Redis was not running) reached the local node only; what was
    published once both were back and subscribed reached everyone.
    """
    a = start_node(CLUSTER_REDIS_URL=redis.url)
    b = start_node(CLUSTER_REDIS_URL=redis.url)
    ch = "c"

    async def main() -> None:
        await linked(a, cluster=True)
        await linked(b, cluster=True)
        subs_a, subs_b = await open_many(a.port, 20, ch), await open_many(b.port, 20, ch)
        pa, pb = await open_conn(a.port), await open_conn(b.port)
        await pa.upgrade(ch)
        await pb.upgrade(ch)
        ha, hb = await open_conn(a.port), await open_conn(b.port)
        await subscribed(redis, ch, 2)
        seq = 0
        stop = asyncio.Event()

        async def publisher() -> None:
            nonlocal seq
            while not stop.is_set():
                pa.send_text(f"pa:{seq}")
                pb.send_text(f"pb:{seq}")
                seq += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(publisher())
        await wait_counts(subs_a + subs_b, 40, 20, "messages before the outage")
        redis.stop()
        await wait_cluster([ha, hb], connected=False)
        down_from = seq
        await wait_until(lambda: seq >= down_from + 20, 10, "outage publishes")
        down_to = seq
        redis.start()
        await wait_cluster([ha, hb], connected=True)
        await subscribed(redis, ch, 2)
        up_from = seq
        await wait_until(lambda: seq >= up_from + 20, 10, "publishes after recovery")
        stop.set()
        await task
        last = seq

        def complete(conn: Conn) -> bool:
            got = streams(conn)
            return all(got.get(p, [-1])[-1] == last - 1 for p in ("pa", "pb"))

        everyone = [*subs_a, *subs_b]
        await wait_until(lambda: all(complete(c) for c in everyone), 20,
                         "the last message of both publishers everywhere")
        for conn, local, remote in [(c, "pa", "pb") for c in subs_a] + \
                                   [(c, "pb", "pa") for c in subs_b]:
            got = streams(conn)
            for p, seqs in got.items():
                assert seqs == sorted(set(seqs)), f"{p}: duplicates or reordering {seqs}"
            outage = range(down_from, down_to)
            assert [s for s in got[local] if s in outage] == list(outage), "local outage"
            assert not [s for s in got[remote] if s in outage], "remote outage leaked"
            for p in ("pa", "pb"):
                assert [s for s in got[p] if s >= up_from] == list(range(up_from, last))
        # Every message a node's subscriber got came one way only: from Redis, published
        # while Redis was down, or un-echoed when it went down; the counters add up.
        for h, sub in ((ha, subs_a[0]), (hb, subs_b[0])):
            m = await h.metrics()
            got = sum(len(v) for v in streams(sub).values())
            paths = {name: metric(m, f"ringcast_{name}_total") for name in (
                "messages_from_cluster", "cluster_local_only_publishes",
                "cluster_redelivered")}
            assert sum(paths.values()) == got, (got, paths)
        close_all([*everyone, pa, pb, ha, hb])

    run(main())


@pytest.mark.timeout(90)
def test_workers_and_redis_exactly_once(start_node: StartNode, redis: RedisServer) -> None:
    """2 workers and Redis: a message goes through Redis *or* the hand-off, never both."""
    node = start_node(workers=2, CLUSTER_REDIS_URL=redis.url)
    ch = "w"
    n_ws, n_http = 50, 20

    async def main() -> None:
        await linked(node, cluster=True)
        subs = await open_on_workers(node.port, {0: 100, 1: 100}, ch)
        pubs = await open_on_workers(node.port, {0: 2, 1: 2}, ch)
        https = await open_on_workers(node.port, {0: 1, 1: 1})
        ws = {f"ws{w}.{i}": c for w, cs in pubs.items() for i, c in enumerate(cs)}
        http = {f"http{w}": cs[0] for w, cs in https.items()}
        own = {id(c): n for n, c in ws.items()}
        listeners = subs[0] + subs[1]
        every = listeners + list(ws.values())
        await subscribed(redis, ch, 2)      # one subscription per worker

        async def counters() -> dict[str, tuple[float, float, float]]:
            out = {}
            for conn in http.values():
                w = str(conn.worker)
                m = await conn.metrics()
                out[w] = (metric(m, "ringcast_messages_from_workers_total", worker=w),
                          metric(m, "ringcast_messages_from_cluster_total", worker=w),
                          metric(m, "ringcast_messages_fanned_out_total", worker=w))
            return out

        # Redis up: all through Redis, nothing through the hand-off, one order.
        await publish_all(ws, http, ch, n_ws, n_http)
        total = 4 * n_ws + 2 * n_http
        expected = {n: list(range(n_ws)) for n in ws} | {n: list(range(n_http)) for n in http}
        await wait_counts(listeners, total, 30, "every message at every subscriber")
        await wait_counts(ws.values(), total - n_ws, 30, "the others' messages at publishers")
        check_exactly_once(every, expected, own, "workers + Redis")
        check_same_order(every, own, "workers + Redis")
        assert await counters() == {"0": (0, total, total), "1": (0, total, total)}

        # Redis down: the host still delivers everywhere exactly once, by the hand-off.
        redis.stop()
        await wait_cluster(list(http.values()), connected=False)
        ws["ws0.0"].send_text("ws0.0:1000")
        ws["ws1.0"].send_text("ws1.0:1000")
        await _publish_http(http["http1"], ch, "http1", 1, start=1000)
        await wait_counts(listeners, total + 3, 30, "the outage messages")
        down = await counters()
        assert down == {"0": (2, total, total + 3), "1": (1, total, total + 3)}, down

        # Redis back: through Redis again, still once.
        redis.start()
        await wait_cluster(list(http.values()), connected=True)
        await subscribed(redis, ch, 2)
        ws["ws0.1"].send_text("ws0.1:2000")
        await _publish_http(http["http0"], ch, "http0", 1, start=2000)
        await wait_counts(listeners, total + 5, 30, "the messages after recovery")
        expected["ws0.0"].append(1000)
        expected["ws1.0"].append(1000)
        expected["http1"].append(1000)
        expected["ws0.1"].append(2000)
        expected["http0"].append(2000)
        # A publisher gets everything but its own, possibly after the listeners.
        for name, conn in ws.items():
            await wait_counts([conn], total + 5 - len(expected[name]), 30,
                              f"the messages after recovery at publisher {name}")
        check_exactly_once(every, expected, own, "workers + Redis, after the outage")
        after = await counters()
        assert after == {"0": (2, total + 2, total + 5), "1": (1, total + 2, total + 5)}, after
        close_all(every + list(http.values()))

    run(main())


@pytest.mark.timeout(60)
def test_subscriber_gets_what_is_published_right_after_it_joined(
        start_node: StartNode, redis: RedisServer) -> None:
    node = start_node(workers=2, CLUSTER_REDIS_URL=redis.url)

    async def main() -> None:
        await linked(node, cluster=True)
        h0 = (await open_on_workers(node.port, {0: 1}))[0][0]
        for attempt in range(1000):
            ch = f"fresh{attempt}"
            sub = (await open_on_workers(node.port, {1: 1}, ch))[1][0]
            await _publish_http(h0, ch, "m", 1)            # after sub had its 101
            await subscribed(redis, ch, 1)
            await _publish_http(h0, ch, "m", 1, start=1)
            await wait_until(lambda s=sub: "m:1" in s.texts(), 10, "the second message")
            assert sub.texts() == ["m:0", "m:1"], (
                f"attempt {attempt}: a subscriber on worker 1 missed a message published "
                f"on worker 0 after its 101: got {sub.texts()}")
            sub.close()
        h0.close()

    run(main())


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_unreachable_redis_does_not_stall_local_delivery(start_node: StartNode) -> None:
    # A "Redis" whose accept queue is full: the kernel drops further SYNs, as a
    # firewall or a dead host would, so a connect() to it hangs until its timeout.
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(0)
        port = hole.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            node = start_node(CLUSTER_REDIS_URL=f"redis://127.0.0.1:{port}")

            async def main() -> list[float]:
                sub = await open_conn(node.port)
                await sub.upgrade("l")
                pub = await open_conn(node.port)
                await pub.upgrade("l")
                latencies = []
                deadline = time.monotonic() + 6.0   # > the first reconnect attempts
                i = 0
                while time.monotonic() < deadline and max(latencies, default=0) < 0.2:
                    t = time.monotonic()
                    pub.send_text(f"p:{i}")
                    await wait_until(lambda n=i: len(sub.messages) > n, 5, f"message {i}",
                                     interval=0.001)
                    latencies.append(time.monotonic() - t)
                    i += 1
                    await asyncio.sleep(0.01)
                close_all([sub, pub])
                return latencies

            latencies = run(main())
    assert max(latencies) < 0.1, (
        f"local delivery stalled {max(latencies):.3f}s while Redis was unreachable")


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_redis_refusing_the_bridge_counts_as_down(start_node: StartNode,
                                                  make_redis: MakeRedis) -> None:
    redis = make_redis("--requirepass", "s3cret", auth=("s3cret",))
    node = start_node(CLUSTER_REDIS_URL=f"redis://:wrong@127.0.0.1:{redis.port}")

    async def main() -> None:
        sub, pub, h = [await open_conn(node.port) for _ in range(3)]
        await sub.upgrade("a")
        await pub.upgrade("a")
        pub.send_text("m:0")
        await wait_until(lambda: sub.texts() == ["m:0"], 5,
                         "local delivery while Redis refuses the bridge")
        connected, lines = await cluster_state(h)
        assert connected == 0 and "cluster redis: disconnected" in lines, (connected, lines)

    run(main())


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_redis_acl_user_from_the_url(start_node: StartNode, make_redis: MakeRedis) -> None:
    redis = make_redis("--user", "ringcast", "on", ">s3cret", "~*", "&*", "+@all",
                       "--user", "default", "off", auth=("ringcast", "s3cret"))
    url = f"redis://ringcast:s3cret@127.0.0.1:{redis.port}"
    a = start_node(CLUSTER_REDIS_URL=url)
    b = start_node(CLUSTER_REDIS_URL=url)

    async def main() -> None:
        sub = await open_conn(b.port)
        await sub.upgrade("acl")
        await subscribed(redis, "acl", 1, timeout=5)
        resp = await (await open_conn(a.port)).publish_http("acl", "m:0")
        assert resp.status == 200
        await wait_until(lambda: sub.texts() == ["m:0"], 10, "the message from the other node")

    run(main())
    # What an operator reads: the cluster in the start-up line, the first connection at info,
    # the password nowhere.
    shown = f"redis://ringcast:***@127.0.0.1:{redis.port}"
    for node in (a, b):
        log = node.stderr_text()
        assert re.search(rf"listening on .*; cluster: {re.escape(shown)}$", log, re.M), log
        assert f"INFO cluster: connected to {shown} (" in log, log
        assert "s3cret" not in log, log


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_hung_redis_counts_as_down(start_node: StartNode, redis: RedisServer) -> None:
    node = start_node(CLUSTER_REDIS_URL=redis.url)

    async def main() -> None:
        await linked(node, cluster=True)
        sub, pub = await open_conn(node.port), await open_conn(node.port)
        await sub.upgrade("hang")
        await pub.upgrade("hang")
        await subscribed(redis, "hang", 1)
        pub.send_text("m:0")
        await wait_until(lambda: sub.texts() == ["m:0"], 10, "delivery while Redis is up")
        assert redis.proc is not None
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            pub.send_text("m:1")
            await wait_until(lambda: sub.texts() == ["m:0", "m:1"], 8,
                             "local delivery while Redis does not answer")
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        # m:1 went to Redis, was never echoed, and was delivered locally once Redis
        # counted as down: a redelivery, not a message from the cluster.
        http = await open_conn(node.port)
        m = await http.metrics()
        assert metric(m, "ringcast_cluster_redelivered_total") == 1
        assert metric(m, "ringcast_messages_from_cluster_total") == 1
        assert metric(m, "ringcast_cluster_local_only_publishes_total") == 0
        close_all([sub, pub, http])

    run(main())


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_redis_connection_made_after_an_outage_survives_close_timeout(
        start_node: StartNode, redis: RedisServer) -> None:
    a = start_node(CLUSTER_REDIS_URL=redis.url, LIMITS_CLOSE_TIMEOUT=3)
    b = start_node(CLUSTER_REDIS_URL=redis.url, LIMITS_CLOSE_TIMEOUT=3)

    async def main() -> None:
        await linked(a, cluster=True)
        await linked(b, cluster=True)
        sub = await open_conn(a.port)
        await sub.upgrade("t")
        ha, hb = await open_conn(a.port), await open_conn(b.port)
        await subscribed(redis, "t", 1)
        redis.stop()
        await wait_cluster([ha, hb], connected=False)
        # Connections node a closes with a flush leave their ids (and deadlines) behind.
        await asyncio.gather(*(closing_request(a.port) for _ in range(8)))
        redis.start()
        await wait_cluster([ha, hb], connected=True)
        await subscribed(redis, "t", 1)
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < 5.0:     # past the flush deadlines
            await _publish_http(hb, "t", "b", 1, start=i)
            await wait_until(lambda n=i: len(sub.messages) > n, 2,
                             f"message {i} from node b, {time.monotonic() - start:.1f}s after "
                             f"Redis came back")
            i += 1
            await asyncio.sleep(0.05)
        assert sub.texts() == [f"b:{k}" for k in range(i)]
        close_all([sub, ha, hb])

    run(main())
