"""Raw WebSocket and HTTP clients for the fault tests: many sockets, one selector, no threads.

The bytes come from tests.support.rawws (frames, the handshake, reading server frames);
what is here is the driving: who sends what, when, and what is checked on the way back.

A `Swarm` drives every client socket of a test from one selector loop with timers, so
thousands of connections cost one process and a few system calls each. Each `Conn` has a
behaviour (its ``kind``):

- ``SUB``: completes the handshake, parses every frame, answers pings, echoes a close,
  and hands each message to a checker (by default: stamped messages, see `stamp`, which
  must arrive in sequence; their latency is recorded).
- ``IDLE``: completes the handshake, then leaves the selector and never reads again.
- ``DRIP``: sends its handshake (and then ``send``) ``drip`` bytes per ``drip_interval``
  (slowloris), and reads what comes back like ``SUB``.
- ``RAW``: sends the bytes it was given, then collects whatever comes back (an HTTP
  response, frames) until the server closes.
- ``HTTP``: a keep-alive HTTP/1.1 client for ``POST /publish/<channel>``; `Publisher`
  drives one a request at a time.

Client sockets are bound to source addresses spread over 127.0.0.2-127.0.0.254 with
``IP_BIND_ADDRESS_NO_PORT``, so tens of thousands of connections and their TIME_WAIT
states never run out of ephemeral ports. Nothing here sleeps hoping something happened:
`Swarm.run_until` runs the loop until a condition holds and fails with what it waited for.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import os
import re
import selectors
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPConnection
from typing import Any

# Re-exported: tests annotate with W.Metrics.
from tests.support.metrics import Metrics as Metrics  # noqa: PLC0414
from tests.support.rawws import (
    ACCEPT,
    HOST,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    Frame,
    close_payload,
    frame,
    handshake_request,
    header,
    parse_frames,
)

IP_BIND_ADDRESS_NO_PORT = 24

SUB, IDLE, DRIP, RAW, HTTP = "sub", "idle", "drip", "raw", "http"
CONNECTING, HANDSHAKE, OPEN, CLOSED = "connecting", "handshake", "open", "closed"

TCP_ESTABLISHED = 1


# -- messages ------------------------------------------------------------------------


def stamp(seq: int, size: int = 64) -> bytes:
    """A test message: its sequence number and CLOCK_MONOTONIC send time, padded."""
    head = b"%010d %020d " % (seq, time.monotonic_ns())
    return head + b"." * max(0, size - len(head))


def parse_stamp(payload: bytes) -> tuple[int, int]:
    return int(payload[:10]), int(payload[11:31])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of a socket (1 established, 7 close, 8 close-wait...)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


class Sources:
    """Round-robin client source addresses on the loopback range."""

    def __init__(self, first: int = 2, last: int = 254) -> None:
        self._cycle = itertools.cycle([f"127.0.0.{i}" for i in range(first, last + 1)])

    def socket(self, rcvbuf: int | None = None, maxseg: int | None = None) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if maxseg is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, maxseg)
        sock.bind((next(self._cycle), 0))
        return sock


# -- one connection ------------------------------------------------------------------

Checker = Callable[["Conn", int, bytes], None]


class Conn:
    """One client socket and what happened on it."""

    def __init__(self, swarm: Swarm, kind: str, channel: str, *, send: bytes = b"",
                 after: bytes = b"",
                 rcvbuf: int | None = None, maxseg: int | None = None, drip: int = 1,
                 drip_interval: float = 1.0, check: Checker | None = None,
                 on_open: Callable[[Conn], None] | None = None,
                 on_answer: Callable[[Conn], None] | None = None, tag: Any = None) -> None:
        self.swarm = swarm
        self.kind = kind
        self.channel = channel
        self.tag = tag
        self.sock: socket.socket | None = None
        self.state = CONNECTING
        self.rcvbuf, self.maxseg = rcvbuf, maxseg
        self.out = bytearray()
        self.rbuf = bytearray()
        self.mask = 0
        self.reading = True     # IDLE stops once open
        self.started_at = 0.0
        self.opened_at = 0.0
        self.closed_at = 0.0
        self.reset = False
        self.error: str | None = None
        self.http_status: int | None = None
        self.head = b""
        self.frames: list[tuple[int, bytes]] = []   # RAW: every frame received
        self.close_code: int | None = None
        self.close_reason = b""
        self.close_sent = False
        self.received = 0
        self.next_seq = 0
        self.order_errors = 0
        self.check = check
        # Called once the connection is usable: after the 101 (SUB, IDLE, RAW with a
        # handshake answered 101), or once connected and the first bytes went out (RAW
        # otherwise).
        self.on_open = on_open
        self.on_answer = on_answer  # HTTP: called after each response
        self.drip = drip
        self.drip_interval = drip_interval
        self._drip_left = b""
        self._frag: list[bytes] = []
        self._frag_op = 0
        self.in_window = kind != DRIP
        if kind == RAW:
            self._to_send = send
        elif kind == HTTP:
            self._to_send = b""
        else:   # DRIP: its handshake, then ``send``, all dripped
            self._to_send = handshake_request(f"/{channel}") + send
        self.http_responses: list[tuple[int, bytes]] = []
        self._after = after     # RAW: sent once the 101 has arrived
        self.posted = 0

    # -- life cycle --------------------------------------------------------------

    def start(self) -> None:
        sw = self.swarm
        self.sock = sw.sources.socket(self.rcvbuf, self.maxseg)
        self.started_at = time.monotonic()
        rc = self.sock.connect_ex((HOST, sw.port))
        if rc not in (0, errno.EINPROGRESS):
            self._finish(f"connect: {os.strerror(rc)}")
            return
        sw.conns_by_fd[self.sock.fileno()] = self
        self._want(selectors.EVENT_WRITE)

    def _want(self, mask: int) -> None:
        sock = self.sock
        if sock is None or mask == self.mask:
            return
        sel = self.swarm.sel
        if self.mask == 0:
            sel.register(sock, mask, self)
        elif mask == 0:
            sel.unregister(sock)
        else:
            sel.modify(sock, mask, self)
        self.mask = mask

    def _interest(self) -> None:
        if self.state == CLOSED:
            return
        mask = 0
        if self.state == CONNECTING or self.out:
            mask |= selectors.EVENT_WRITE
        if self.state != CONNECTING and self.reading:
            mask |= selectors.EVENT_READ
        self._want(mask)

    def _connected(self) -> None:
        self.state = HANDSHAKE if self.kind != HTTP else OPEN
        if self.kind == DRIP:
            self._drip_left = self._to_send
            self.swarm.call_later(0, self._drip_step)
        else:
            self.out += self._to_send
        if self.kind == HTTP:
            self.opened_at = time.monotonic()
            self.swarm.window_done(self)

    def drip_more(self, data: bytes, chunk: int) -> None:
        """DRIP: drip ``data`` too, ``chunk`` bytes per step from now on."""
        self.drip = chunk
        idle = not self._drip_left
        self._drip_left += data
        if idle:
            self.swarm.call_later(0, self._drip_step)

    def _drip_step(self) -> None:
        if self.state == CLOSED or not self._drip_left:
            return
        chunk, self._drip_left = self._drip_left[: self.drip], self._drip_left[self.drip :]
        self.out += chunk
        self._flush()
        self._interest()
        if self._drip_left and self.state != CLOSED:
            self.swarm.call_later(self.drip_interval, self._drip_step)

    def on_event(self, mask: int) -> None:
        if self.state == CONNECTING:
            assert self.sock is not None
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._finish(f"connect: {os.strerror(err)}")
                return
            self._connected()
            if self.out and self.state != CLOSED:
                self._flush()
            if self.kind == RAW and self.on_open is not None and self.state != CLOSED:
                self.on_open(self)
                if self.state == CLOSED:
                    return
        elif self.out and mask & selectors.EVENT_WRITE:
            self._flush()
        if mask & selectors.EVENT_READ and self.state != CLOSED:
            self._read()
        self._interest()

    def send(self, data: bytes) -> None:
        if self.state == CLOSED:
            return
        self.out += data
        if self.state != CONNECTING:
            self._flush()
        self._interest()

    def resume_reading(self, record: bool = True) -> None:
        """Start reading again (an IDLE connection); ``record`` keeps frames as RAW does."""
        if record:
            self.kind = RAW
        self.reading = True
        self._interest()

    def _flush(self) -> None:
        assert self.sock is not None
        try:
            n = self.sock.send(self.out)
        except BlockingIOError:
            return
        except OSError as exc:
            self.reset = exc.errno in (errno.ECONNRESET, errno.EPIPE)
            self._finish(f"send: {exc}")
            return
        del self.out[:n]

    def _read(self) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(1 << 18)
        except BlockingIOError:
            return
        except OSError as exc:
            self.reset = exc.errno == errno.ECONNRESET
            self._finish(None if self.reset else f"recv: {exc}")
            return
        if not data:
            self._finish(None)
            return
        self.rbuf += data
        if self.kind == HTTP:
            self._http_responses()
        elif self.state == HANDSHAKE:
            self._handshake()
        if self.state == OPEN and self.kind not in (HTTP, IDLE):
            self._frames()

    # -- what comes back ---------------------------------------------------------

    def _handshake(self) -> None:
        end = self.rbuf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.rbuf[: end + 4])
        self.head = head
        m = re.match(rb"HTTP/1\.1 (\d{3})", head)
        self.http_status = int(m.group(1)) if m else -1
        if self.http_status != 101:
            # An HTTP answer: keep its body in rbuf, read until the server closes.
            self.state = OPEN if self.kind == RAW else HANDSHAKE
            self.reading = True
            if self.kind != RAW:
                self.swarm.window_done(self)
            return
        if header(head, "Sec-WebSocket-Accept") != ACCEPT:
            self.error = f"bad Sec-WebSocket-Accept in {head!r}"
        del self.rbuf[: end + 4]
        self.state = OPEN
        self.opened_at = time.monotonic()
        self.swarm.window_done(self)
        if self.kind == IDLE:
            self.reading = False
        if self._after:
            self.send(self._after)
        if self.on_open is not None and self.kind != RAW:
            self.on_open(self)

    def _frames(self) -> None:
        if self.http_status != 101:
            return  # an HTTP error body, kept whole in rbuf
        for got in parse_frames(self.rbuf):
            if got.masked:
                self.error = "masked frame from the server"
            self._on_frame(got)
            if self.state == CLOSED:
                return

    def _on_frame(self, got: Frame) -> None:
        opcode, payload = got.opcode, got.payload
        if self.kind == RAW:
            self.frames.append((opcode, payload))
            if opcode == OP_CLOSE and self.close_code is None:
                self._record_close(got)
            return
        if opcode == OP_PING:
            self.send(frame(OP_PONG, payload))
            return
        if opcode == OP_PONG:
            return
        if opcode == OP_CLOSE:
            self._record_close(got)
            if not self.close_sent:
                self.close_sent = True
                self.send(frame(OP_CLOSE, payload[:2]))
            return
        if opcode != OP_CONT:
            self._frag_op = opcode
        if not got.fin:
            self._frag.append(payload)
            return
        if self._frag:
            self._frag.append(payload)
            payload = b"".join(self._frag)
            self._frag.clear()
        self.received += 1
        (self.check or self.swarm.check)(self, self._frag_op, payload)

    def _record_close(self, got: Frame) -> None:
        self.close_code = got.close_code
        self.close_reason = got.close_reason

    def _http_responses(self) -> None:
        buf = self.rbuf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            length = int(m.group(1)) if m else 0
            if len(buf) < end + 4 + length:
                return
            status = int(head[9:12])
            self.http_responses.append((status, bytes(buf[end + 4 : end + 4 + length])))
            del buf[: end + 4 + length]
            if self.on_answer is not None:
                self.on_answer(self)

    def post(self, path: str, body: bytes, ctype: str = "text/plain") -> None:
        """HTTP kind: queue a POST on the keep-alive connection (answers pile up in
        ``http_responses``)."""
        self.posted += 1
        self.send(
            b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
            b"Content-Length: %d\r\n\r\n" % (path.encode(), ctype.encode(), len(body)) + body
        )

    # -- ending ------------------------------------------------------------------

    def ws_close(self, code: int = 1000) -> None:
        """Send a close frame; the connection ends when the server closes."""
        self.close_sent = True
        self.reading = True
        self.send(frame(OP_CLOSE, close_payload(code)))

    def abort(self) -> None:
        """Close with SO_LINGER 0: the kernel sends RST at once."""
        if self.sock is not None and self.state != CLOSED:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._finish("aborted by the test")

    def close(self) -> None:
        """A plain close() (FIN, or RST if unread data is left)."""
        self._finish("closed by the test")

    def drain(self) -> int:
        """Read and discard what the kernel holds (for connections that do not read)."""
        got = 0
        while self.sock is not None and self.state != CLOSED:
            try:
                data = self.sock.recv(1 << 18)
            except BlockingIOError:
                break
            except OSError:
                break
            if not data:
                break
            got += len(data)
        return got

    def _finish(self, why: str | None) -> None:
        if self.state == CLOSED:
            return
        was_window = self.in_window and self.state in (CONNECTING, HANDSHAKE)
        self.state = CLOSED
        self.closed_at = time.monotonic()
        if why is not None and not why.endswith("by the test"):
            self.error = self.error or why
        sock = self.sock
        if sock is not None:
            if self.mask:
                self.swarm.sel.unregister(sock)
                self.mask = 0
            self.swarm.conns_by_fd.pop(sock.fileno(), None)
            sock.close()
        if was_window:
            self.swarm.window_done(self)
        self.swarm.closed += 1


class Publisher:
    """Stamped messages over ``POST /publish/<channel>`` on one keep-alive connection, one
    request at a time: a request is sent once the previous one is answered (so publish
    order is send order, and no request is pipelined: a pipelined publish waits for the
    server's next loop iteration, see test_malformed). A message due while one is in
    flight is sent, stamped, when the answer comes; if one is already waiting, the new
    one is skipped (counted in ``skipped``), so a server slower than the rate lowers the
    rate instead of building a backlog."""

    def __init__(self, swarm: Swarm, channel: str = "live", size: int = 64) -> None:
        self.conn = swarm.connect(1, HTTP, on_answer=self._answered)[0]
        self.path = f"/publish/{channel}"
        self.size = size
        self.sent = 0       # requests sent; message i carries sequence number i
        self.due = 0        # messages asked for
        self.skipped = 0

    def publish(self) -> None:
        if self.due - self.sent >= 1:
            self.skipped += 1
            return
        self.due += 1
        self._pump()

    def _pump(self) -> None:
        if self.sent < self.due and self.sent == len(self.conn.http_responses):
            assert self.conn.state == OPEN, f"publisher connection closed: {self.conn.error}"
            self.conn.post(self.path, stamp(self.sent, self.size))
            self.sent += 1

    def _answered(self, conn: Conn) -> None:
        self._pump()

    def done(self) -> bool:
        """Every message asked for was sent and answered."""
        return self.sent == self.due == len(self.conn.http_responses)

    @property
    def answers(self) -> list[int]:
        return [status for status, _ in self.conn.http_responses]

    def describe(self) -> str:
        c = self.conn
        return (f"the publisher to be answered: {self.due} due, {self.sent} sent, "
                f"{len(c.http_responses)} answered (last {c.http_responses[-1:]}), "
                f"connection {c.state} {c.error or ''}")


# -- the loop ------------------------------------------------------------------------


@dataclass(order=True)
class _Timer:
    when: float
    seq: int
    fn: Callable[[], None]


class Swarm:
    """Every client connection of a test, driven by one selector and a timer heap."""

    def __init__(self, port: int, *, window: int = 512) -> None:
        self.port = port
        self.sel = selectors.DefaultSelector()
        self.sources = Sources()
        self.conns_by_fd: dict[int, Conn] = {}
        self.window = window
        self._pending: deque[Conn] = deque()
        self._in_window = 0
        self._timers: list[_Timer] = []
        self._seq = itertools.count()
        self.closed = 0
        self.latencies_ns: list[int] = []
        self.errors: list[str] = []
        self._closed_all = False
        # When the selector last returned: a message's latency is taken at the moment its
        # socket was reported readable, so the client's own work on the other sockets of
        # the same wake-up is not counted as delivery time.
        self.ready_ns = 0

    # -- connections ---------------------------------------------------------------

    def connect(self, n: int, kind: str, channel: str = "live", **opts: Any) -> list[Conn]:
        conns = [Conn(self, kind, channel, **opts) for _ in range(n)]
        self._pending.extend(conns)
        self._start_pending()
        return conns

    def _start_pending(self) -> None:
        while self._pending and self._in_window < self.window:
            c = self._pending.popleft()
            if c.in_window:
                self._in_window += 1
            c.start()

    def window_done(self, conn: Conn) -> None:
        if conn.in_window:
            conn.in_window = False
            self._in_window -= 1

    def check(self, conn: Conn, opcode: int, payload: bytes) -> None:
        """Default message checker: stamped messages, in sequence, latency recorded."""
        try:
            seq, sent = parse_stamp(payload)
        except ValueError:
            self.note_error(f"{conn.channel}: not a stamped message: {payload[:40]!r}")
            return
        self.latencies_ns.append(self.ready_ns - sent)
        if seq != conn.next_seq:
            conn.order_errors += 1
            self.note_error(f"{conn.channel}: got message {seq}, expected {conn.next_seq}")
        conn.next_seq = seq + 1

    def note_error(self, text: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(text)

    # -- timers --------------------------------------------------------------------

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, _Timer(time.monotonic() + delay, next(self._seq), fn))

    def every(self, interval: float, fn: Callable[[], bool | None]) -> None:
        """Call ``fn`` every ``interval`` seconds on a fixed cadence until it returns False."""
        state = {"next": time.monotonic()}

        def tick() -> None:
            if fn() is False:
                return
            now = time.monotonic()
            state["next"] = max(state["next"] + interval, now - interval)
            heapq.heappush(self._timers, _Timer(state["next"], next(self._seq), tick))

        heapq.heappush(self._timers, _Timer(state["next"], next(self._seq), tick))

    def cancel_timers(self) -> None:
        self._timers.clear()

    # -- running -------------------------------------------------------------------

    def step(self, timeout: float) -> None:
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0].when <= now:
            heapq.heappop(timers).fn()
        self._start_pending()
        if timers:
            timeout = min(timeout, max(0.0, timers[0].when - time.monotonic()))
        if not self.conns_by_fd:
            time.sleep(timeout)     # nothing to wait on but the clock (the next timer)
            return
        ready = self.sel.select(timeout)
        self.ready_ns = time.monotonic_ns()
        for key, mask in ready:
            key.data.on_event(mask)
        self._start_pending()

    def run_until(self, pred: Callable[[], bool], timeout: float, what: str | Callable[[], str],
                  ) -> float:
        """Run the loop until ``pred()``; returns the seconds it took."""
        start = time.monotonic()
        deadline = start + timeout
        while not pred():
            now = time.monotonic()
            if now >= deadline:
                text = what() if callable(what) else what
                raise AssertionError(f"timed out after {timeout}s waiting for {text}")
            self.step(min(0.05, deadline - now))
        return time.monotonic() - start

    def run_for(self, seconds: float) -> None:
        """Run the loop for a fixed time (a load phase of a known length)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.step(min(0.05, left))

    def close_all(self) -> None:
        """Reset every connection still open (idempotent)."""
        if self._closed_all:
            return
        self._closed_all = True
        for conn in list(self.conns_by_fd.values()):
            conn.abort()
        for conn in self._pending:
            conn.state = CLOSED
        self._pending.clear()
        self.sel.close()


def states(conns: list[Conn]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in conns:
        out[c.state] = out.get(c.state, 0) + 1
    return out


def all_open(conns: list[Conn]) -> Callable[[], bool]:
    return lambda: all(c.state not in (CONNECTING, HANDSHAKE) for c in conns)


def assert_opened(conns: list[Conn], what: str) -> None:
    bad = [c for c in conns if c.state != OPEN or c.http_status != 101 or c.error]
    assert not bad, (
        f"{len(bad)} of {len(conns)} {what} did not open: "
        f"{[(c.state, c.http_status, c.error) for c in bad[:5]]}"
    )


# -- HTTP (blocking, for metrics and one-off requests) -----------------------------

def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def http_post(port: int, path: str, body: bytes, ctype: str = "text/plain",
              timeout: float = 10.0) -> tuple[int, bytes]:
    conn = HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def metrics(port: int) -> Metrics:
    """GET /metrics and parse it; asserts a 200."""
    status, body = http_get(port, "/metrics")
    assert status == 200, (status, body[:200])
    return Metrics(body.decode())


def poll_until(pred: Callable[[], bool], timeout: float, what: str | Callable[[], str],
               interval: float = 0.05) -> float:
    """Poll a condition (e.g. on /metrics or /proc) until it holds; the seconds it took."""
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start >= timeout:
            text = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout}s waiting for {text}")
        time.sleep(interval)
    return time.monotonic() - start
