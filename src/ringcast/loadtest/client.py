"""The load client: connects subscribers and publishers through ringio, publishes, counts.

Phases of `LoadTest.run`:

1. connect: subscribers first, then publishers. `Connector` makes each socket and
   connects it without blocking (at most ``connect_concurrency`` connections and
   handshakes in flight), then the socket goes to the ringio loop, which sends the
   HTTP upgrade and returns the 101. The accept key is checked; a bad one is a failed
   connection. With ``--compression`` every WebSocket offers permessage-deflate and
   its 101 must accept it (a decline fails the connection); the scanner is told what
   was agreed and inflates what comes compressed. Publishers send uncompressed (RFC
   7692 lets a sender leave any message so). Over several processes (`team`), every
   process connects its share and publishing starts when all have.
2. publish, in the ``--payload`` format (binary frames of a pseudo-random pattern, or
   text frames of a ticker-like JSON object; layouts in ``csrc/wsscan_api.h``): closed
   loop (``window`` messages in flight; a message leaves flight when every subscriber
   has it) or open loop (``rate`` messages/s, each stamped with its *scheduled* send
   time, so queueing in the server shows as latency). A storm (`storm`) drops
   subscribers mid-run and times their return.
   ``--rounds``: every publisher sends one message a round, the next round once every
   subscriber of every process has them; each round is timed. With
   ``--channel-per-process`` process k subscribes to ``<channel>-k`` and publisher k
   sends there (its scanner is deaf to the other channels' publishers). ``--hold``
   first keeps everyone connected and idle, so that the server's CPU over it is its
   keepalive's.
3. drain: wait for what is in flight, up to ``drain_timeout``; then whatever a
   subscriber has not received is undelivered.

The server processes measured are ``--server-pid`` and their children (a supervisor's
workers), sampled before any process of the run connects (before the fork), once all
are connected, after the hold and at the end: `report` makes CPU per handshake, per
delivery, keepalive CPU and RSS/PSS per connection of them.

Per delivery nothing happens in Python: every ``reap`` goes to the C scanner in one
call (`Scanner.feed_spans`), which reads the bytes where ringio received them. HTTP is
read by `handshake` (the upgrade's answer) and `http_publish` (the answers to HTTP
publishes), h11 where the answer is unusual.
"""

from __future__ import annotations

import array
import dataclasses
import errno
import heapq
import math
import os
import random
import resource
import socket
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import IO, Any

from typing_extensions import Buffer

from ringcast.fdlimit import FD_HEADROOM, raise_nofile
from ringcast.loadtest import procstat
from ringcast.loadtest.connector import (
    OUT_OF_FILES,
    Connector,
    PairPlan,
    Pending,
    pair_plan,
    source_addresses,
)
from ringcast.loadtest.handshake import Handshake, HandshakeFailed
from ringcast.loadtest.http_publish import HttpPublisher, PublishError
from ringcast.loadtest.options import LoadError, Options
from ringcast.loadtest.record import RunRecord, Tally
from ringcast.loadtest.report import FAULT_KEYS, build_result
from ringcast.loadtest.scanner import (
    HIST_DELIVERY,
    HIST_DELIVERY_INTERVAL,
    HIST_LAST,
    NOTE_CLOSE,
    NOTE_PING,
    NOTE_PROTOCOL,
    OPCODES,
    PAYLOADS,
    PROTOCOL_ERRORS,
    ROLE_NONE,
    ROLE_PUB,
    ROLE_SUB,
    Scanner,
    bucket_percentile,
    build_frames,
    frame_size,
    payload,
    to_hdr,
)
from ringcast.loadtest.storm import RETRY_SECONDS, Storm, StormPlan, merge_storms
from ringcast.loadtest.target import Target, ephemeral_ports, parse_target
from ringcast.loadtest.team import Follower, Lead, Share, fork_followers, shares
from ringcast.ringio import (
    ConnId,
    Engine,
    EventKind,
    Loop,
    LoopParams,
    RawEvent,
    RingioError,
    RingUnavailable,
)
from ringcast.ringio.loop import Event

# The client's public face: `Options` and `LoadError` live in `options` (the report reads
# options too), and are named here for whoever runs a load test.
__all__ = ["LoadError", "LoadTest", "Options", "explicit_pairs", "plan_pairs",
           "processes_needed", "run_load_test"]

DATA = int(EventKind.DATA)
HUP = int(EventKind.HUP)

KIND_SUB, KIND_PUB, KIND_HTTP = "subscriber", "publisher", "http-publisher"
CONTENT_TYPES = {"binary": "application/octet-stream", "json": "application/json"}
"""The HTTP publisher's Content-Type per ``--payload``: a server makes text frames of
JSON, binary ones of the rest."""
TEAM_REAP = 0.002
"""Longest reap in a run of several processes: a follower drains the lead's news, and
the lead its followers' reports, between reaps."""

IDLE_REAP = 0.02
"""While nothing is measured (waiting at the start barrier, ``--hold``) a process reaps at
most this often. A server's keepalive pings are then answered in batches, and 64
processes waiting at the barrier do not wake the machine thousands of times a second:
measured with 15,000 subscribers pinged every second, this cut the server's keepalive
CPU 3x and the client's system time 2x (docs/scaling.md)."""
# The scanner counts that are about messages, not deliveries: over several processes
# they are the lead's (which merged every follower's reports), never a sum.
LEAD_ONLY_COUNTS = frozenset(("completed", "completed_all", "expired"))


@dataclass
class _Conn:
    kind: str
    index: int
    started: float
    open: bool = False
    retry: bool = False                     # a storm's reconnect
    handshake: Handshake | None = None      # a WebSocket being opened
    http: HttpPublisher | None = None       # an HTTP publisher's connection


class Progress:
    """At most one line a second on a stream; overwritten in place on a terminal."""

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream
        self.tty = bool(stream is not None and stream.isatty())
        self._width = 0

    def show(self, text: str) -> None:
        if self.stream is None:
            return
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.stream is not None and self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


