"""Links between the workers of one host: a message published on one worker reaches the
others over them.

Workers reach each other over Unix stream sockets in the abstract namespace, named after
the supervisor's pid (the token) and the worker index. Worker *i* sends to worker *j* over
the connection *i* opened, and receives on the connections it accepted; so a restarted
worker simply connects again and is connected to. The sockets live on the worker's loop
like any client socket; what travels on them is records (:mod:`.links`): a published frame,
or workers' headline numbers.

The headline numbers (what lets any worker answer ``/metrics`` and ``/status`` for the
whole host) go through one worker, the collector (worker 0): every other worker sends it
its own once a second, and it sends every other worker all of them once a second. That is
2(N-1) records a second for N workers; each worker sending its own to every other was
N(N-1), and with the 58 workers a million connections need on this 2-core machine
(20,000 open files a process), that alone kept a third of a core busy while nothing
happened (docs/scaling.md). The price: a worker's numbers reach the others up to two
seconds old, and while the collector restarts they stand still.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from typing import Any

from ringcast.ringio import ConnId
from ringcast.server.links import (
    KIND_HOST_STATS,
    KIND_PUBLISH,
    KIND_STATS,
    ORDERING_KINDS,
    RecordReader,
    encode_record,
)
from ringcast.server.table import ConnectionTable, Owner

__all__ = ["LINK_CAP", "PeerLinks", "link_address"]

log = logging.getLogger("ringcast")

LINK_CAP = 64 << 20          # bytes a stuck peer worker may hold before we drop
LINK_RETRY = 0.2
STATS_INTERVAL = 1.0         # how often a worker shares its headline numbers
COLLECTOR = 0                # the worker they go through (see above)


def link_address(token: str, worker: int) -> bytes:
    return f"\0{token}-{worker}".encode()


class PeerLinks(Owner):
    """This worker's links to the other workers of the host, and their records.

    It owns (see :mod:`.table`) its listener and every link. A KIND_PUBLISH record goes to
    ``on_publish(channel, frame)``; the records of a history channel's order (see
    :mod:`.ordering`) to ``on_ordering(kind, channel, body)``. Every STATS_INTERVAL this
    worker's own ``snapshot()`` goes to the collector, and the collector sends every
    other worker all the snapshots it holds; what arrives is kept in :attr:`stats`.
    """

    def __init__(self, table: ConnectionTable, token: str, worker: int, count: int, *,
                 on_publish: Callable[[str, bytes], None],
                 snapshot: Callable[[], dict[str, Any]],
                 on_ordering: Callable[[int, str, bytes], None] = lambda *_: None) -> None:
        self.loop = table.loop
        self._table = table
        self.token = token
        self.worker = worker
        self.count = count
        self._on_publish = on_publish
        self._on_ordering = on_ordering
        self._snapshot = snapshot
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(link_address(token, worker))
        sock.listen(64)
        self.listener = table.listen(sock, self)
        self.out: dict[int, ConnId] = {}                   # peer worker -> conn
        self.inbound: dict[ConnId, RecordReader] = {}      # conn -> reader
        self.stats: dict[str, dict[str, Any]] = {}    # peer worker -> its last snapshot
        self._retry: dict[int, float] = {p: 0.0 for p in range(count) if p != worker}
        self._next_stats = 0.0
        self.dropped = 0
        self.sent = 0

    @property
    def linked(self) -> bool:
        """Linked both ways to every other worker."""
        others = self.count - 1
        return len(self.out) == others and len(self.inbound) >= others

    def maintain(self, now: float) -> None:
        """Connect the links that are down (a restarted worker is reconnected to) and
        send this worker's statistics when they are due."""
        for peer, when in list(self._retry.items()):
            if when > now:
                continue
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(LINK_RETRY)
            try:
                sock.connect(link_address(self.token, peer))
            except OSError:
                sock.close()
                self._retry[peer] = now + LINK_RETRY
                continue
            self.out[peer] = self._table.adopt(sock, self)
            del self._retry[peer]
            log.debug("linked to worker %d", peer)
        if now >= self._next_stats:
            self._next_stats = now + STATS_INTERVAL
            self._share_stats()

    def next_attempt(self) -> float | None:
        return min([*self._retry.values(), self._next_stats])

    def accepted(self, conn: ConnId, fd: int, listener: ConnId, now: float) -> Owner:
        self.inbound[conn] = RecordReader()
        return self

    def data_received(self, conn: ConnId, data: bytes, now: float) -> None:
        reader = self.inbound.get(conn)
        if reader is None:
            return  # an outbound link: peers never send on it
        for rec in reader.feed(data):
            if rec.kind == KIND_PUBLISH:
                self._on_publish(rec.channel, rec.body)
            elif rec.kind in ORDERING_KINDS:
                self._on_ordering(rec.kind, rec.channel, rec.body)
            elif rec.kind == KIND_STATS:  # (at the collector)
                self.stats[rec.channel] = json.loads(rec.body)
            else:  # KIND_HOST_STATS, from the collector: every worker's latest
                host = json.loads(rec.body)
                host.pop(str(self.worker), None)  # its own is live where it is used
                # Merged, not replaced: a collector that just restarted knows only its own.
                self.stats.update(host)

    def hung_up(self, conn: ConnId, err: int, now: float) -> None:
        """A link hung up: forget it (and reconnect if it was outbound)."""
        if self.inbound.pop(conn, None) is not None:
            self.loop.close_connection(conn)
            return
        for peer, c in list(self.out.items()):
            if c == conn:
                del self.out[peer]
                self.loop.close_connection(conn)
                self._retry[peer] = now + LINK_RETRY
                return

    def linked_to(self, peer: int) -> bool:
        """Is the link to worker ``peer`` up (this worker itself counts as linked)?"""
        return peer == self.worker or peer in self.out

    def send_to(self, peer: int, record: bytes) -> bool:
        """Send ``record`` to worker ``peer``; False when its link is down or full."""
        conn = self.out.get(peer)
        if conn is not None and self.loop.send(conn, record, cap=LINK_CAP):
            self.sent += 1
            return True
        self.dropped += 1
        return False

    def _share_stats(self) -> None:
        """This worker's snapshot to the collector; at the collector, every snapshot it
        holds (its own now, the others' latest) to every other worker."""
        mine = self._snapshot()
        if self.worker != COLLECTOR:
            if COLLECTOR in self.out:  # (while it restarts, nothing: no drop to count)
                self.send_to(COLLECTOR, encode_record(KIND_STATS, str(self.worker),
                                                      json.dumps(mine).encode()))
            return
        host = {**self.stats, str(self.worker): mine}
        self.broadcast(encode_record(KIND_HOST_STATS, str(self.worker),
                                     json.dumps(host).encode()))

    def broadcast(self, record: bytes) -> None:
        for conn in self.out.values():
            if self.loop.send(conn, record, cap=LINK_CAP):
                self.sent += 1
            else:
                self.dropped += 1
