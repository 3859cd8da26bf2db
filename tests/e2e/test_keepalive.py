"""Keepalive pings, pong timeout and handshake timeout (RFC 6455 section 5.5.2-5.5.3)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest
from websockets.asyncio.client import connect

from tests.support.rawws import OP_CLOSE, OP_PING, RawWebSocket

from .conftest import StartServer
from .helpers import HOST, publish, recv_until_eof, run

FAST_PINGS = {"LIMITS_PING_INTERVAL": 0.5, "LIMITS_PING_TIMEOUT": 0.5, "LIMITS_CLOSE_TIMEOUT": 1}


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


class TestRFC6455Section5_5_2Ping:
    def test_client_that_answers_pings_stays_connected(self, start_server: StartServer) -> None:
        server = start_server(**FAST_PINGS)
        # websockets logs every frame it receives at DEBUG: that is how pings are seen.
        handler = _Collect()
        logger = logging.getLogger(f"e2e.keepalive.{server.port}")
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(handler)

        async def main() -> None:
            async with connect(f"{server.ws_url}/ka", ping_interval=None, logger=logger,
                               open_timeout=10, close_timeout=5) as ws:
                # Staying open for 3 s is the point: wait for a close that must not come.
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(ws.wait_closed(), 3.0)
                r = await asyncio.to_thread(publish, server.port, "ka", "still here", "text/plain")
                assert r.json()["subscribers"] == 1
                async with asyncio.timeout(5):
                    assert await ws.recv() == "still here"

        run(main())
        pings = [m for m in handler.records if m.startswith("< PING")]
        pongs = [m for m in handler.records if m.startswith("> PONG")]
        # 0.5 s interval over 3 s: about six; allow for scheduling slack.
        assert len(pings) >= 3, handler.records
        assert len(pongs) >= len(pings) - 1

    def test_client_that_never_answers_is_closed_1011(self, start_server: StartServer) -> None:
        server = start_server(**FAST_PINGS)
        ws = RawWebSocket.connect(server.port, "/silent")
        try:
            start = time.monotonic()
            frame = ws.recv_frame(timeout=5)
            assert frame is not None
            assert frame.opcode == OP_PING, frame
            frame = ws.recv_frame(timeout=5)
            assert frame is not None
            assert frame.opcode == OP_CLOSE, frame
            assert frame.close_code == 1011, frame
            # We do not answer the close either: close_timeout (1 s) later the TCP ends.
            ws.wait_eof(timeout=5)
            elapsed = time.monotonic() - start
            assert elapsed < 6, elapsed
        finally:
            ws.close()


class TestRFC6455Section5_5_1CloseFrame:
    def test_no_data_frame_follows_the_servers_close_frame(
            self, start_server: StartServer) -> None:
        # "After sending a Close frame, the endpoint MUST NOT send any further data
        # frames." The server closes a silent client (1011) and then waits close_timeout
        # for its answer: a publish in that window must not reach it.
        server = start_server(LIMITS_PING_INTERVAL=0.5, LIMITS_PING_TIMEOUT=0.5,
                              LIMITS_CLOSE_TIMEOUT=3)
        ws = RawWebSocket.connect(server.port, "/late")
        try:
            while (frame := ws.recv_frame(timeout=5)) is not None:
                if frame.opcode == OP_CLOSE:
                    break
            assert frame is not None and frame.close_code == 1011, frame
            r = publish(server.port, "late", "after the close", "text/plain")
            assert r.status == 200
            assert r.json()["subscribers"] == 0, "a closing connection is still subscribed"
            rest = []
            while (frame := ws.recv_frame(timeout=5)) is not None:
                rest.append(frame)
            assert not rest, f"frames after the close frame: {rest}"
        finally:
            ws.close()


class TestHandshakeTimeout:
    def test_silent_connection_is_closed(self, start_server: StartServer) -> None:
        server = start_server(LIMITS_HANDSHAKE_TIMEOUT=0.5)
        with socket.create_connection((HOST, server.port), timeout=5) as sock:
            start = time.monotonic()
            data = recv_until_eof(sock, timeout=5)
            elapsed = time.monotonic() - start
        assert data == b""  # closed without a response
        assert 0.4 <= elapsed < 3.0, elapsed

    def test_incomplete_request_is_closed(self, start_server: StartServer) -> None:
        server = start_server(LIMITS_HANDSHAKE_TIMEOUT=0.5)
        with socket.create_connection((HOST, server.port), timeout=5) as sock:
            sock.sendall(b"GET /news HTTP/1.1\r\nHost: x\r\n")  # never finished
            start = time.monotonic()
            recv_until_eof(sock, timeout=5)
            assert time.monotonic() - start < 3.0
