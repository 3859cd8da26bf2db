"""A permessage-deflate broadcast server made with the ``websockets`` library, for the loadtest.

``ws://HOST:PORT/<channel>``: every message a connection sends goes to every other
connection of the channel, in the order this server received them, each through that
connection's own permessage-deflate (websockets compresses every message it sends on a
connection that agreed). What the 101 answers is chosen on the command line:

  (default)                 permessage-deflate; server_no_context_takeover
  --context-takeover        permessage-deflate without server_no_context_takeover: the
                            window carries over from message to message
  --server-max-window-bits N  and server_max_window_bits=N
  --decline                 no extension at all (the client's offer is declined)

Run from the repository root: ``python -m tests.loadtest.deflate_server --port 0
[options]``; it prints ``PORT <n>`` and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory


class Broadcast:
    """The channels and their connections."""

    def __init__(self) -> None:
        self.channels: dict[str, list[ServerConnection]] = {}

    async def handle(self, ws: ServerConnection) -> None:
        channel = ws.request.path.lstrip("/") if ws.request is not None else ""
        members = self.channels.setdefault(channel, [])
        members.append(ws)
        try:
            async for message in ws:
                for other in list(members):
                    if other is not ws:
                        with contextlib.suppress(ConnectionClosed):
                            await other.send(message)
        except ConnectionClosed:
            pass
        finally:
            members.remove(ws)


def extensions(a: argparse.Namespace) -> list[ServerExtensionFactory]:
    if a.decline:
        return []
    return [ServerPerMessageDeflateFactory(server_no_context_takeover=not a.context_takeover,
                                           server_max_window_bits=a.server_max_window_bits)]


async def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--context-takeover", action="store_true")
    p.add_argument("--server-max-window-bits", type=int, default=None)
    p.add_argument("--decline", action="store_true")
    a = p.parse_args(argv)
    hub = Broadcast()
    async with serve(hub.handle, a.host, a.port, compression=None, extensions=extensions(a),
                     ping_interval=None, max_size=None, max_queue=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"PORT {port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
