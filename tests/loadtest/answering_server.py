"""A broadcast server whose answers to HTTP publishes are framed as asked, for the loadtest.

Every way HTTP/1.1 lets a server frame an answer must leave the load tester in
step with its requests. This server speaks HTTP through h11 (server side) and
relays with faulty_server.py's relay (no fault): ``GET /<channel>`` with an
upgrade subscribes, ``POST /publish/<channel>`` publishes and is answered with
a small JSON body, on a keep-alive connection:

  --framing content-length   the body with Content-Length (the default)
  --framing chunked          the body in several chunks (Transfer-Encoding: chunked)
  --keep-alive-header        and ``Connection: keep-alive``, as some servers write
  --split                    every byte of an answer written on its own
  --refuse-every N           every Nth publish (1-based, in arrival order) is not
                             relayed and is answered 503, framed the same way
  --close-first              the first answer says ``Connection: close``; that
                             connection closes after it

Run from the repository root: ``python -m tests.loadtest.answering_server --port 0
[options]``; it prints ``PORT <n>`` and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
from dataclasses import dataclass

import h11

from tests.loadtest.faulty_server import Faults, FaultyServer, serve
from tests.support.rawws import accept_key


@dataclass(frozen=True)
class Answers:
    framing: str = "content-length"
    keep_alive_header: bool = False
    split: bool = False
    refuse_every: int = 0
    close_first: bool = False


class AnsweringServer:
    def __init__(self, answers: Answers) -> None:
        self.answers = answers
        self.relay = FaultyServer(Faults())
        self.publishes = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, h11.RemoteProtocolError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        http = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                http.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request, body = event, bytearray()
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                if any(name == b"upgrade" for name, _ in request.headers):
                    await self._upgrade(http, request, reader, writer)
                    return
                await self._publish(http, request, bytes(body), writer)
                if http.our_state is h11.MUST_CLOSE:
                    return
                http.start_next_cycle()
            else:       # the client closed
                return

    async def _upgrade(self, http: h11.Connection, request: h11.Request,
                       reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accept = accept_key(dict(request.headers)[b"sec-websocket-key"].decode())
        writer.write(http.send(h11.InformationalResponse(status_code=101, headers=[
            ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept),
        ])))
        await writer.drain()
        assert http.trailing_data == (b"", False), "a client sends no frame before the 101"
        await self.relay._websocket(request.target.decode().lstrip("/"), reader, writer)

    async def _publish(self, http: h11.Connection, request: h11.Request, body: bytes,
                       writer: asyncio.StreamWriter) -> None:
        a = self.answers
        self.publishes += 1
        channel = request.target.decode().removeprefix("/publish/")
        status = 200
        if a.refuse_every and self.publishes % a.refuse_every == 0:
            status = 503
        else:
            await self.relay.relay(channel, body, None)
        text = json.dumps({"channel": channel, "publish": self.publishes}).encode()
        headers = [("Content-Type", "application/json")]
        if a.framing == "content-length":
            headers.append(("Content-Length", str(len(text))))
        # else: no length, so h11 frames the body in chunks (the client speaks HTTP/1.1)
        if a.close_first and self.publishes == 1:
            headers.append(("Connection", "close"))
        elif a.keep_alive_header:
            headers.append(("Connection", "keep-alive"))
        out = http.send(h11.Response(status_code=status, headers=headers))
        for i in range(0, len(text), 8):
            out += http.send(h11.Data(data=text[i:i + 8]))
        out += http.send(h11.EndOfMessage())
        if a.split:
            for i in range(len(out)):
                writer.write(out[i:i + 1])
                await writer.drain()
        else:
            writer.write(out)
            await writer.drain()


async def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--framing", choices=["content-length", "chunked"], default="content-length")
    p.add_argument("--keep-alive-header", action="store_true")
    p.add_argument("--split", action="store_true")
    p.add_argument("--refuse-every", type=int, default=0)
    p.add_argument("--close-first", action="store_true")
    a = p.parse_args(argv)
    server = AnsweringServer(Answers(framing=a.framing, keep_alive_header=a.keep_alive_header,
                                     split=a.split, refuse_every=a.refuse_every,
                                     close_first=a.close_first))
    await serve(server.handle, a.host, a.port)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
