"""docs/metrics.md says what /metrics serves: a node with two workers and Redis (every
family appears then) is scraped on each worker, and its ``# TYPE`` lines are checked
against the tables of docs/metrics.md, both ways."""

from __future__ import annotations

import re
from pathlib import Path

from .checks import linked, run
from .conftest import StartNode
from .procs import RedisServer
from .wsclient import open_conn

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(?P<name>[a-z_]+)` \| (?P<type>counter|gauge|histogram) \|", re.M)
TYPE = re.compile(r"^# TYPE (?P<family>\S+) (?P<type>\S+)$", re.M)


def documented() -> dict[str, str]:
    """Metric name as served (counters with ``_total``) -> its type, from the doc."""
    rows = {m["name"]: m["type"] for m in ROW.finditer(DOC.read_text())}
    assert len(rows) > 40, f"the table parser found {len(rows)} rows in {DOC}"
    return rows


def served(text: str) -> dict[str, str]:
    """The same, from a scrape (an info metric is a gauge named ``*_info``)."""
    out = {}
    for m in TYPE.finditer(text):
        family, kind = m["family"], m["type"]
        if kind == "counter" and not family.endswith("_total"):  # older prometheus_client
            family += "_total"
        out[family] = kind
    return out


def test_every_metric_served_is_documented_and_every_documented_one_is_served(
        start_node: StartNode, redis: RedisServer) -> None:
    node = start_node(workers=2, CLUSTER_REDIS_URL=redis.url)

    async def scrape_every_worker() -> dict[str, str]:
        await linked(node, cluster=True)
        seen: dict[str, str] = {}
        workers: set[str] = set()
        for _ in range(50):           # new connections until both workers have answered
            conn = await open_conn(node.port)
            resp = await conn.request("GET", "/metrics")
            conn.close()
            assert resp.status == 200, resp
            seen.update(served(resp.text))
            workers |= set(re.findall(r'^ringcast_connections\{worker="(\d+)"\}', resp.text,
                                      re.M))
            if workers == {"0", "1"}:
                return seen
        raise AssertionError(f"only workers {sorted(workers)} answered /metrics")

    got = run(scrape_every_worker())
    doc = documented()
    assert {k: v for k, v in got.items() if doc.get(k) != v} == {}, \
        "served but not in docs/metrics.md, or with another type there"
    assert sorted(set(doc) - set(got)) == [], "in docs/metrics.md but never served"
