"""The load client: connects subscribers and publishers through ringio, publishes, counts.

Phases of `LoadTest.run`:

1. connect: subscribers first, then publishers. Python creates each socket and
   connects it without blocking (its own epoll waits for the connection, at most
   ``connect_concurrency`` connections and handshakes in flight), then hands it to
   the ringio loop, which sends the HTTP upgrade and returns the 101. The accept
   key is checked; a bad one is a failed connection. When there are more
   connections than ephemeral ports, sources are spread over 127.0.0.x.
2. publish: closed loop (``window`` messages in flight; a message leaves flight
   when every subscriber has it) or open loop (``rate`` messages/s, each stamped
   with its *scheduled* send time, so queueing in the server shows as latency).
3. drain: wait for what is in flight, up to ``drain_timeout``; then whatever a
   subscriber has not received is undelivered.

Per delivery nothing happens in Python: every ``reap`` goes to the C scanner in
one call (`Scanner.feed_batch`). HTTP is read by h11: the handshake's answer
(`handshake`) and the answers to HTTP publishes (`http_publish`).
"""

from __future__ import annotations

import errno
import math
import os
import random
import select
import socket
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import IO, Any

from ringcast.fdlimit import raise_nofile
from ringcast.loadtest import procstat
from ringcast.loadtest.handshake import Handshake, HandshakeFailed
from ringcast.loadtest.http_publish import HttpPublisher, PublishError
from ringcast.loadtest.options import LoadError, Options
from ringcast.loadtest.record import RunRecord, Tally
from ringcast.loadtest.report import build_result
from ringcast.loadtest.scanner import (
    HIST_DELIVERY,
    HIST_DELIVERY_INTERVAL,
    HIST_LAST,
    NOTE_CLOSE,
    NOTE_PING,
    NOTE_PROTOCOL,
    OP_BINARY,
    PROTOCOL_ERRORS,
    ROLE_NONE,
    ROLE_PUB,
    ROLE_SUB,
    Scanner,
    bucket_percentile,
    build_frames,
    frame_size,
    payload,
)
from ringcast.loadtest.target import Target, ephemeral_ports, parse_target
from ringcast.ringio import ConnId, Engine, EventKind, Loop, LoopParams, RingUnavailable
from ringcast.ringio.loop import Event

# The client's public face: `Options` and `LoadError` live in `options` (the report reads
# options too), and are named here for whoever runs a load test.
__all__ = ["LoadError", "LoadTest", "Options"]

IP_BIND_ADDRESS_NO_PORT = 24
DATA = int(EventKind.DATA)
HUP = int(EventKind.HUP)

KIND_SUB, KIND_PUB, KIND_HTTP = "subscriber", "publisher", "http-publisher"


@dataclass
class _Pending:
    kind: str
    index: int
    sock: socket.socket
    started: float


