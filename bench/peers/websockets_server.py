"""Reference broadcast server on the `websockets` library (asyncio implementation)."""

from __future__ import annotations

import asyncio

from common import parse_args, ready
from websockets.asyncio.server import ServerConnection, broadcast, serve

channels: dict[str, set[ServerConnection]] = {}


async def handler(ws: ServerConnection) -> None:
    name = ws.request.path.lstrip("/") if ws.request else ""
    subs = channels.setdefault(name, set())
    subs.add(ws)
    try:
        async for message in ws:
            broadcast([s for s in subs if s is not ws], message)
    finally:
        subs.discard(ws)


async def main() -> None:
    args = parse_args(__doc__ or "")
    async with serve(handler, args.host, args.port, compression=None, max_size=2**24,
                     backlog=4096, ping_interval=None) as server:
        ready("websockets", args.port)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
