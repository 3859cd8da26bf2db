"""Reference broadcast server on aiohttp (WebSocket subscribe/publish, HTTP publish)."""

from __future__ import annotations

from aiohttp import WSMsgType, web
from common import parse_args, ready

channels: dict[str, set[web.WebSocketResponse]] = {}


async def subscribe(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False, max_msg_size=2**24, autoping=True)
    await ws.prepare(request)
    subs = channels.setdefault(request.match_info["channel"], set())
    subs.add(ws)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                for s in list(subs):
                    if s is not ws and not s.closed:
                        await s.send_bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                for s in list(subs):
                    if s is not ws and not s.closed:
                        await s.send_str(msg.data)
    finally:
        subs.discard(ws)
    return ws


async def publish(request: web.Request) -> web.Response:
    body = await request.read()
    subs = channels.get(request.match_info["channel"], set())
    for s in list(subs):
        if not s.closed:
            await s.send_bytes(body)
    return web.Response(text="ok")


def main() -> None:
    args = parse_args(__doc__ or "")
    app = web.Application(client_max_size=2**24)
    app.router.add_post("/publish/{channel}", publish)
    app.router.add_get("/{channel}", subscribe)
    ready("aiohttp", args.port)
    web.run_app(app, host=args.host, port=args.port, backlog=4096, print=None,
                access_log=None)


if __name__ == "__main__":
    main()
