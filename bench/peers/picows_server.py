"""Reference broadcast server on picows (Cython WebSocket frames over asyncio)."""

from __future__ import annotations

import asyncio

from common import parse_args, ready
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

channels: dict[str, set[Subscriber]] = {}


class Subscriber(WSListener):
    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        channels.setdefault(self.channel, set()).add(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        # The load client sends every message as one frame.
        if frame.msg_type in (WSMsgType.BINARY, WSMsgType.TEXT):
            data = frame.get_payload_as_bytes()
            for s in channels.get(self.channel, ()):
                if s is not self and s.transport is not None:
                    s.transport.send(frame.msg_type, data)
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        channels.get(self.channel, set()).discard(self)


def factory(request: WSUpgradeRequest) -> Subscriber:
    return Subscriber(request.path.decode().lstrip("/"))


async def main() -> None:
    args = parse_args(__doc__ or "")
    server = await ws_create_server(factory, args.host, args.port, backlog=4096,
                                    enable_auto_pong=True)
    ready("picows", args.port)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
