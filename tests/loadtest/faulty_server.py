"""A deliberately faulty WebSocket broadcast server, for testing the loadtest.

It speaks the same protocol as ringcast: ``GET /<channel>`` with an upgrade
subscribes; a data message from a WebSocket connection, or ``POST
/publish/<channel>``, is relayed to every other subscriber of the channel. The
relay applies faults chosen on the command line, by message index (0-based,
per channel, in the order the server received them), to the subscribers whose
subscription index is a multiple of ``--affect-every``:

  --drop I,J        those messages never reach them
  --duplicate I     sent twice
  --reorder I       I and I+1 swapped
  --corrupt I       the last payload byte flipped
  --close-after N   after N messages, close them with code 1011

and to everybody (valid, must not count as faults):

  --fragment N      every message split into N frames, a ping after the first
  --split-bytes     every byte of every frame written on its own
  --echo            a publisher gets its own messages back too

A message keeps its opcode: a WebSocket message's first frame's, and for a POST, text
for ``text/*`` and ``application/json`` bodies, binary for the rest (as ringcast does).

And, to everybody, one invalid handshake: ``--bad-accept`` answers with a
wrong Sec-WebSocket-Accept; and ``--refuse-after N`` answers every upgrade after the
first N with 503 (a storm's reconnects never come back).

And, to see what a client did (not faults): ``--slow-from ADDR --slow-seconds S`` holds
back the 101 to upgrades from the source address ADDR for S seconds; ``--events FILE``
writes a line per 101 sent (``upgrade <monotonic ns> <peer address> <peer port> <path>``) and
per message received (``message <monotonic ns>``), as it happens.

Run from the repository root: ``python -m tests.loadtest.faulty_server --port 0
[faults]``; it prints ``PORT <n>`` and serves until SIGTERM/SIGINT. Its frames are
tests.support.rawws's, unmasked as a server's are.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tests.support.rawws import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    accept_key,
    close_payload,
    frame,
    parse_frames,
)


def _ints(text: str) -> set[int]:
    return {int(x) for x in text.split(",") if x.strip()}


@dataclass
class Faults:
    drop: set[int] = field(default_factory=set)
    duplicate: set[int] = field(default_factory=set)
    reorder: set[int] = field(default_factory=set)
    corrupt: set[int] = field(default_factory=set)
    close_after: int = 0
    affect_every: int = 1
    fragment: int = 1
    split_bytes: bool = False
    bad_accept: bool = False
    echo: bool = False
    refuse_after: int = 0
    slow_from: str = ""
    slow_seconds: float = 0.0
    events: str = ""


def server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    return frame(opcode, payload, fin=fin, masked=False)


@dataclass(eq=False)
class Sub:
    index: int
    writer: asyncio.StreamWriter
    held: bytes | None = None          # a message held back for a swap
    received: int = 0
    closed: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class FaultyServer:
    def __init__(self, faults: Faults) -> None:
        self.f = faults
        self.channels: dict[str, list[Sub]] = {}
        self.counts: dict[str, int] = {}
        self.next_index: dict[str, int] = {}
        self.upgrades = 0
        self.events = open(faults.events, "a", buffering=1) if faults.events else None  # noqa: SIM115

    def event(self, *words: object) -> None:
        if self.events is not None:
            self.events.write(" ".join(str(w) for w in words) + "\n")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            if method == "POST" and path.startswith("/publish/"):
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                kind = headers.get("content-type", "")
                text = kind.startswith("text/") or kind.startswith("application/json")
                await self.relay(path[len("/publish/"):], body, None,
                                 OP_TEXT if text else OP_BINARY)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                continue
            if headers.get("upgrade", "").lower() != "websocket":
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
                await writer.drain()
                return
            self.upgrades += 1
            if self.f.refuse_after and self.upgrades > self.f.refuse_after:
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
                await writer.drain()
                return
            key = headers["sec-websocket-key"]
            accept = accept_key(key + "wrong" if self.f.bad_accept else key)
            peer = writer.get_extra_info("peername")
            if self.f.slow_from and peer[0] == self.f.slow_from:
                await asyncio.sleep(self.f.slow_seconds)
            sent_ns = time.monotonic_ns()           # before the 101 can reach the client
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                         + accept.encode() + b"\r\n\r\n")
            await writer.drain()
            self.event("upgrade", sent_ns, peer[0], peer[1], path)
            await self._websocket(path.lstrip("/"), reader, writer)
            return

    async def _websocket(self, channel: str, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        index = self.next_index.get(channel, 0)
        self.next_index[channel] = index + 1
        sub = Sub(index, writer)
        self.channels.setdefault(channel, []).append(sub)
        try:
            parts: list[bytes] = []
            opcode = OP_BINARY
            buf = bytearray()
            while chunk := await reader.read(1 << 16):
                buf += chunk
                for got in parse_frames(buf):
                    if got.opcode == OP_CLOSE:
                        async with sub.lock:
                            if not sub.closed:
                                sub.closed = True
                                writer.write(server_frame(OP_CLOSE, got.payload[:2]))
                                await writer.drain()
                        return
                    if got.opcode == OP_PING:
                        async with sub.lock:
                            writer.write(server_frame(OP_PONG, got.payload))
                        continue
                    if got.opcode in (OP_CONT, OP_TEXT, OP_BINARY):
                        if got.opcode != OP_CONT:
                            opcode = got.opcode
                        parts.append(got.payload)
                        if got.fin:
                            await self.relay(channel, b"".join(parts), sub, opcode)
                            parts = []
        finally:
            self.channels[channel].remove(sub)

    async def relay(self, channel: str, message: bytes, sender: Sub | None,
                    opcode: int = OP_BINARY) -> None:
        f = self.f
        self.event("message", time.monotonic_ns())
        n = self.counts.get(channel, 0)
        self.counts[channel] = n + 1
        for sub in list(self.channels.get(channel, [])):
            if sub.closed or (sub is sender and not f.echo):
                continue
            affected = sub.index % f.affect_every == 0
            if affected and f.close_after and sub.received >= f.close_after:
                sub.closed = True
                async with sub.lock:
                    sub.writer.write(server_frame(OP_CLOSE, close_payload(1011, b"fault")))
                continue
            out: list[bytes] = []
            if not (affected and n in f.drop):
                msg = message
                if affected and n in f.corrupt:
                    msg = message[:-1] + bytes([message[-1] ^ 0xFF])
                if affected and n in f.reorder:
                    sub.held = msg
                else:
                    out.append(msg)
                    if affected and n in f.duplicate:
                        out.append(msg)
            if sub.held is not None and (n - 1) in f.reorder and affected:
                out.append(sub.held)
                sub.held = None
            sub.received += 1
            for m in out:
                await self._send(sub, m, opcode)

    async def _send(self, sub: Sub, message: bytes, opcode: int) -> None:
        f = self.f
        if f.fragment > 1 and len(message) >= f.fragment:
            step = -(-len(message) // f.fragment)
            pieces = [message[i:i + step] for i in range(0, len(message), step)]
            data = (server_frame(opcode, pieces[0], fin=False)
                    + server_frame(OP_PING, b"are you there?"))
            for i, piece in enumerate(pieces[1:], 1):
                data += server_frame(OP_CONT, piece, fin=i == len(pieces) - 1)
        else:
            data = server_frame(opcode, message)
        async with sub.lock:
            if f.split_bytes:
                for i in range(len(data)):
                    sub.writer.write(data[i:i + 1])
                    await asyncio.sleep(0)
            else:
                sub.writer.write(data)
            await sub.writer.drain()


async def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--drop", type=_ints, default=set())
    p.add_argument("--duplicate", type=_ints, default=set())
    p.add_argument("--reorder", type=_ints, default=set())
    p.add_argument("--corrupt", type=_ints, default=set())
    p.add_argument("--close-after", type=int, default=0)
    p.add_argument("--affect-every", type=int, default=1)
    p.add_argument("--fragment", type=int, default=1)
    p.add_argument("--split-bytes", action="store_true")
    p.add_argument("--bad-accept", action="store_true")
    p.add_argument("--echo", action="store_true")
    p.add_argument("--refuse-after", type=int, default=0)
    p.add_argument("--slow-from", default="")
    p.add_argument("--slow-seconds", type=float, default=0.0)
    p.add_argument("--events", default="")
    a = p.parse_args(argv)
    faults = Faults(drop=a.drop, duplicate=a.duplicate, reorder=a.reorder, corrupt=a.corrupt,
                    close_after=a.close_after, affect_every=a.affect_every,
                    fragment=a.fragment, split_bytes=a.split_bytes, bad_accept=a.bad_accept,
                    echo=a.echo, refuse_after=a.refuse_after, slow_from=a.slow_from,
                    slow_seconds=a.slow_seconds, events=a.events)
    await serve(FaultyServer(faults).handle, a.host, a.port)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handle: Handler, host: str, port: int) -> None:
    """Listen on ``host:port`` with ``handle``, print ``PORT <n>`` (what the tests wait
    for), and serve until SIGTERM or SIGINT."""
    srv = await asyncio.start_server(handle, host, port, backlog=1024)
    print(f"PORT {srv.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with srv:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
