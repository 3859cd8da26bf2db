"""The live status page: what an operator sees at ``GET /status`` (see docs/status.md).

Every worker, once a second while ``status.enabled``, takes its own figures — the
headline counters it already shares with the other workers, the percentiles of what its
latency histograms saw in that second, its channels with the most subscribers — and the
other workers' latest (they come with the snapshots the workers exchange every second).
From them it makes one JSON object for the whole host, keeps a minute of them for a page
that just opened (``/status.json``), and publishes it to the connections of
``/status/live`` on this worker, as a text message on a channel no client can name. The
page is one static HTML file with its script inline: nothing to build, nothing fetched
from elsewhere.
"""

from __future__ import annotations

import heapq
import json
import time
from collections import deque
from collections.abc import Callable
from importlib import resources
from typing import Any, Final

from ringcast import __version__
from ringcast.server.cluster import Bridge
from ringcast.server.hub import Hub
from ringcast.server.latency import quantile
from ringcast.server.metrics import HOST_FIGURES, STATUS_KEY, Counters
from ringcast.server.peers import PeerLinks
from ringcast.server.protocol.frames import data_frame
from ringcast.server.protocol.http_phase import STATUS_CHANNEL
from ringcast.server.settings import Current

__all__ = ["StatusBoard"]

HISTORY: Final = 60
"""Seconds of history ``/status.json`` carries."""

_RATES: Final = (("messages_per_second", "messages_published"),
                 ("deliveries_per_second", "deliveries"),
                 ("bytes_out_per_second", "bytes_out"),
                 ("connections_per_second", "connections_accepted"))


class StatusBoard:
    """The status figures of the host, as this worker sees them."""

    def __init__(self, current: Current, counters: Counters, hub: Hub, *, worker: int,
                 backend_name: str, snapshot: Callable[[], dict[str, Any]],
                 peers: PeerLinks | None, bridge: Bridge | None,
                 state: Callable[[], str]) -> None:
        self._current = current
        self._counts = counters
        self._hub = hub
        self._worker = worker
        self._backend_name = backend_name
        self._snapshot = snapshot
        self._peers = peers
        self._bridge = bridge
        self._state = state
        self._local: dict[str, Any] = {}  # this worker's last second, for its snapshot
        self._last: tuple[float, dict[str, dict[str, Any]]] | None = None
        self._figures: dict[str, Any] | None = None
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._page: bytes | None = None

    # -- once a second ------------------------------------------------------------------

    def tick(self) -> None:
        """Take this second's figures; publish them to this worker's live viewers."""
        if not self._current.config.status.enabled:
            self._last, self._figures = None, None
            self._history.clear()
            return
        c = self._counts
        top = self._current.config.status.top_channels
        channels = [ch for name, ch in self._hub.channels.items() if name != STATUS_CHANNEL]
        busiest = heapq.nlargest(top, channels, key=len)
        self._local = {
            "publish_flush": c.publish_flush.take_recent(),
            "handshake": c.handshake.take_recent(),
            "channels": [[ch.name, len(ch)] for ch in busiest],
            # The status page's own viewers are not counted as subscribers of a channel.
            "channel_count": sum(1 for ch in channels if len(ch)),
            "subscribers": sum(len(ch) for ch in channels),
        }
        now = time.time()
        snaps = {str(self._worker): self._snapshot()}
        if self._peers is not None:
            snaps = {**self._peers.stats, **snaps}
        figures = self._figures = self._combine(now, snaps)
        self._history.append({
            "time": now,
            "connections": figures["totals"]["connections"],
            **{rate: figures["rates"][rate] for rate, _ in _RATES},
            "publish_flush_p99_ms": figures["latency_ms"]["publish_flush"]["p99"],
        })
        channel = self._hub.channels.get(STATUS_CHANNEL)
        if channel is not None and len(channel):
            self._hub.publish(STATUS_CHANNEL, data_frame(json.dumps(figures).encode(), True))

    def local(self) -> dict[str, Any]:
        """This worker's part of the status figures, for the snapshot it shares."""
        return self._local

    # -- what the page reads ------------------------------------------------------------

    def page(self) -> bytes:
        """The HTML page (read once from the package)."""
        if self._page is None:
            self._page = (resources.files("ringcast.server") / "status_page.html").read_bytes()
        return self._page

    def json(self) -> bytes:
        """The figures with a minute of history (``GET /status.json``)."""
        if self._figures is None:  # just enabled: the first second is not over yet
            self.tick()
        return json.dumps({**(self._figures or {}), "history": list(self._history)}).encode()

    # -- internals ----------------------------------------------------------------------

    def _combine(self, now: float, snaps: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """One host's figures from every worker's snapshot; rates against the last ones."""
        last_time, last = self._last if self._last is not None else (now, snaps)
        self._last = (now, snaps)
        elapsed = max(now - last_time, 1e-9)

        def rate(wid: str, key: str) -> float:  # 0 on the first tick: last is snaps
            before = last.get(wid, snaps[wid]).get(key, 0)
            return max(0.0, float(snaps[wid].get(key, 0) - before) / elapsed)

        totals: dict[str, int] = {key: 0 for key in HOST_FIGURES}
        # A channel may have subscribers on several workers: the busiest worker's count is
        # the one that never counts a channel twice.
        totals["channels"] = totals["subscribers"] = 0
        per_worker = []
        channels: dict[str, int] = {}
        buckets: dict[str, list[int]] = {}
        for wid, snap in sorted(snaps.items(), key=lambda item: int(item[0])):
            for key in HOST_FIGURES:
                totals[key] += snap.get(key, 0)
            per_worker.append({
                "worker": wid, "connections": snap.get("connections", 0),
                **{name: rate(wid, key) for name, key in _RATES},
                "slow_consumer_closes": snap.get("slow_consumer_closes", 0),
            })
            extra = snap.get(STATUS_KEY) or {}
            totals["channels"] = max(totals["channels"], extra.get("channel_count", 0))
            totals["subscribers"] += extra.get("subscribers", 0)
            for name, n in extra.get("channels", []):
                channels[name] = channels.get(name, 0) + n
            for which in ("publish_flush", "handshake"):
                counts = extra.get(which)
                if counts:
                    mine = buckets.get(which, [0] * len(counts))
                    buckets[which] = [a + b for a, b in zip(mine, counts, strict=True)]
        top = self._current.config.status.top_channels
        peers = self._peers
        return {
            "version": __version__,
            "time": now,
            "worker": self._worker,
            "workers": 1 if peers is None else peers.count,
            "workers_linked": 1 if peers is None else len(peers.out) + 1,
            "backend": self._backend_name,
            "state": self._state(),
            "cluster": None if self._bridge is None else self._bridge.status(),
            "totals": totals,
            "rates": {name: sum(w[name] for w in per_worker) for name, _ in _RATES},
            "latency_ms": {which: _percentiles_ms(buckets.get(which))
                           for which in ("publish_flush", "handshake")},
            "per_worker": per_worker,
            "channels": [{"name": name, "subscribers": n} for name, n in
                         heapq.nlargest(top, channels.items(), key=lambda item: item[1])],
        }


def _percentiles_ms(counts: list[int] | None) -> dict[str, float | None]:
    """p50 and p99 in milliseconds of a histogram's counts (None: nothing observed)."""
    out: dict[str, float | None] = {}
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        value = None if counts is None else quantile(counts, q)
        out[name] = None if value is None else round(value * 1000, 3)
    return out
