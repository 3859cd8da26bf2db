"""What the cluster tests check, and how they wait for it."""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from .procs import Node, RedisServer
from .wsclient import Conn, close_leftovers, open_conn, wait_until

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
    """Run a coroutine on a fresh event loop, bounded in time."""

    async def bounded() -> T:
        try:
            async with asyncio.timeout(timeout):
                return await coro
        finally:
            await close_leftovers()

    return asyncio.run(bounded())


async def linked(node: Node, cluster: bool = False, timeout: float = 15.0) -> None:
    """Wait until every worker reports its peers linked (and, with ``cluster``, Redis up).

    Each worker answers /healthz for the connections the kernel gives it; new
    connections are opened until every worker has answered with the wanted state.
    """
    ready: dict[int, str] = {}

    def good(text: str) -> bool:
        ok = True
        if node.workers > 1:
            ok = f"workers linked: {node.workers}/{node.workers}" in text
        if cluster:
            ok = ok and "cluster redis: connected" in text
        return ok

    async def probe() -> bool:
        conn = await open_conn(node.port)
        try:
            text = await conn.healthz()
        finally:
            conn.close()
        if good(text):
            ready[conn.worker] = text
        else:
            ready.pop(conn.worker, None)
        return len(ready) == node.workers

    await wait_until(probe, timeout, lambda: f"workers of :{node.port} ready, have {ready}")


async def subscribed(redis: RedisServer, channel: str, count: int, timeout: float = 10.0) -> None:
    """Redis has ``count`` subscriber connections (node workers) on ``channel``."""
    await wait_until(lambda: redis.numsub(channel) == count, timeout,
                     lambda: f"PUBSUB NUMSUB ringcast:{channel} == {count} "
                             f"(is {redis.numsub(channel)})")


def log_lines(node: Node, pattern: str) -> list[re.Match[str]]:
    return list(re.finditer(pattern, node.stderr_text(), re.M))


def streams(conn: Conn) -> dict[str, list[int]]:
    """The messages a connection got, ``"<publisher>:<seq>"``, per publisher in arrival order."""
    out: dict[str, list[int]] = defaultdict(list)
    for text in conn.texts():
        name, _, seq = text.rpartition(":")
        out[name].append(int(seq))
    return dict(out)


def check_exactly_once(conns: Iterable[Conn], expected: dict[str, list[int]],
                       own: dict[int, str] | None = None, what: str = "") -> None:
    """Every connection got exactly ``expected[publisher]``, in that order, and nothing else.

    ``own[id(conn)]`` names the publisher that connection is (it gets nothing of its own).
    """
    own = own or {}
    for conn in conns:
        got = streams(conn)
        mine = own.get(id(conn))
        want = {p: s for p, s in expected.items() if p != mine}
        if got != want:
            diff = {p: (len(got.get(p, [])), len(want.get(p, [])))
                    for p in set(got) | set(want) if got.get(p) != want.get(p)}
            dups = {p: len(s) - len(set(s)) for p, s in got.items() if len(s) != len(set(s))}
            raise AssertionError(
                f"{what}: connection on worker {conn.worker} (publisher {mine}): "
                f"streams differ (got, wanted counts) {diff}; duplicates {dups}; "
                f"closed={conn.closed}")


def check_same_order(conns: Iterable[Conn], own: dict[int, str] | None = None,
                     what: str = "", keep: Callable[[str], bool] | None = None) -> list[str]:
    """Every connection saw the same sequence (its own messages left out): one total order.

    Only the messages ``keep`` accepts are compared. Returns that order; the
    reference is a connection that publishes nothing.
    """
    conns = list(conns)
    own = own or {}

    def texts(c: Conn) -> list[str]:
        return [t for t in c.texts() if keep is None or keep(t)]

    reference = next(texts(c) for c in conns if id(c) not in own)
    for conn in conns:
        mine = own.get(id(conn))
        want = [t for t in reference if t.rpartition(":")[0] != mine]
        got = texts(conn)
        assert got == want, (f"{what}: connection on worker {conn.worker} (publisher {mine}) "
                             f"saw another order: first difference at {_first_diff(got, want)}")
    return reference


def _first_diff(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"index {i}: {x!r} vs {y!r}"
    return f"lengths {len(a)} vs {len(b)}"


async def publish_all(ws: dict[str, Conn], http: dict[str, Conn], channel: str,
                      n_ws: int, n_http: int) -> None:
    """Every publisher at once: WebSocket ones in bursts, HTTP ones request by request."""

    async def ws_pub(name: str, conn: Conn) -> None:
        for i in range(n_ws):
            conn.send_text(f"{name}:{i}")
            if i % 8 == 7:
                await asyncio.sleep(0)   # let the others interleave

    async def http_pub(name: str, conn: Conn) -> None:
        for i in range(n_http):
            resp = await conn.publish_http(channel, f"{name}:{i}")
            assert resp.status == 200, resp

    await asyncio.gather(*(ws_pub(n, c) for n, c in ws.items()),
                         *(http_pub(n, c) for n, c in http.items()))