@dataclass
class _Conn:
    kind: str
    index: int
    started: float
    open: bool = False
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
    """One run against one target. Use `run()` once."""

    def __init__(self, opts: Options, *, progress_stream: IO[str] | None = sys.stderr,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        opts.validate()
        self.opts = opts
        self.target: Target = parse_target(opts.url, allow_remote=opts.allow_remote)
        self.progress = Progress(progress_stream if opts.progress else None)
        self.clock = clock
        self.idle = opts.messages == 0
        nhttp = 0
        if opts.publisher == "http" and not self.idle:
            nhttp = max(1, min(opts.http_connections,
                               opts.window if opts.rate is None else opts.http_connections))
        self.n_http = nhttp
        self.n_ws_pub = 0 if (self.idle or opts.publisher == "http") else opts.publishers
        total = opts.connections + self.n_ws_pub + self.n_http
        self.max_conns = total + 64
        raise_nofile(self.max_conns)    # what it cannot get shows as failed connections
        self.loop, self.engine_note = _open_loop(opts.engine, self.max_conns, opts.size)
        ring_bits = 16
        if opts.rate is not None:
            need = opts.rate * (opts.message_timeout + opts.drain_timeout + 1) * 2
            ring_bits = max(ring_bits, min(22, math.ceil(math.log2(max(need, 2)))))
        ring_bits = max(ring_bits, math.ceil(math.log2(opts.window * 4)))
        # An HTTP publisher id per HTTP connection: each carries one request at a
        # time, so its messages reach the server in order.
        self.npub = nhttp if nhttp else opts.publishers
        self.scanner = Scanner(self.max_conns, self.npub, opts.size,
                               opcode=OP_BINARY, ring_bits=min(ring_bits, 24))
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
        self.sources = self._sources(total)
        self._last_progress = 0.0
        self._last_delivered = 0
        self._last_completed = 0
        self._phase = "connect"

    # -- sources ------------------------------------------------------------

    def _sources(self, total: int) -> list[str]:
        t = self.target
        if not (t.loopback and t.family == socket.AF_INET):
            return []
        k = self.opts.source_addresses
        if k <= 0:
            per = int(ephemeral_ports() * 0.8)
            k = math.ceil(total / per) if total > per else 0
        return [f"127.0.0.{i + 1}" for i in range(min(k, 254))] if k > 1 else []

    # -- connecting -----------------------------------------------------------

    def _start(self, ep: select.epoll, connecting: dict[int, _Pending], kind: str,
               index: int, now: float) -> bool:
        """Start one connect; False when no more sockets can be made (stop trying)."""
        t = self.target
        tally = self.tally[kind]
        try:
            sock = socket.socket(t.family, socket.SOCK_STREAM)
        except OSError as exc:
            tally.failed[_reason(exc.errno)] += 1
            return exc.errno not in (errno.EMFILE, errno.ENFILE)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.sources:
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((self.sources[index % len(self.sources)], 0))
            rc = sock.connect_ex((t.address, t.port))
        except OSError as exc:
            sock.close()
            tally.failed[_reason(exc.errno)] += 1
            return True
        if rc not in (0, errno.EINPROGRESS):
            sock.close()
            self._fail_connect(kind, rc)
            return True
        connecting[sock.fileno()] = _Pending(kind, index, sock, now)
        ep.register(sock.fileno(), select.EPOLLOUT)
        return True

    def _fail_connect(self, kind: str, err: int) -> None:
        tally = self.tally[kind]
        if err == errno.ECONNREFUSED:
            tally.refused += 1
        else:
            tally.failed[_reason(err)] += 1

    def _connected(self, p: _Pending) -> None:
        conn = self.loop.adopt(p.sock)
        c = _Conn(p.kind, p.index, p.started)
        self.conns[conn] = c
        if p.kind == KIND_HTTP:
            path = self.opts.publish_path or f"/publish/{self.target.channel}"
            c.http = HttpPublisher(self.target, path, self.opts.size)
            self._opened(conn, c)
            return
        self.handshaking.add(conn)
        c.handshake = Handshake(self.target)
        self.loop.send(conn, c.handshake.request, force=True)

    def _opened(self, conn: ConnId, c: _Conn) -> None:
        c.open = True
        self.handshaking.discard(conn)
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
        c.handshake = None
        self._opened(conn, c)
        if rest:
            self.scanner.feed(conn, rest)
            self._notes()

    def _handshake_failed(self, conn: ConnId, c: _Conn, why: str) -> None:
        self.tally[c.kind].failed[why] += 1
        del self.conns[conn]
        self.handshaking.discard(conn)
        self.loop.close_connection(conn)

    def connect(self) -> None:
        """Open the subscribers, then the publishers (bounded handshakes in flight)."""
        o = self.opts
        self._connect_group([(KIND_SUB, i) for i in range(o.connections)])
        if self.subs == 0:
            return
        wants = [(KIND_PUB, i) for i in range(self.n_ws_pub)]
        wants += [(KIND_HTTP, i) for i in range(self.n_http)]
        if wants:
            self._connect_group(wants)

    def _connect_group(self, wants: list[tuple[str, int]]) -> None:
        o = self.opts
        pending = deque(wants)
        for kind, _ in wants:
            self.tally[kind].requested += 1
        connecting: dict[int, _Pending] = {}
        can_open = True
        next_check = time.monotonic() + 0.1
        with select.epoll() as ep:
            while pending or connecting or self._handshaking():
                now = time.monotonic()
                if now >= self.hard_deadline:
                    break
                while (can_open and pending
                       and len(connecting) + self._handshaking() < o.connect_concurrency):
                    kind, index = pending.popleft()
                    can_open = self._start(ep, connecting, kind, index, now)
                if not can_open:
                    for kind, _ in pending:
                        self.tally[kind].failed["out of file descriptors"] += 1
                    pending.clear()
                if connecting:
                    for fd, _mask in ep.poll(0 if self._handshaking() else 0.002):
                        p = connecting.pop(fd)
                        ep.unregister(fd)
                        err = p.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            p.sock.close()
                            self._fail_connect(p.kind, err)
                        else:
                            self._connected(p)
                self.pump(0.001 if connecting else 0.05)
                if time.monotonic() >= next_check:
                    self._connect_timeouts(ep, connecting, time.monotonic())
                    next_check = time.monotonic() + 0.1
                self._show_progress()
            for p in connecting.values():  # out of time
                ep.unregister(p.sock.fileno())
                p.sock.close()
                self.tally[p.kind].failed["timeout"] += 1
            for kind, _ in pending:
                self.tally[kind].failed["not started (time limit)"] += 1
        for conn in list(self.handshaking):
            self._handshake_failed(conn, self.conns[conn], "timeout")

    def _handshaking(self) -> int:
        return len(self.handshaking)

    def _connect_timeouts(self, ep: select.epoll, connecting: dict[int, _Pending],
                          now: float) -> None:
        limit = now - self.opts.connect_timeout
        for fd, p in list(connecting.items()):
            if p.started < limit:
                del connecting[fd]
                ep.unregister(fd)
                p.sock.close()
                self.tally[p.kind].failed["connect timeout"] += 1
        for conn in list(self.handshaking):
            c = self.conns[conn]
            if c.started < limit:
                self._handshake_failed(conn, c, "handshake timeout")

    # -- the event pump -----------------------------------------------------

    def pump(self, timeout: float) -> None:
        """One reap: scanner gets the subscribers' bytes in one call; the rest here."""
        events = self.loop.reap(timeout)
        if not events:
            return
        scan_ok = self.scan_ok
        ids: list[int] = []
        chunks: list[bytes] = []
        others: list[Event] = []
        for ev in events:
            if ev[0] == DATA and scan_ok[ev[1]]:
                ids.append(ev[1])
                chunks.append(ev[4])
            else:
                others.append(ev)
        if chunks:
            self.reads += len(chunks)
            if self.scanner.feed_batch(ids, chunks):
                self._notes()
        for ev in others:
            self._other(ev)

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
            else:  # the scanner stopped: bytes after a close or a protocol error
                pass
        elif kind == HUP:
            self._lost_conn(conn, c, "reset" if ev.res else "closed (EOF)")

    def _lost_conn(self, conn: ConnId, c: _Conn, how: str) -> None:
        del self.conns[conn]
        self.handshaking.discard(conn)
        if not c.open:
            self.tally[c.kind].failed[f"{how} during handshake"] += 1
        elif not self.closing:
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
        if o.publisher == "ws":
            fsize = frame_size(o.size, masked=True)
            bufs: dict[int, tuple[bytearray, list[int]]] = {}
            for i in range(count):
                pub = (self.sent + i) % npub
                ent = bufs.get(pub)
                if ent is None:
                    ent = bufs[pub] = (bytearray(fsize * (count // npub + 1)), [0])
                buf, off = ent
                seq = self.scanner.published(pub)
                ts = ts_of(i)
                self.scanner.publish(pub, seq, ts, self.subs)
                off[0] += build_frames(buf, off[0], pub=pub, seq=seq, ts_ns=ts, size=o.size,
                                       mask_key=random.getrandbits(32))
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
        while self.http_queue and self.http_idle:
            conn = self.http_idle.popleft()
            c = self.conns[conn]
            assert c.http is not None
            ts = self.http_queue.popleft()
            seq = sc.published(c.index)
            sc.publish(c.index, seq, ts, self.subs)
            self.loop.send(conn, c.http.post(payload(c.index, seq, ts, self.opts.size)),
                           force=True)

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
        o = self.opts
        self.t_start = time.monotonic()
        self.hard_deadline = self.t_start + o.max_time
        self.started_at = time.time()
        server0 = [procstat.sample(pid) for pid in o.server_pids]
        try:
            self.connect()
            self.t_connected = time.monotonic()
            server1 = [procstat.sample(pid) for pid in o.server_pids]
            if self.subs == 0:
                self.progress.done()
                raise LoadError(_no_subscribers(self.tally[KIND_SUB], self.target.url))
            if not self.idle and not self.pub_conns and not self.http_idle:
                self.progress.done()
                raise LoadError("no publisher connection could be opened: "
                                + _failures(self.tally[KIND_PUB if o.publisher == 'ws'
                                                       else KIND_HTTP]))
            cpu0 = procstat.self_cpu_ns()
            self._phase = "run"
            self._run_phase()
            self.t_end_send = self._t_end_send
            self._phase = "drain"
            self._drain()
            self.t_end = time.monotonic()
            cpu1 = procstat.self_cpu_ns()
            server2 = [procstat.sample(pid) for pid in o.server_pids]
            self.scanner.finish()
            self._show_progress(force=True)
            self.progress.done()
            sc = self.scanner
            return build_result(RunRecord(
                options=o, engine=self.engine_note, started_at=self.started_at,
                idle=self.idle, source_addresses=len(self.sources),
                subscribers=self.tally[KIND_SUB],
                publishers=self.tally[KIND_PUB if o.publisher == "ws" else KIND_HTTP],
                connect_seconds=self.t_connected - self.t_start,
                sending_seconds=self.t_end_send - self.t_run0,
                run_seconds=self.t_end - self.t_run0,
                sent=self.sent, reads=self.reads, counts=sc.counts(),
                delivery=sc.histogram(HIST_DELIVERY), to_last=sc.histogram(HIST_LAST),
                closed_by_server=dict(self.closed_by_server),
                publish_errors=dict(self.http_errors), timeline=self.timeline,
                server=(server0, server1, server2), client_cpu_ns=cpu1 - cpu0))
        finally:
            self.close()

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
        if o.rate is None:
            window = o.window
            while True:
                now = time.monotonic()
                if now >= end or (limit is not None and self.sent >= limit):
                    break
                inflight = self.sent - sc.resolved
                room = window - inflight
                if limit is not None:
                    room = min(room, limit - self.sent)
                if room > 0:
                    self._publish(room, lambda _i: self.clock())
                self.pump(min(0.05, max(0.0, end - now)))
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
                self.pump(min(wait, 0.05, max(0.0, end - now)))
                if now >= next_expire:
                    sc.expire(self.clock() - int(o.message_timeout * 1e9))
                    next_expire = now + cutoff_every
                if now >= self._next_progress:
                    self._show_progress()
        self._t_end_send = time.monotonic()

    def _drain(self) -> None:
        o = self.opts
        sc = self.scanner
        end = min(self.hard_deadline, time.monotonic() + o.drain_timeout)
        while not self.idle and self.sent > sc.resolved and self.subs:
            now = time.monotonic()
            if now >= end:
                break
            self.pump(min(0.05, end - now))
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
        delivered = sc.delivered
        completed = sc.count("completed")
        rate = (delivered - self._last_delivered) / elapsed if elapsed > 0 else 0.0
        mrate = (completed - self._last_completed) / elapsed if elapsed > 0 else 0.0
        self._last_delivered = delivered
        self._last_completed = completed
        p99 = bucket_percentile(sc.buckets(HIST_DELIVERY_INTERVAL), 99.0)
        sc.reset_interval()
        t = now - self.t_start
        subs = self.tally[KIND_SUB]
        faults = sum(sc.count(k) for k in ("lost", "undelivered", "duplicated", "out_of_order",
                                           "corrupted", "bad_opcode", "protocol_errors"))
        if self._phase != "connect":
            self.timeline.append({
                "t": round(now - self.t_run0, 3), "deliveries_per_s": round(rate, 1),
                "messages_per_s": round(mrate, 1),
                "p99_ms": round(p99 / 1e6, 4) if p99 is not None else -1.0,
                "subscribers": self.subs,
            })
        text = (f"[{t:6.1f}s {self._phase:7s}] subscribers {self.subs}/{subs.requested}"
                f" | {rate:,.0f} deliveries/s | {mrate:,.0f} msgs/s"
                f" | p99 {_ms(p99)} | faults {faults}")
        failed = subs.refused + sum(subs.failed.values())
        if failed:
            text += f" | failed connections {failed}"
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