def _open_loop(engine: str, max_conns: int, size: int) -> tuple[Loop, str]:
    # Big messages: big receive buffers (fewer completions per message: measured
    # 1.6x the deliveries/s of 16 KiB buffers with 16 KiB messages).
    big = size > 2048
    buf_size, buf_count = (65536, 1024) if big else (4096, 4096)
    params = LoopParams(
        max_conns=max_conns, sq_entries=4096, cq_entries=32768, buf_count=buf_count,
        buf_size=buf_size, arena_size=0, zc_threshold=0, data_capacity=8 << 20,
    )
    if engine in ("auto", "io_uring"):
        try:
            return Loop(params), "io_uring"
        except RingUnavailable as exc:
            if engine == "io_uring":
                raise LoadError(str(exc)) from None
            note = f"epoll (io_uring unavailable: {exc.cause})"
            return Loop(LoopParams(**{**asdict(params), "engine": Engine.EPOLL})), note
    return Loop(LoopParams(**{**asdict(params), "engine": Engine.EPOLL})), "epoll"


class LoadTest:
    """One run against one target: `run()` once (or, in a follower process of a team,
    `follow()` once). ``share`` is this process's part of a run over several
    (`run_load_test` makes the team); ``None``: the whole run."""

    def __init__(self, opts: Options, *, progress_stream: IO[str] | None = sys.stderr,
                 clock: Callable[[], int] = time.monotonic_ns, share: Share | None = None,
                 team: Lead | Follower | None = None,
                 server: tuple[list[int], list[procstat.ProcSample]] | None = None) -> None:
        opts.validate()
        self.opts = opts
        self.target: Target = parse_target(opts.url, allow_remote=opts.allow_remote)
        self.share = share or Share(0, 1, 0, opts.connections, opts.connections)
        self.team = team
        self.progress = Progress(progress_stream if opts.progress else None)
        self.clock = clock
        self.idle = opts.messages == 0
        leads = self.share.process == 0             # publishers live in the lead
        nhttp = 0
        if opts.publisher == "http" and not self.idle:
            nhttp = max(1, min(opts.http_connections,
                               opts.window if opts.rate is None else opts.http_connections))
        self.n_http = nhttp if leads else 0
        # --channel-per-process: process k's subscribers are on <channel>-k, and the
        # lead has one publisher per channel (publisher k on <channel>-k).
        self.per_process = opts.channel_per_process
        ws_pubs = self.share.processes if self.per_process else opts.publishers
        self.n_ws_pub = 0 if (self.idle or opts.publisher == "http" or not leads) \
            else ws_pubs
        total = self.share.count + self.n_ws_pub + self.n_http
        # A storm reconnects while the dropped connections' closes may still be under
        # way (their ids are not free until then): room for both.
        self.max_conns = total + (self.share.count if opts.storm else 0) + 64
        raise_nofile(self.max_conns)    # what it cannot get shows as failed connections
        self.loop, self.engine_note = _open_loop(opts.engine, self.max_conns, opts.size)
        # Rounds have one message per publisher in flight: a small ring each (64
        # channels of 2^16 would be 170 MB a process).
        ring_bits = 8 if opts.rounds is not None else 16
        if opts.rate is not None:
            need = opts.rate * (opts.message_timeout + opts.drain_timeout + 1) * 2
            ring_bits = max(ring_bits, min(22, math.ceil(math.log2(max(need, 2)))))
        if opts.rounds is None:
            ring_bits = max(ring_bits, math.ceil(math.log2(opts.window * 4)))
        # An HTTP publisher id per HTTP connection: each carries one request at a
        # time, so its messages reach the server in order. Every process of a team
        # knows them all (the followers check what the lead's publishers send).
        self.npub = nhttp if nhttp else ws_pubs
        self.fmt = PAYLOADS[opts.payload]
        self.opcode = OPCODES[self.fmt]
        self.scanner = Scanner(self.max_conns, self.npub, opts.size, opcode=self.opcode,
                               ring_bits=min(ring_bits, 24), fmt=self.fmt)
        # Pongs from C: at a million idle subscribers a server pings tens of thousands of
        # times a second, and a Python call per ping would make this process the laggard.
        self.scanner.answer_pings(self.loop.send_hook())
        if isinstance(team, Lead):
            self.scanner.join_team(follower=False, peers=len(team.wires))
        elif isinstance(team, Follower):
            self.scanner.join_team(follower=True)
        if self.per_process:
            for pub in range(self.npub):
                if pub != self.share.process:
                    self.scanner.set_deaf(pub)
        self.conns: dict[ConnId, _Conn] = {}
        self.handshaking: set[ConnId] = set()
        self.scan_ok = bytearray(self.max_conns)
        self.tally = {k: Tally() for k in (KIND_SUB, KIND_PUB, KIND_HTTP)}
        self.subs = 0                   # subscribers open now
        self.pub_conns: list[ConnId | None] = []  # ws publishers by index; None: not open
        self.http_idle: deque[ConnId] = deque()
        self.http_queue: deque[int] = deque()   # send timestamps of messages waiting
        self.http_errors: Counter[str] = Counter()
        self.closed_by_server: Counter[str] = Counter()
        self.closing = False
        self.sent = 0
        self.reads = 0                  # DATA events fed to the scanner
        self.timeline: list[dict[str, float]] = []
        every = self.share.total + self.n_ws_pub + self.n_http
        self.pairs = plan_pairs(opts, self.target, self.share, self.n_ws_pub + self.n_http)
        self.sources = [] if self.pairs else source_addresses(
            self.target, every, opts.source_addresses, ephemeral_ports())
        self.connector = Connector(self.target, self.sources, pairs=self.pairs)
        # The measured server processes (--server-pid and their children) and their
        # sample before any process of the run connected (taken before the fork).
        self.server_pids, self.server0 = server if server is not None else (
            procstat.with_children(opts.server_pids), [])
        self.t_connected_ns = 0
        self.t_go_ns = 0
        self.t_first_publish_ns = 0
        self.round_ns: list[int] = []
        self._wanted: deque[tuple[str, int, bool]] = deque()    # (kind, index, retry)
        self._retries: list[tuple[float, str, int]] = []        # heap: (when, kind, index)
        self._can_open = True
        self._next_expiry_check = 0.0
        self.storm = Storm(StormPlan(*opts.storm)) if opts.storm else None
        self._last_progress = 0.0
        self._last_delivered = 0
        self._last_completed = 0
        self._phase = "connect"
        self.t_run0 = math.inf

    # -- connecting -----------------------------------------------------------

    def connect(self) -> None:
        """Open the subscribers, then the publishers (bounded handshakes in flight)."""
        first = self.share.first
        self._want(KIND_SUB, range(first, first + self.share.count))
        self._connect_all()
        if self.subs == 0 and self.team is None:
            return
        self._want(KIND_PUB, range(self.n_ws_pub))
        self._want(KIND_HTTP, range(self.n_http))
        self._connect_all()

    def _want(self, kind: str, indexes: range) -> None:
        self.tally[kind].requested += len(indexes)
        self._wanted.extend((kind, i, False) for i in indexes)

    def _connecting(self) -> bool:
        return bool(self._wanted or self._retries or len(self.connector) or self.handshaking)

    def _connect_all(self) -> None:
        """Step connects and pump until every wanted connection is open or failed."""
        while self._wanted or len(self.connector) or self.handshaking:
            if time.monotonic() >= self.hard_deadline:
                break
            self._connect_step(0.0 if self.handshaking else 0.002)
            self.pump(0.001 if len(self.connector) else 0.05)
            self._show_progress()
        for p in self.connector.abandon():          # out of time
            self.tally[p.kind].failed["timeout"] += 1
        for kind, _, _ in self._wanted:
            self.tally[kind].failed["not started (time limit)"] += 1
        self._wanted.clear()
        for conn in list(self.handshaking):
            self._handshake_failed(conn, self.conns[conn], "timeout")

    def _connect_step(self, wait: float = 0.0) -> None:
        """Start what may start, take the connects that ended (waiting up to ``wait`` s
        for one), and give up on the slow ones now and then."""
        now = time.monotonic()
        while self._retries and self._retries[0][0] <= now:
            _, kind, index = heapq.heappop(self._retries)
            self._wanted.append((kind, index, True))
        room = self.opts.connect_concurrency - len(self.connector) - len(self.handshaking)
        while self._wanted and room > 0 and self._can_open:
            kind, index, retry = self._wanted.popleft()
            err = self.connector.start(kind, index, now, retry=retry)
            if err:
                self._connect_failed(kind, index, retry, err)
            else:
                room -= 1
        if not self._can_open:
            for kind, _, _ in self._wanted:
                self.tally[kind].failed["out of file descriptors"] += 1
            self._wanted.clear()
        for p, err in self.connector.ready(wait if len(self.connector) else 0.0):
            if err:
                self._connect_failed(p.kind, p.index, p.retry, err)
            else:
                self._connected(p)
        if now >= self._next_expiry_check and not self.loop.behind:
            # (Not while answers that have arrived wait unread: a starved client must
            # not blame the server for its own lateness.)
            self._next_expiry_check = now + 0.1
            limit = now - self.opts.connect_timeout
            for p in self.connector.expire(limit):
                self._connect_failed(p.kind, p.index, p.retry, errno.ETIMEDOUT)
            for conn in list(self.handshaking):
                c = self.conns[conn]
                if c.started < limit:
                    self._handshake_failed(conn, c, "handshake timeout")

    def _connect_failed(self, kind: str, index: int, retry: bool, err: int) -> None:
        if err in OUT_OF_FILES and not retry:
            self._can_open = False
            self.tally[kind].failed["out of file descriptors"] += 1
            return
        reason = ("refused" if err == errno.ECONNREFUSED
                  else "connect timeout" if err == errno.ETIMEDOUT else _reason(err))
        if retry:
            self._retry_later(kind, index, reason)
        elif err == errno.ECONNREFUSED:
            self.tally[kind].refused += 1
        else:
            self.tally[kind].failed[reason] += 1

    def _retry_later(self, kind: str, index: int, why: str) -> None:
        """A storm's reconnect failed: count it and try again shortly, as a client would."""
        assert self.storm is not None
        self.storm.failed[why] += 1
        when = time.monotonic() + RETRY_SECONDS * (1 + random.random())
        heapq.heappush(self._retries, (when, kind, index))

    def _connected(self, p: Pending) -> None:
        try:
            conn = self.loop.adopt(p.sock)
        except RingioError as exc:      # no connection id free (closes still under way)
            p.sock.close()
            self._connect_failed(p.kind, p.index, p.retry, exc.errno or errno.ENFILE)
            return
        c = _Conn(p.kind, p.index, p.started, retry=p.retry)
        self.conns[conn] = c
        if p.kind == KIND_HTTP:
            path = self.opts.publish_path or f"/publish/{self.target.channel}"
            c.http = HttpPublisher(self.target, path, self.opts.size,
                                   content_type=CONTENT_TYPES[self.opts.payload])
            self._opened(conn, c)
            return
        self.handshaking.add(conn)
        c.handshake = Handshake(self._target_of(p.kind, p.index),
                                compression=self.opts.compression)
        self.loop.send(conn, c.handshake.request, force=True)

    def _opened(self, conn: ConnId, c: _Conn) -> None:
        c.open = True
        self.handshaking.discard(conn)
        if c.retry:
            assert self.storm is not None
            self.storm.came_back(time.monotonic_ns())
        else:
            tally = self.tally[c.kind]
            tally.opened += 1
            tally.handshake_ns.append(int((time.monotonic() - c.started) * 1e9))
        if c.kind == KIND_SUB:
            self.scanner.set_role(conn, ROLE_SUB)
            self.scan_ok[conn] = 1
            self.subs += 1
        elif c.kind == KIND_PUB:
            self.scanner.set_role(conn, ROLE_PUB)
            self.scan_ok[conn] = 1
            while len(self.pub_conns) <= c.index:
                self.pub_conns.append(None)
            self.pub_conns[c.index] = conn
        else:
            self.http_idle.append(conn)

    def _handshake_data(self, conn: ConnId, c: _Conn, data: bytes) -> None:
        assert c.handshake is not None
        try:
            rest = c.handshake.receive(data)
        except HandshakeFailed as exc:
            self._handshake_failed(conn, c, str(exc))
            return
        if rest is None:
            return
        deflate = c.handshake.deflate
        c.handshake = None
        self._opened(conn, c)
        if deflate is not None:
            # The scanner may now meet RSV1 on this connection (set after _opened, whose
            # set_role starts the connection afresh).
            self.scanner.set_deflate(conn, no_takeover=deflate.server_no_context_takeover,
                                     window_bits=deflate.inflate_window)
            if not c.retry:
                self.tally[c.kind].deflate[deflate.describe()] += 1
        if rest:
            self.scanner.feed(conn, rest)
            self._notes()

    def _handshake_failed(self, conn: ConnId, c: _Conn, why: str) -> None:
        del self.conns[conn]
        self.handshaking.discard(conn)
        self.loop.close_connection(conn)
        if c.retry:
            self._retry_later(c.kind, c.index, why)
        else:
            self.tally[c.kind].failed[why] += 1

    # -- a storm --------------------------------------------------------------

    def _storm_step(self, now: float) -> None:
        """Drop the subscribers when the storm is due; then reconnect and watch them."""
        st = self.storm
        if st is None:
            return
        if not st.t_drop_ns:
            if isinstance(self.team, Follower):
                due = self.team.storm
            else:
                due = now - self.t_run0 >= st.plan.at
                if due and isinstance(self.team, Lead):
                    self.team.tell("storm")
            if due:
                self._drop_subscribers(st)
            return
        if self._connecting():
            self._connect_step()
        st.check_receiving(self.scanner.count("receiving"), time.monotonic_ns())

    def _drop_subscribers(self, st: Storm) -> None:
        """Close the storm's share of the open subscribers at once (no close frame: to
        the server, the network went away) and queue their reconnects."""
        subs = [conn for conn, c in self.conns.items() if c.kind == KIND_SUB and c.open]
        k = min(len(subs), math.ceil(st.plan.fraction * len(subs)))
        chosen = subs if k == len(subs) else random.sample(subs, k)
        st.dropped_now(len(chosen), time.monotonic_ns(), self.scanner.count("receiving"))
        for conn in chosen:
            c = self.conns.pop(conn)
            self._forget(conn, c)
            self.loop.close_connection(conn)
            self._wanted.append((KIND_SUB, c.index, True))
        self._connect_step()

    # -- the event pump -----------------------------------------------------

    def pump(self, timeout: float) -> None:
        """One reap: scanner gets the subscribers' bytes in one call; the rest here.

        In a team, a follower first registers what the lead said it was about to
        publish (before the scanner can meet those messages) and then reports what it
        is done with; the lead merges its followers' reports."""
        team = self.team
        if team is None:
            events, received = self.loop.reap_raw(timeout)
        else:
            events, received = self.loop.reap_raw(min(timeout, TEAM_REAP))
            if isinstance(team, Follower):
                team.poll(self._mirror_publish)
            else:
                team.poll(self.scanner.merge)
        if events:
            self._scan(events, received)
        if isinstance(team, Follower):
            team.report(self.scanner.take_done(), self._status, time.monotonic())

    def _idle_pump(self) -> None:
        """A reap while nothing is measured: after a pause of `IDLE_REAP`, whatever
        came meanwhile, in one go."""
        time.sleep(IDLE_REAP)
        self.pump(0)

    def _scan(self, events: list[RawEvent], received: Buffer) -> None:
        scan_ok = self.scan_ok
        ids: list[int] = []
        offs: list[int] = []
        lens: list[int] = []
        others: list[RawEvent] = []
        for ev in events:
            kind, conn, _res, length, aux = ev
            if kind == DATA and scan_ok[conn]:
                ids.append(conn)
                offs.append(aux)
                lens.append(length)
            else:
                others.append(ev)
        if ids:
            self.reads += len(ids)
            if self.scanner.feed_spans(ids, offs, lens, received):
                self._notes()
        for ev in others:
            self._other(self.loop.event(ev))

    def _other(self, ev: Event) -> None:
        kind, conn = ev.kind, ev.conn
        c = self.conns.get(conn)
        if c is None:
            return
        if kind == DATA:
            if not c.open:
                self._handshake_data(conn, c, ev.data)
            elif c.kind == KIND_HTTP:
                self._http_data(conn, c, ev.data)
            elif self.scan_ok[conn] and self.scanner.feed(conn, ev.data):
                # Opened earlier in this reap (its 101 was an event before this one):
                # frames that followed the 101 at once. (Not scanned: bytes after a
                # close or a protocol error.)
                self._notes()
        elif kind == HUP:
            self._lost_conn(conn, c, "reset" if ev.res else "closed (EOF)")

    def _lost_conn(self, conn: ConnId, c: _Conn, how: str) -> None:
        if not c.open:
            self._handshake_failed(conn, c, f"{how} during handshake")
            return
        del self.conns[conn]
        if not self.closing:
            self.closed_by_server[f"{c.kind}: {how}"] += 1
            self._forget(conn, c)
        self.loop.close_connection(conn)

    def _forget(self, conn: ConnId, c: _Conn) -> None:
        if self.scan_ok[conn]:
            self.scan_ok[conn] = 0
            self.scanner.gone(conn)
            self.scanner.set_role(conn, ROLE_NONE)
        if c.kind == KIND_SUB:
            self.subs -= 1
        elif c.kind == KIND_PUB and c.index < len(self.pub_conns):
            self.pub_conns[c.index] = None
        elif c.kind == KIND_HTTP and conn in self.http_idle:
            self.http_idle.remove(conn)

    def _notes(self) -> None:
        for n in self.scanner.notes():
            conn = ConnId(n.conn)
            c = self.conns.get(conn)
            if c is None:
                continue
            if n.kind == NOTE_PING:
                self.loop.send(conn, _client_frame(0xA, n.payload), force=True)
            elif n.kind == NOTE_CLOSE:
                if not self.closing:
                    self.closed_by_server[f"{c.kind}: close code {n.aux}"] += 1
                code = n.aux if n.aux not in (1005, 1006, 1015) else 1000
                self.loop.send(conn, _client_frame(0x8, code.to_bytes(2, "big")), force=True)
                del self.conns[conn]
                self._forget(conn, c)
                self.loop.close_connection(conn, flush=True)
            elif n.kind == NOTE_PROTOCOL:
                if not self.closing:
                    why = PROTOCOL_ERRORS.get(n.aux, str(n.aux))
                    self.closed_by_server[f"{c.kind}: protocol error ({why})"] += 1
                del self.conns[conn]
                self._forget(conn, c)
                self.loop.close_connection(conn)

    # -- publishing ---------------------------------------------------------

    def _publish(self, count: int, ts_of: Callable[[int], int]) -> None:
        """Send ``count`` messages round-robin over the publishers; the i-th is stamped
        ``ts_of(i)`` (now, or its scheduled time)."""
        o = self.opts
        npub = self.npub
        if not self.t_first_publish_ns:
            self.t_first_publish_ns = time.monotonic_ns()
        if o.publisher == "ws":
            fsize = frame_size(o.size, masked=True)
            bufs: dict[int, tuple[bytearray, list[int]]] = {}
            told = array.array("Q")         # (pub, seq, ts) for the team's followers
            for i in range(count):
                pub = (self.sent + i) % npub
                ent = bufs.get(pub)
                if ent is None:
                    ent = bufs[pub] = (bytearray(fsize * (count // npub + 1)), [0])
                buf, off = ent
                seq = self.scanner.published(pub)
                ts = ts_of(i)
                self.scanner.publish(pub, seq, ts, self._expect(pub))
                told.extend((pub, seq, ts))
                off[0] += build_frames(buf, off[0], pub=pub, seq=seq, ts_ns=ts, size=o.size,
                                       opcode=self.opcode, mask_key=random.getrandbits(32),
                                       fmt=self.fmt)
            if isinstance(self.team, Lead):
                self.team.published(told)
            for pub, (buf, off) in bufs.items():
                conn = self.pub_conns[pub] if pub < len(self.pub_conns) else None
                if conn is not None:
                    self.loop.send(conn, bytes(buf[:off[0]]), force=True)
        else:
            for i in range(count):
                self.http_queue.append(ts_of(i))
            self._http_send()
        self.sent += count

    def _http_send(self) -> None:
        sc = self.scanner
        posts: list[tuple[ConnId, bytes]] = []
        told = array.array("Q")
        while self.http_queue and self.http_idle:
            conn = self.http_idle.popleft()
            c = self.conns[conn]
            assert c.http is not None
            ts = self.http_queue.popleft()
            seq = sc.published(c.index)
            sc.publish(c.index, seq, ts, self.subs)
            told.extend((c.index, seq, ts))
            posts.append((conn, c.http.post(payload(c.index, seq, ts, self.opts.size,
                                                    self.fmt))))
        if isinstance(self.team, Lead):
            self.team.published(told)
        for conn, request in posts:
            self.loop.send(conn, request, force=True)

    def _expect(self, pub: int) -> int:
        """How many of this process's subscribers get publisher ``pub``'s messages."""
        return self.subs if not self.per_process or pub == self.share.process else 0

    def _target_of(self, kind: str, index: int) -> Target:
        """Where a connection goes: with --channel-per-process, a subscriber to its
        process's channel and publisher k to channel k; else the URL."""
        if not self.per_process:
            return self.target
        return channel_target(self.target, self.share.process if kind == KIND_SUB else index)

    def _mirror_publish(self, pub: int, seq: int, ts: int) -> None:
        """A follower: the lead is about to send this message; expect it here."""
        self.scanner.publish(pub, seq, ts, self._expect(pub))

    def _http_data(self, conn: ConnId, c: _Conn, data: bytes) -> None:
        assert c.http is not None
        try:
            answer = c.http.receive(data)
        except PublishError as exc:
            self.http_errors[f"invalid HTTP answer ({exc})"] += 1
            self._drop_http(conn, c)
            return
        if answer is None:
            return
        if not 200 <= answer.status < 300:
            self.http_errors[f"HTTP {answer.status}"] += 1
        if not answer.keep_alive:
            self.http_errors["server closed the publish connection"] += 1
            self._drop_http(conn, c)
            return
        self.http_idle.append(conn)
        self._http_send()

    def _drop_http(self, conn: ConnId, c: _Conn) -> None:
        del self.conns[conn]
        self._forget(conn, c)
        self.loop.close_connection(conn)

    # -- running --------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """The whole run (the lead's part of it, in a team); the result `report` built."""
        o = self.opts
        self._begin()
        pids = self.server_pids
        server0 = self.server0 or [procstat.sample(pid) for pid in pids]
        try:
            self.connect()
            self.t_connected_ns = time.monotonic_ns()
            if isinstance(self.team, Lead):
                self._await_team()
            self.t_connected = time.monotonic()
            server1 = [procstat.sample(pid) for pid in pids]
            hold = self._hold(server1) if o.hold > 0 else None
            if self._all_subs() == 0:
                self.progress.done()
                raise LoadError(_no_subscribers(self._team_tally(), self.target.url))
            if not self.idle and not self.pub_conns and not self.http_idle:
                self.progress.done()
                raise LoadError("no publisher connection could be opened: "
                                + _failures(self.tally[KIND_PUB if o.publisher == 'ws'
                                                       else KIND_HTTP]))
            cpu0 = procstat.self_cpu_ns()
            self._phase = "run"
            self.t_go_ns = time.monotonic_ns()
            if isinstance(self.team, Lead):
                self.team.tell("go")
            self._run_phase()
            self.t_end_send = self._t_end_send
            self._phase = "drain"
            self._drain()
            self.t_end = time.monotonic()
            cpu1 = procstat.self_cpu_ns()
            server2 = [procstat.sample(pid) for pid in pids]
            self.scanner.finish()
            parts = [self._part(cpu1 - cpu0)]
            if isinstance(self.team, Lead):
                parts += self._gather_parts()
            self._show_progress(force=True)
            self.progress.done()
            return build_result(self._record(parts, (server0, server1, server2), hold))
        finally:
            self.close()

    def follow(self) -> None:
        """A follower's part of a team's run: connect, wait for "go", scan until
        "finish", then send the lead this process's part of the result."""
        team = self.team
        assert isinstance(team, Follower)
        self._begin()
        try:
            self.connect()
            self.t_connected_ns = time.monotonic_ns()
            team.send("connected", {**self.tally[KIND_SUB].state(),
                                    "t_connected_ns": self.t_connected_ns})
            while not (team.go or team.finish):
                self._idle_pump()
                self._check_deadline("the lead's go")
            cpu0 = procstat.self_cpu_ns()
            self._phase = "run"
            self.t_run0 = time.monotonic()
            next_expire = 0.0
            while not team.finish:
                self.pump(TEAM_REAP)
                now = time.monotonic()
                self._storm_step(now)
                if now >= next_expire:
                    next_expire = now + 0.05
                    self.scanner.expire(self.clock() - int(self.opts.message_timeout * 1e9))
                self._check_deadline("the end of the run")
            self.scanner.finish()
            team.send("result", self._part(procstat.self_cpu_ns() - cpu0))
        finally:
            self.close()

    def _begin(self) -> None:
        self.t_start = time.monotonic()
        self.t_begin_ns = time.monotonic_ns()
        self.hard_deadline = self.t_start + self.opts.max_time
        self.started_at = time.time()

    def _check_deadline(self, waiting_for: str) -> None:
        if time.monotonic() >= self.hard_deadline + 30:
            raise LoadError(f"gave up waiting for {waiting_for} (--max-time)")

    def _await_team(self) -> None:
        """The start barrier: pump until every follower has connected its share."""
        team = self.team
        assert isinstance(team, Lead)
        while not team.all_connected():
            if time.monotonic() >= self.hard_deadline:
                raise LoadError("the client processes did not all connect within --max-time")
            self._idle_pump()
            self._show_progress()

    def _gather_parts(self) -> list[dict[str, Any]]:
        team = self.team
        assert isinstance(team, Lead)
        team.tell("finish")
        end = time.monotonic() + 30.0
        while not team.all_results():
            if time.monotonic() >= end:
                raise LoadError("the client processes did not send their results in 30 s")
            self.pump(TEAM_REAP)
        return [r for r in team.results if r is not None]

    def _part(self, cpu_ns: int) -> dict[str, Any]:
        """This process's share of the result (what a follower sends the lead)."""
        sc = self.scanner
        return {"subscribers": self.tally[KIND_SUB].state(), "counts": sc.counts(),
                "delivery": sc.buckets(HIST_DELIVERY).tobytes(), "reads": self.reads,
                "closed_by_server": dict(self.closed_by_server), "cpu_ns": cpu_ns,
                "storm": self.storm.state() if self.storm else None,
                "process": self.share.process, "t_begin_ns": self.t_begin_ns,
                "t_connected_ns": self.t_connected_ns, "binding": self._binding()}

    def _binding(self) -> dict[str, Any]:
        """How this process's sockets got their source (address, port)."""
        cn = self.connector
        if self.pairs is None:
            return {"process": self.share.process, "mode": "kernel",
                    "source_addresses": self.sources}
        return {**self.pairs.describe(), "mode": "explicit", "pairs_taken": cn.next_pair,
                "pairs_skipped": dict(cn.skipped)}

    def _record(self, parts: list[dict[str, Any]],
                server: tuple[list[procstat.ProcSample], ...],
                hold: tuple[float, list[procstat.ProcSample]] | None) -> RunRecord:
        """The run's record, every process's part added up (parts[0] is this one's)."""
        o = self.opts
        subscribers = Tally()
        counts: Counter[str] = Counter()
        delivery = array.array("Q", bytes(len(parts[0]["delivery"])))
        closed: Counter[str] = Counter()
        for part in parts:
            subscribers.add(part["subscribers"])
            counts.update({k: v for k, v in part["counts"].items() if k not in LEAD_ONLY_COUNTS})
            bucket = array.array("Q", part["delivery"])
            for i, n in enumerate(bucket):
                if n:
                    delivery[i] += n
            closed.update(part["closed_by_server"])
        own = self.scanner.counts()
        counts.update({k: own[k] for k in LEAD_ONLY_COUNTS})
        storms = [p["storm"] for p in parts if p["storm"] is not None]
        return RunRecord(
            options=o, engine=self.engine_note, started_at=self.started_at,
            idle=self.idle, source_addresses=len(self.sources), processes=len(parts),
            subscribers=subscribers,
            publishers=self.tally[KIND_PUB if o.publisher == "ws" else KIND_HTTP],
            connect_seconds=self.t_connected - self.t_start,
            sending_seconds=self.t_end_send - self.t_run0,
            run_seconds=self.t_end - self.t_run0,
            sent=self.sent, reads=sum(p["reads"] for p in parts), counts=dict(counts),
            delivery=to_hdr(delivery), to_last=self.scanner.histogram(HIST_LAST),
            closed_by_server=dict(closed), publish_errors=dict(self.http_errors),
            timeline=self.timeline, server=server,
            client_cpu_ns=[p["cpu_ns"] for p in parts],
            storm=merge_storms(storms) if storms else None,
            server_pids=list(self.server_pids), hold=hold,
            team={"t_begin_ns": [p["t_begin_ns"] for p in parts],
                  "t_connected_ns": [p["t_connected_ns"] for p in parts],
                  "t_go_ns": self.t_go_ns, "t_first_publish_ns": self.t_first_publish_ns},
            binding=[p["binding"] for p in parts],
            round_ns=list(self.round_ns))

    def _hold(self, server1: list[procstat.ProcSample]
              ) -> tuple[float, list[procstat.ProcSample]]:
        """``--hold``: every subscriber of every process connected, nothing published, for
        that long (the server's keepalive is all it does); its samples at the end."""
        t0 = time.monotonic()
        end = t0 + self.opts.hold
        self._phase = "hold"
        while time.monotonic() < end:
            self._idle_pump()
            self._show_progress()
        held = time.monotonic() - t0
        return held, [procstat.sample(pid) for pid in self.server_pids]

    def _all_subs(self) -> int:
        """Subscribers open now, over the whole team."""
        if isinstance(self.team, Lead):
            return self.subs + sum(int(c["opened"]) for c in self.team.connected if c) \
                if self._phase == "connect" else self.subs + self.team.follower_sum("subs")
        return self.subs

    def _team_tally(self) -> Tally:
        t = Tally()
        t.add(self.tally[KIND_SUB].state())
        if isinstance(self.team, Lead):
            for c in self.team.connected:
                if c:
                    t.add(c)
        return t

    def _status(self) -> dict[str, Any]:
        """A follower's figures for the lead's progress line."""
        sc = self.scanner
        st = self.storm
        return {"subs": self.subs, "delivered": sc.delivered,
                "faults": sum(sc.count(k) for k in FAULT_KEYS),
                "back": st.back if st else 0, "receiving": st.receiving if st else 0}

    def _pump_wait(self, limit: float) -> float:
        """How long the next reap may wait: not long while a storm reconnects."""
        return min(limit, 0.001) if self._connecting() else limit

    def _run_phase(self) -> None:
        o = self.opts
        sc = self.scanner
        t0 = time.monotonic()
        self.t_run0 = t0
        t0_ns = self.clock()
        end = min(self.hard_deadline, t0 + o.duration if o.duration is not None else math.inf)
        limit = o.messages if o.messages is not None else None
        self._next_progress = t0 + 1.0
        self._last_progress = t0
        cutoff_every = 0.05
        next_expire = t0 + cutoff_every
        if self.idle:
            while time.monotonic() < end:
                self.pump(min(0.1, max(0.0, end - time.monotonic())))
                self._show_progress()
            self._t_end_send = time.monotonic()
            return
        if o.rounds is not None:
            self._rounds(end, o.rounds)
        elif o.rate is None:
            window = o.window
            while True:
                now = time.monotonic()
                if now >= end or (limit is not None and self.sent >= limit):
                    break
                self._storm_step(now)
                inflight = self.sent - sc.resolved
                room = window - inflight
                if limit is not None:
                    room = min(room, limit - self.sent)
                if room > 0:
                    self._publish(room, lambda _i: self.clock())
                self.pump(self._pump_wait(min(0.05, max(0.0, end - now))))
                if now >= next_expire:
                    sc.expire(self.clock() - int(o.message_timeout * 1e9))
                    next_expire = now + cutoff_every
                if now >= self._next_progress:
                    self._show_progress()
        else:
            period_ns = 1e9 / o.rate
            while True:
                now = time.monotonic()
                if now >= end or (limit is not None and self.sent >= limit):
                    break
                self._storm_step(now)
                now_ns = self.clock()
                due = int((now_ns - t0_ns) / period_ns) + 1   # messages scheduled by now
                if limit is not None:
                    due = min(due, limit)
                count = min(due - self.sent, 4096)
                if count > 0:
                    base = self.sent
                    def scheduled(i: int, b: int = base) -> int:
                        return t0_ns + int((b + i) * period_ns)

                    self._publish(count, scheduled)
                    if due > self.sent:
                        self.pump(0)
                        continue
                next_ns = t0_ns + int(self.sent * period_ns)
                wait = max(0.0, (next_ns - self.clock()) / 1e9)
                self.pump(self._pump_wait(min(wait, 0.05, max(0.0, end - now))))
                if now >= next_expire:
                    sc.expire(self.clock() - int(o.message_timeout * 1e9))
                    next_expire = now + cutoff_every
                if now >= self._next_progress:
                    self._show_progress()
        self._t_end_send = time.monotonic()

    def _rounds(self, end: float, rounds: int) -> None:
        """``--rounds``: each round, every publisher sends one message; the next round
        starts once every subscriber of every process has every one of them (or they were
        given up on). A round's time runs from its send to the moment this process knows
        that (the followers' reports included)."""
        sc = self.scanner
        o = self.opts
        next_expire = time.monotonic() + 0.05
        for _ in range(rounds):
            if time.monotonic() >= end:
                break
            t0 = time.monotonic_ns()
            self._publish(self.npub, lambda _i: self.clock())
            while sc.resolved < self.sent:
                now = time.monotonic()
                if now >= end:
                    return
                self.pump(self._pump_wait(min(0.05, end - now)))
                if now >= next_expire:
                    sc.expire(self.clock() - int(o.message_timeout * 1e9))
                    next_expire = now + 0.05
                if now >= self._next_progress:
                    self._show_progress()
            self.round_ns.append(time.monotonic_ns() - t0)

    def _drain(self) -> None:
        o = self.opts
        sc = self.scanner
        end = min(self.hard_deadline, time.monotonic() + o.drain_timeout)
        while not self.idle and self.sent > sc.resolved and self._all_subs():
            now = time.monotonic()
            if now >= end:
                break
            self._storm_step(now)
            self.pump(self._pump_wait(min(0.05, end - now)))
            sc.expire(self.clock() - int(o.message_timeout * 1e9))
            self._show_progress()
        # Late messages are given up on now; what is missing at finish() is undelivered.
        sc.expire(2**63)

    def close(self) -> None:
        """Close frames to every open connection, a short flush, then the loop."""
        self.closing = True
        try:
            frame = _client_frame(0x8, (1000).to_bytes(2, "big"))
            for conn, c in list(self.conns.items()):
                if c.open and c.kind != KIND_HTTP:
                    self.loop.send(conn, frame, force=True)
                self.loop.close_connection(conn, flush=True)
            self.conns.clear()
            end = time.monotonic() + 1.0
            while time.monotonic() < end and self.loop.stats()["queued_bytes"]:
                self.loop.reap(0.01)
        finally:
            self.loop.close()

    # -- progress -------------------------------------------------------------

    def _show_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < 1.0:
            return
        elapsed = now - self._last_progress
        self._last_progress = now
        self._next_progress = now + 1.0
        sc = self.scanner
        lead = self.team if isinstance(self.team, Lead) else None
        delivered = sc.delivered + (lead.follower_sum("delivered") if lead else 0)
        completed = sc.count("completed")
        rate = (delivered - self._last_delivered) / elapsed if elapsed > 0 else 0.0
        mrate = (completed - self._last_completed) / elapsed if elapsed > 0 else 0.0
        self._last_delivered = delivered
        self._last_completed = completed
        p99 = bucket_percentile(sc.buckets(HIST_DELIVERY_INTERVAL), 99.0)
        sc.reset_interval()
        t = now - self.t_start
        subs = self._all_subs()
        tally = self._team_tally()
        faults = sum(sc.count(k) for k in FAULT_KEYS) + (lead.follower_sum("faults")
                                                         if lead else 0)
        if self._phase in ("run", "drain"):        # not while connecting or holding
            self.timeline.append({
                "t": round(now - self.t_run0, 3), "deliveries_per_s": round(rate, 1),
                "messages_per_s": round(mrate, 1),
                "p99_ms": round(p99 / 1e6, 4) if p99 is not None else -1.0,
                "subscribers": subs,
            })
        text = (f"[{t:6.1f}s {self._phase:7s}] subscribers {subs}/{self.opts.connections}"
                f" | {rate:,.0f} deliveries/s | {mrate:,.0f} msgs/s"
                f" | p99 {_ms(p99)} | faults {faults}")
        failed = tally.refused + sum(tally.failed.values())
        if failed:
            text += f" | failed connections {failed}"
        st = self.storm
        if st is not None and st.t_drop_ns:
            back = st.back + (lead.follower_sum("back") if lead else 0)
            receiving = st.receiving + (lead.follower_sum("receiving") if lead else 0)
            text += f" | storm: back {back:,}, receiving {receiving:,}"
        self.progress.show(text)


def _client_frame(opcode: int, data: bytes) -> bytes:
    """A masked client control frame (len <= 125)."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i & 3] for i, b in enumerate(data))
    return bytes([0x80 | opcode, 0x80 | len(data)]) + mask + body


def _ms(ns: int | None) -> str:
    if ns is None:
        return "-"
    if ns < 1_000_000:
        return f"{ns / 1000:.0f}µs"
    return f"{ns / 1e6:.2f}ms"


def _reason(err: int | None) -> str:
    if err is None:
        return "error"
    return f"{errno.errorcode.get(err, str(err))} ({os.strerror(err)})"


def _failures(t: Tally) -> str:
    parts = [f"{t.refused} refused"] if t.refused else []
    parts += [f"{n} {why}" for why, n in t.failed.most_common()]
    return ", ".join(parts) or "no reason recorded"


def _no_subscribers(t: Tally, url: str) -> str:
    return f"no subscriber could connect to {url}: {_failures(t)}"


def processes_needed(opts: Options) -> int:
    """``--processes`` as asked, or (0, auto) as many as the open-files limit needs: one
    process holds at most its hard RLIMIT_NOFILE, less some headroom."""
    if opts.processes:
        return opts.processes
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return 1
    per = max(1, hard - FD_HEADROOM - 64 - opts.publishers - opts.http_connections)
    return max(1, min(64, -(-opts.connections // per)))


def run_load_test(opts: Options, *, progress_stream: IO[str] | None = sys.stderr
                  ) -> dict[str, Any]:
    """Run ``opts`` to its result: in this process, or over several (`team`) with this
    one as the lead. Raises `LoadError` (or `TargetError`) when it cannot."""
    opts.validate()
    parse_target(opts.url, allow_remote=opts.allow_remote)  # refuse before any fork
    target = parse_target(opts.url, allow_remote=opts.allow_remote)  # refuse before a fork
    n = processes_needed(opts)
    parts = shares(opts.connections, n)
    for part in parts:                      # enough source pairs for every process?
        plan_pairs(opts, target, part,
                   _publisher_conns(opts, n) if part.process == 0 else 0)
    # The server's processes (a supervisor's workers too) and their state before anyone
    # connects: the connect phase's CPU is the handshakes'.
    pids = procstat.with_children(opts.server_pids)
    server = (pids, [procstat.sample(pid) for pid in pids])
    if n == 1:
        return LoadTest(opts, progress_stream=progress_stream, server=server).run()

    def follow(index: int, follower: Follower) -> None:
        LoadTest(opts, progress_stream=None, share=parts[index], team=follower).follow()

    lead = fork_followers(n - 1, follow)
    try:
        return LoadTest(opts, progress_stream=progress_stream, share=parts[0],
                        team=lead, server=server).run()
    finally:
        lead.close()


def _publisher_conns(opts: Options, processes: int = 1) -> int:
    """The lead's publisher connections (as `LoadTest` opens them)."""
    if opts.messages == 0:
        return 0
    if opts.publisher == "http":
        return max(1, min(opts.http_connections,
                          opts.window if opts.rate is None else opts.http_connections))
    return processes if opts.channel_per_process else opts.publishers


def channel_target(target: Target, k: int) -> Target:
    """``target`` with its channel ``<channel>-<k>`` (--channel-per-process)."""
    channel = f"{target.channel}-{k}"
    path = "/" + channel + target.path[len("/" + target.channel):]
    return dataclasses.replace(target, channel=channel, path=path)


def explicit_pairs(opts: Options, target: Target) -> bool:
    """Whether sockets are bound to explicit (address, port) pairs: ``--bind explicit``;
    with ``auto``, for an IPv4 loopback target once the connections need more than one
    source address (more than 80 % of the ephemeral range)."""
    if opts.bind == "kernel":
        return False
    loop4 = target.loopback and target.family == socket.AF_INET
    if opts.bind == "explicit":
        if not loop4:
            raise LoadError("--bind explicit takes source addresses from 127.0.0.0/8: the "
                            "target must be an IPv4 loopback address")
        return True
    return loop4 and opts.connections + _publisher_conns(opts, processes_needed(opts)) > int(
        ephemeral_ports() * 0.8)


def plan_pairs(opts: Options, target: Target, share: Share, publishers: int
               ) -> PairPlan | None:
    """This process's explicit pairs (None: the kernel picks the ports). Enough for its
    subscribers and publishers, twice its subscribers with a storm (the reconnects take
    fresh pairs); `LoadError` when ``--source-addresses`` x ``--source-ports`` cannot."""
    if not explicit_pairs(opts, target):
        return None
    need = share.count * (2 if opts.storm else 1) + publishers
    try:
        return pair_plan(share.process, need, opts.source_addresses, opts.source_ports)
    except ValueError as exc:
        raise LoadError(str(exc)) from None
