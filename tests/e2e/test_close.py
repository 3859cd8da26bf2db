"""Closing (RFC 6455 section 7), shutdown, and the message size limit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK

from tests.support.rawws import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_TEXT,
    RawWebSocket,
    close_payload,
)

from .conftest import StartServer
from .helpers import (
    run,
)
from .server import ServerProcess

OPEN: dict[str, Any] = {
    "ping_interval": None,
    "open_timeout": 10,
    "close_timeout": 5,
    "max_size": None,
}


class TestRFC6455Section7_1ClosingHandshake:
    def test_client_close_1000_is_echoed(self, server: ServerProcess) -> None:
        async def main() -> None:
            ws = await connect(f"{server.ws_url}/bye", **OPEN)
            await asyncio.wait_for(ws.close(1000, "done"), 10)
            assert ws.protocol.close_rcvd is not None
            assert ws.protocol.close_rcvd.code == 1000
            assert ws.protocol.close_sent is not None
            assert ws.protocol.close_sent.code == 1000

        run(main())

    def test_server_closes_tcp_after_the_close_handshake(self, server: ServerProcess) -> None:
        ws = RawWebSocket.connect(server.port, "/bye")
        try:
            ws.send_frame(OP_CLOSE, close_payload(1000, "bye"))
            frame = ws.recv_frame(timeout=5)
            assert frame is not None
            assert frame.opcode == OP_CLOSE
            assert frame.close_code == 1000
            ws.wait_eof(timeout=5)  # the server closes the TCP connection first (7.1.1)
            assert not ws.reset
        finally:
            ws.close()

    def test_close_4000_echoed(self, server: ServerProcess) -> None:
        ws = RawWebSocket.connect(server.port, "/bye")
        try:
            ws.send_frame(OP_CLOSE, close_payload(4000))
            frame = ws.recv_frame(timeout=5)
            assert frame is not None
            assert frame.close_code == 4000
            ws.wait_eof(timeout=5)
        finally:
            ws.close()

    def test_sigterm_closes_every_client_1001(self, start_server: StartServer) -> None:
        server = start_server()

        async def main() -> None:
            conns = await asyncio.gather(
                *(connect(f"{server.ws_url}/ch{i % 3}", **OPEN) for i in range(20)))
            raw = await asyncio.to_thread(RawWebSocket.connect, server.port, "/raw")
            server.terminate()
            for ws in conns:
                with pytest.raises(ConnectionClosedOK):
                    async with asyncio.timeout(10):
                        await ws.recv()
                assert ws.protocol.close_rcvd is not None
                assert ws.protocol.close_rcvd.code == 1001
            frame = await asyncio.to_thread(raw.recv_frame, 10)
            assert frame is not None
            assert frame.opcode == OP_CLOSE
            assert frame.close_code == 1001
            raw.send_frame(OP_CLOSE, close_payload(1001))
            await asyncio.to_thread(raw.wait_eof, 10)
            raw.close()
            assert await asyncio.to_thread(server.wait, 15) == 0

        run(main())
        assert "draining" in server.stderr_text()


class TestMaxMessageSize:
    def test_too_big_closes_1009_and_spares_the_others(self, start_server: StartServer) -> None:
        server = start_server(LIMITS_MAX_MESSAGE_SIZE=1024)

        async def main() -> None:
            async with connect(f"{server.ws_url}/size", **OPEN) as big, \
                    connect(f"{server.ws_url}/size", **OPEN) as pub, \
                    connect(f"{server.ws_url}/size", **OPEN) as sub:
                await big.send(b"x" * 1024)  # at the limit: fine
                async with asyncio.timeout(10):
                    assert await sub.recv() == b"x" * 1024
                    assert await pub.recv() == b"x" * 1024
                await big.send(b"y" * 2000)
                with pytest.raises(ConnectionClosedError):
                    async with asyncio.timeout(10):
                        await big.recv()
                assert big.protocol.close_rcvd is not None
                assert big.protocol.close_rcvd.code == 1009
                await pub.send("after")
                async with asyncio.timeout(10):
                    assert await sub.recv() == "after"  # the 2000-byte one was never published

        run(main())

    def test_too_big_fragmented_message_1009(self, start_server: StartServer) -> None:
        server = start_server(LIMITS_MAX_MESSAGE_SIZE=1024)
        ws = RawWebSocket.connect(server.port, "/size")
        try:
            ws.send_frame(OP_TEXT, b"a" * 600, fin=False)
            ws.send_frame(OP_CONT, b"a" * 600)
            frame = ws.recv_frame(timeout=5)
            assert frame is not None
            assert frame.opcode == OP_CLOSE
            assert frame.close_code == 1009
            ws.wait_eof(timeout=5)
        finally:
            ws.close()

    def test_binary_at_limit_is_fine(self, start_server: StartServer) -> None:
        server = start_server(LIMITS_MAX_MESSAGE_SIZE=1024)
        ws = RawWebSocket.connect(server.port, "/size")
        try:
            ws.send_frame(OP_BINARY, b"z" * 1024)
            ws.send_frame(OP_CLOSE, close_payload(1000))
            frame = ws.recv_frame(timeout=5)
            assert frame is not None
            assert frame.close_code == 1000
        finally:
            ws.close()
