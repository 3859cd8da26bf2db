"""Prometheus metrics, rendered by prometheus_client from live counters.

The hot path keeps plain integers (:class:`Counters`, and ringio's C stats); a scrape
reads them, and the live state of the runtime's parts, through a custom collector
(:class:`Metrics`), so nothing is paid per message for metrics.
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Final, Protocol

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from ringcast import __version__
from ringcast.ringio import Loop
from ringcast.server.cluster import Bridge
from ringcast.server.history import History
from ringcast.server.hub import Hub
from ringcast.server.latency import Latency
from ringcast.server.peers import PeerLinks
from ringcast.server.protocol.actions import Ended
from ringcast.server.protocol.deflate import Compressor
from ringcast.server.protocol.refusals import Refusal

STATUS_KEY: Final = "status"
"""Where a worker's part of the status page's figures travels in its snapshot."""

# ringio stat -> (metric name, help, is_counter)
_RING_STATS = {
    "deliveries": ("ringcast_deliveries_total",
                   "Messages queued to subscribers (one per subscriber per message)", True),
    "send_bytes": ("ringcast_bytes_out_total", "Bytes the kernel accepted for sending", True),
    "drops": ("ringcast_dropped_deliveries_total",
              "Deliveries skipped because a connection's queue was over its cap", True),
    "submits": ("ringcast_ring_submissions_total", "io_uring_enter calls that submitted", True),
    "sqes": ("ringcast_ring_sqes_total", "Submission queue entries submitted", True),
    "cqes": ("ringcast_ring_completions_total", "Completions (or epoll events) reaped", True),
    "sends": ("ringcast_send_operations_total", "Send operations issued", True),
    "coalesced": ("ringcast_coalesced_sends_total", "Sends that carried several frames", True),
    "short_sends": ("ringcast_short_sends_total", "Sends resumed after a short write", True),
    "enobufs": ("ringcast_recv_buffer_exhausted_total",
                "Multishot receives ended by an empty buffer ring", True),
    "zc_sends": ("ringcast_zero_copy_sends_total", "SEND_ZC operations", True),
    "zc_copied": ("ringcast_zero_copy_fallbacks_total",
                  "Zero-copy sends the kernel copied anyway", True),
    "recv_bytes": ("ringcast_bytes_in_total", "Bytes received", True),
    "queued_bytes": ("ringcast_queued_bytes", "Bytes queued to connections, not yet sent", False),
    "slots_live": ("ringcast_frame_slots", "Frame slots alive", False),
    "arena_used": ("ringcast_arena_used_bytes", "Registered arena bytes in use", False),
    "events_deferred": ("ringcast_events_deferred_total",
                        "Events that waited for memory to be reported (none is lost)", True),
    "submit_retries": ("ringcast_ring_submit_retries_total",
                       "io_uring_enter calls retried (EINTR, EAGAIN, EBUSY)", True),
    "submit_errors": ("ringcast_ring_submit_errors_total",
                      "io_uring_enter or epoll_wait failures that stopped the loop", True),
    "heartbeats": ("ringcast_keepalive_pings_total",
                   "Keepalive pings sent (by the loop) to WebSockets idle for ping_interval",
                   True),
    "heartbeat_replies": ("ringcast_keepalive_pongs_absorbed_total",
                          "Pongs answering a keepalive ping, taken in C: no session woke", True),
    "heartbeat_unjudged": ("ringcast_keepalive_checks_deferred_total",
                           "Keepalive passes that closed nobody for silence: the loop had "
                           "not read all that had arrived", True),
}


HOST_FIGURES = ("connections", "connections_accepted", "messages_published", "deliveries",
                 "bytes_out", "dropped_deliveries", "slow_consumer_closes")
"""The snapshot's figures exported as ``ringcast_host_*`` metrics (and summed on the
status page)."""
_HOST_GAUGES = frozenset({"connections"})
"""The host figures that go up and down; the others are counters (``_total``)."""


class Counters:
    """What the runtime counts as it goes: plain integers, read at scrape time."""

    def __init__(self) -> None:
        self.accepted = 0
        self.refusals_reset = 0
        self.accept_errors = 0
        self.published_ws = 0
        self.published_http = 0
        self.messages_out = 0
        self.slow_closes = 0
        self.slow_drops = 0
        self.slow_trimmed_bytes = 0
        self.received_peers = 0
        # Publishes and subscriptions of history channels whose orderer (owner worker, see
        # .ordering; or Redis, see .cluster) did not answer.
        self.owner_unavailable = 0
        self.closes: Counter[Ended] = Counter()
        self.refusals: Counter[str] = Counter({r: 0 for r in Refusal})
        self.handshake = Latency()
        self.publish_flush = Latency()

    def count_close(self, ended: Ended) -> None:
        """A connection counted in ``accepted`` has ended (exactly once each)."""
        self.closes[ended] += 1


class ClientsView(Protocol):
    """What the metrics read of the client connections."""

    @property
    def open(self) -> int: ...
    @property
    def closing(self) -> int: ...
    @property
    def draining(self) -> bool: ...


class Metrics(Collector):
    """The Prometheus collector of one worker: its counters and the state of its parts."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, counters: Counters, worker: int, backend_name: str, *, loop: Loop,
                 hub: Hub, clients: ClientsView, compressor: Compressor,
                 peers: PeerLinks | None, bridge: Bridge | None,
                 history: History | None = None) -> None:
        self.counters = counters
        self._history = history
        self._compressor = compressor
        self.worker = str(worker)
        self._backend_name = backend_name
        self._loop = loop
        self._hub = hub
        self._clients = clients
        self._peers = peers
        self._bridge = bridge
        #: This worker's part of the status page's figures (see .status), if it has one.
        self.status_part: Callable[[], dict[str, Any]] | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...:
        # of the worker that answered the scrape.
        ProcessCollector(registry=self.registry)

    def snapshot(self) -> dict[str, Any]:
        """The headline numbers this worker shares with the others every second (and its
        part of the status page's figures)."""
        c = self.counters
        stats = self._loop.stats()
        snap: dict[str, Any] = {
            "connections": self._clients.open,
            "connections_accepted": c.accepted,
            "messages_published": c.published_ws + c.published_http,
            "deliveries": stats["deliveries"],
            "bytes_out": stats["send_bytes"],
            "dropped_deliveries": stats["drops"],
            "slow_consumer_closes": c.slow_closes,
        }
        if self.status_part is not None:
            snap[STATUS_KEY] = self.status_part()
        return snap

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | InfoMetricFamily
                                  | HistogramMetricFamily]:
        c = self.counters
        w = ["worker"]
        lv = [self.worker]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=w)
            g.add_metric(lv, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=w)
            family.add_metric(lv, value)
            return family

        build = InfoMetricFamily("ringcast_build", "The ringcast and Python versions running",
                                 labels=w)
        build.add_metric(lv, {"version": __version__, "python": platform.python_version()})
        yield build
        info = InfoMetricFamily("ringcast_backend", "I/O backend in use", labels=w)
        info.add_metric(lv, {"backend": self._backend_name})
        yield info
        yield gauge("ringcast_connections", "Open client connections", self._clients.open)
        yield gauge("ringcast_connections_closing",
                    "Closed client connections still flushing or waiting for the peer's "
                    "close; they count against the connection limits until released",
                    self._clients.closing)
        yield counter("ringcast_connections_accepted",
                      "Connections accepted (accepted - closed = open)", c.accepted)
        yield counter("ringcast_accept_errors", "accept() failures (e.g. out of fds)",
                      c.accept_errors)
        closed = CounterMetricFamily("ringcast_connections_closed",
                                     "Accepted connections that ended, by why and by who ended "
                                     "them (side: client or server)",
                                     labels=["worker", "reason", "side"])
        for ended, n in sorted(c.closes.items()):
            closed.add_metric([self.worker, ended.value, ended.side], n)
        yield closed
        yield counter("ringcast_refusals_reset",
                      "Connections refused at a limit with a reset instead of a 503: "
                      "too many refusals were already on their way", c.refusals_reset)
        refused = CounterMetricFamily("ringcast_refusals",
                                      "Requests and connections refused, by reason",
                                      labels=["worker", "reason"])
        for reason, n in sorted(c.refusals.items()):
            refused.add_metric([self.worker, str(reason)], n)
        yield refused
        yield gauge("ringcast_channels", "Channels with local subscribers",
                    len(self._hub.channels))
        yield gauge("ringcast_subscribers", "Subscriptions", self._hub.subscriber_count())
        yield gauge("ringcast_subscribers_compressed",
                    "Subscriptions that get messages compressed (permessage-deflate)",
                    self._hub.subscriber_count(compressed=True))
        comp = self._compressor
        yield counter("ringcast_compressed_messages",
                      "Messages compressed: once per message and window size in use, never "
                      "per subscriber", comp.compressed)
        yield counter("ringcast_compression_in_bytes",
                      "Payload bytes of the messages compressed, before", comp.bytes_in)
        yield counter("ringcast_compression_out_bytes",
                      "Payload bytes of the messages compressed, after", comp.bytes_out)
        published = CounterMetricFamily("ringcast_messages_published",
                                        "Messages published, by source",
                                        labels=["worker", "source"])
        published.add_metric([self.worker, "websocket"], c.published_ws)
        published.add_metric([self.worker, "http"], c.published_http)
        yield published
        history = self._history
        if history is not None:  # zeros when no channel keeps history
            yield gauge("ringcast_history_messages", "Messages held in channels' history",
                        history.messages)
            yield gauge("ringcast_history_bytes",
                        "Bytes held in channels' history, as history.max_bytes counts them",
                        history.bytes)
            evicted = CounterMetricFamily(
                "ringcast_history_evicted",
                "Messages dropped from history, by why (size: past history.size in its "
                "channel; ttl: older than history.ttl; budget: past history.max_bytes)",
                labels=["worker", "reason"])
            for reason in ("size", "ttl", "budget"):
                evicted.add_metric([self.worker, reason], getattr(history.evicted, reason))
            yield evicted
            yield counter("ringcast_history_owner_unavailable",
                          "Publishes and subscriptions of history channels refused because "
                          "what orders the channel (its owner worker, or Redis) did not "
                          "answer",
                          c.owner_unavailable)
        yield counter("ringcast_messages_fanned_out",
                      "Messages sent to at least one subscriber", c.messages_out)
        yield counter("ringcast_slow_consumer_closes",
                      "Connections closed with 3008 for falling behind", c.slow_closes)
        yield counter("ringcast_slow_consumer_dropped_bytes",
                      "Queued bytes dropped, never sent, when a slow consumer was closed",
                      c.slow_trimmed_bytes)
        yield counter("ringcast_slow_consumer_overflows",
                      "Times a connection's queue reached its cap (drop policy)", c.slow_drops)
        for name, doc, latency in (
            ("ringcast_handshake_seconds",
             "From the loop iteration that accepted a connection to its 101 queued",
             c.handshake),
            ("ringcast_publish_flush_seconds",
             "From the loop iteration that received a message to its sends submitted to "
             "every local subscriber (per message)", c.publish_flush),
        ):
            histogram = HistogramMetricFamily(name, doc, labels=w)
            histogram.add_metric(lv, latency.buckets(), latency.sum)
            yield histogram
        stats = self._loop.stats()
        for key, (name, doc, is_counter) in _RING_STATS.items():
            yield (counter if is_counter else gauge)(
                name.removesuffix("_total") if is_counter else name, doc, stats[key])
        yield gauge("ringcast_draining", "1 while shutting down", int(self._clients.draining))
        yield counter("ringcast_messages_from_workers",
                      "Messages handed over by other workers of this host", c.received_peers)
        bridge, peers = self._bridge, self._peers
        yield counter("ringcast_messages_from_cluster",
                      "Messages received from the cluster broker",
                      0 if bridge is None else bridge.received)
        if peers is not None:
            # One definition with /healthz's "workers linked: N/M": itself included.
            yield gauge("ringcast_workers_linked",
                        "Workers of the host this one reaches, itself included (healthy: "
                        "ringcast_workers)", len(peers.out) + 1)
            yield gauge("ringcast_workers", "Workers of the host", peers.count)
            yield counter("ringcast_worker_handoff_drops",
                          "Hand-offs dropped: a peer worker fell 64 MiB behind", peers.dropped)
        if bridge is not None:
            yield gauge("ringcast_cluster_connected", "1 while the broker bridge is up",
                        int(bridge.connected))
            yield counter("ringcast_cluster_local_only_publishes",
                          "Publishes delivered on this host only: the broker was down",
                          bridge.local_only)
            yield counter("ringcast_cluster_redelivered",
                          "This host's messages the broker never echoed before it went down, "
                          "delivered locally then", bridge.redelivered)
        # Every worker's headline numbers: this one live, the others as of their last report
        # (at most a second old). One scrape of any worker gives the host: sum() over them.
        if peers is not None:
            snaps = {**peers.stats, self.worker: self.snapshot()}
            for key in HOST_FIGURES:
                fam: GaugeMetricFamily | CounterMetricFamily = (
                    GaugeMetricFamily(f"ringcast_host_{key}", f"{key}, per worker of the host",
                                      labels=["worker"])
                    if key in _HOST_GAUGES else
                    CounterMetricFamily(f"ringcast_host_{key}", f"{key}, per worker of the host",
                                        labels=["worker"]))
                for wid, snap in sorted(snaps.items()):
                    fam.add_metric([wid], snap.get(key, 0))
                yield fam
