"""Reference broadcast server on socketify (Python bindings of uWebSockets).

uWebSockets has pub/sub built in: a subscriber subscribes to its channel's topic
and ``ws.publish`` sends to every subscriber of the topic but the sender.
"""

from __future__ import annotations

from common import parse_args, ready
from socketify import App, CompressOptions, OpCode


def main() -> None:
    args = parse_args(__doc__ or "")
    app = App()

    def upgrade(res, req, socket_context):  # type: ignore[no-untyped-def]
        res.upgrade(req.get_header("sec-websocket-key"),
                    req.get_header("sec-websocket-protocol"),
                    req.get_header("sec-websocket-extensions"),
                    socket_context, req.get_url().lstrip("/"))

    def on_open(ws):  # type: ignore[no-untyped-def]
        ws.subscribe(ws.get_user_data())

    def on_message(ws, message, opcode):  # type: ignore[no-untyped-def]
        ws.publish(ws.get_user_data(), message, opcode)

    def on_publish(res, req):  # type: ignore[no-untyped-def]
        channel = req.get_url()[len("/publish/"):]
        body = bytearray()

        def on_data(res, chunk, is_end):  # type: ignore[no-untyped-def]
            body.extend(chunk)
            if is_end:
                app.publish(channel, bytes(body), OpCode.BINARY)
                res.end("ok")

        res.on_aborted(lambda res: None)
        res.on_data(on_data)

    app.post("/publish/*", on_publish)
    app.ws("/*", {
        "compression": CompressOptions.DISABLED,
        "max_payload_length": 2**24,
        "idle_timeout": 0,
        "max_backpressure": 2**30,
        "close_on_backpressure_limit": False,
        "upgrade": upgrade,
        "open": on_open,
        "message": on_message,
    })
    app.listen(args.port, lambda config: ready("socketify", args.port))
    app.run()


if __name__ == "__main__":
    main()
