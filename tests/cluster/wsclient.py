"""Asyncio clients for the cluster tests: one connection that knows which worker it is on.

A `Conn` opens a TCP connection, asks ``GET /healthz`` on it (keep-alive) and
reads ``worker: N`` from the answer: SO_REUSEPORT picks the worker per
connection, and the same connection then stays on that worker, so the test
knows where every client is. The connection can then serve more HTTP requests
(``POST /publish``, ``GET /metrics`` of *that* worker) or upgrade to a
WebSocket and subscribe/publish on a channel.

Plain `asyncio.Protocol`s rather than the websockets library: a thousand of them
open in about a second and parse frames in bulk. Nothing here sleeps hoping:
every wait is on a future or on a condition polled against a deadline.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass

from tests.support.metrics import Metrics
from tests.support.rawws import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    accept_key,
    frame,
    handshake_request,
    new_key,
    parse_frames,
)

# Re-exported: the tests wait with it alongside these clients.
from tests.support.waiting import wait_until as wait_until  # noqa: PLC0414

HOST = "127.0.0.1"
TIMEOUT = 10.0

_live: set[Conn] = set()   # open connections, closed by `close_leftovers` whatever happened


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


class Conn(asyncio.Protocol):
    """HTTP/1.1 keep-alive, then (optionally) a WebSocket, on one connection."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.worker = -1
        self.websocket = False
        self.channel = ""
        self.messages: list[bytes] = []      # payloads of data frames, in arrival order
        self.close_code: int | None = None   # from the server's close frame
        self.lost = asyncio.get_running_loop().create_future()
        self._reply: asyncio.Future[Response] | None = None
        self._head_only = False

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        _live.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        _live.discard(self)
        if self._reply is not None and not self._reply.done():
            self._reply.set_exception(ConnectionError(f"connection lost before a reply: {exc}"))
        if not self.lost.done():
            self.lost.set_result(exc)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.websocket:
            self._frames()
        else:
            self._http()

    # -- HTTP ----------------------------------------------------------------

    def _http(self) -> None:
        if self._reply is None or self._reply.done():
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if status == 101 or self._head_only else int(headers.get("content-length", 0))
        if len(self.buf) < end + 4 + length:
            return
        body = bytes(self.buf[end + 4:end + 4 + length])
        del self.buf[:end + 4 + length]
        if status == 101:
            self.websocket = True
        self._reply.set_result(Response(status, headers, body))
        if self.websocket and self.buf:
            self._frames()

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: dict[str, str] | None = None,
                      timeout: float = TIMEOUT) -> Response:
        hdrs = {"Host": HOST, **(headers or {})}
        if method == "POST":
            hdrs["Content-Length"] = str(len(body))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        return await self._exchange(head.encode() + b"\r\n" + body, timeout)

    async def _exchange(self, request: bytes, timeout: float) -> Response:
        """Send ``request`` and wait for its response."""
        assert self.transport is not None and not self.websocket
        self._reply = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        async with asyncio.timeout(timeout):
            return await self._reply

    async def publish_http(self, channel: str, body: str) -> Response:
        return await self.request("POST", f"/publish/{channel}", body.encode(),
                                  {"Content-Type": "text/plain"})

    async def metrics(self) -> Metrics:
        """This connection's worker's /metrics, parsed; asserts a 200."""
        resp = await self.request("GET", "/metrics")
        assert resp.status == 200, resp
        return Metrics(resp.text)

    async def healthz(self) -> str:
        return (await self.request("GET", "/healthz")).text

    async def upgrade(self, channel: str, timeout: float = TIMEOUT, *,
                      subprotocol: str | None = None) -> None:
        """The handshake on ``/<channel>`` (``""``: ``/``), offering ``subprotocol``."""
        key = new_key()
        offer = {} if subprotocol is None else {"Sec_WebSocket_Protocol": subprotocol}
        resp = await self._exchange(
            handshake_request(f"/{channel}", Sec_WebSocket_Key=key, **offer), timeout)
        assert resp.status == 101, resp
        assert resp.headers.get("sec-websocket-accept") == accept_key(key), resp
        assert resp.headers.get("sec-websocket-protocol") == subprotocol, resp
        self.channel = channel

    # -- WebSocket -----------------------------------------------------------

    def _frames(self) -> None:
        for got in parse_frames(self.buf):
            assert got.fin and not got.masked and not got.rsv, (
                f"the server sends unfragmented, unmasked frames without RSV bits: {got}")
            if got.opcode in (OP_TEXT, OP_BINARY):
                self.messages.append(got.payload)
            elif got.opcode == OP_PING:
                self.send_frame(OP_PONG, got.payload)
            elif got.opcode == OP_CLOSE:
                self.close_code = got.close_code
                self.send_frame(OP_CLOSE, got.payload[:2])
                assert self.transport is not None
                self.transport.close()

    def send_frame(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(frame(opcode, payload))

    def send_text(self, text: str) -> None:
        self.send_frame(OP_TEXT, text.encode())

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def closed(self) -> bool:
        return self.lost.done()

    def texts(self) -> list[str]:
        return [m.decode() for m in self.messages]


async def open_conn(port: int, timeout: float = TIMEOUT) -> Conn:
    """A connection that knows its worker (``GET /healthz`` answered on it)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, conn = await loop.create_connection(Conn, HOST, port)
    text = await conn.healthz()
    m = re.search(r"^worker: (\d+)$", text, re.M)
    assert m, f"no 'worker:' line in /healthz: {text!r}"
    conn.worker = int(m[1])
    return conn


async def open_on_workers(port: int, wanted: dict[int, int], channel: str | None = None,
                          *, parallel: int = 64, timeout: float = 60.0,
                          max_attempts: int | None = None) -> dict[int, list[Conn]]:
    """``wanted[w]`` connections on each worker ``w`` (upgraded to ``channel`` if given).

    Connections that land on a worker that already has enough are closed and
    tried again; the kernel's SO_REUSEPORT hash decides, the test just counts.
    """
    got: dict[int, list[Conn]] = {w: [] for w in wanted}
    reserved = dict.fromkeys(wanted, 0)
    attempts = 0
    limit = max_attempts if max_attempts is not None else 20 * sum(wanted.values()) + 50

    def missing() -> int:
        return sum(max(0, n - reserved[w]) for w, n in wanted.items())

    async def one() -> None:
        nonlocal attempts
        while missing() > 0:
            attempts += 1
            assert attempts <= limit, (
                f"{attempts} connections and still not {wanted} per worker "
                f"(have { {w: len(c) for w, c in got.items()} })")
            conn = await open_conn(port)
            w = conn.worker
            if w not in wanted or reserved[w] >= wanted[w]:
                conn.close()
                continue
            reserved[w] += 1
            if channel is not None:
                await conn.upgrade(channel)
            got[w].append(conn)

    async with asyncio.timeout(timeout):
        await asyncio.gather(*(one() for _ in range(min(parallel, max(1, missing())))))
    return got


async def closing_request(port: int, timeout: float = TIMEOUT) -> int:
    """``GET /healthz`` with ``Connection: close``: the server answers, then closes with a
    flush (its side of the close). Returns the worker that answered."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await reader.read()       # until the server closes
        writer.close()
        await writer.wait_closed()
    m = re.search(rb"^worker: (\d+)$", data, re.M)
    assert m, data
    return int(m[1])


async def open_many(port: int, n: int, channel: str, parallel: int = 64) -> list[Conn]:
    """``n`` subscribers on ``channel``, wherever the kernel puts them."""
    sem = asyncio.Semaphore(parallel)

    async def one() -> Conn:
        async with sem:
            conn = await open_conn(port)
            await conn.upgrade(channel)
            return conn

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def wait_counts(conns: Iterable[Conn], n: int, timeout: float, what: str) -> None:
    """Every connection has received at least ``n`` messages."""
    conns = list(conns)

    def short() -> str:
        lacking = [c for c in conns if len(c.messages) < n]
        sample = lacking[0] if lacking else None
        return (f"{what}: {len(lacking)}/{len(conns)} connections have < {n} messages"
                + (f" (e.g. worker {sample.worker}: {len(sample.messages)}, "
                   f"closed={sample.closed})" if sample else ""))

    await wait_until(lambda: all(len(c.messages) >= n for c in conns), timeout, short)


def close_all(conns: Iterable[Conn]) -> None:
    for c in conns:
        c.close()


async def close_leftovers() -> None:
    """Close every connection still open (a test that failed half-way leaves some)."""
    conns = list(_live)
    for c in conns:
        if c.transport is not None:
            c.transport.abort()
    if conns:
        await asyncio.wait([c.lost for c in conns], timeout=5)


def metric(samples: Metrics, name: str, **labels: str) -> float:
    """``samples.value(name, **labels)``: kept so the cluster tests read as they did."""
    return samples.value(name, **labels)
