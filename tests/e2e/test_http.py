"""The HTTP side: POST /publish, /healthz, /metrics, errors, channel names, handshake."""

from __future__ import annotations

import asyncio
import platform
import time
from typing import Any

from websockets.asyncio.client import connect

import ringcast
from tests.support.rawws import handshake_request

from .conftest import StartServer
from .helpers import http, metrics, publish, raw_http, run
from .server import ServerProcess

OPEN: dict[str, Any] = {"ping_interval": None, "open_timeout": 10, "close_timeout": 5}


class TestPublishEndpoint:
    def test_text_body_is_a_text_frame_and_other_is_binary(self, server: ServerProcess) -> None:
        async def main() -> None:
            async with connect(f"{server.ws_url}/news", **OPEN) as a, \
                    connect(f"{server.ws_url}/news", **OPEN) as b, \
                    connect(f"{server.ws_url}/elsewhere", **OPEN) as other:
                r1 = await asyncio.to_thread(
                    publish, server.port, "news", "héllo", "text/plain; charset=utf-8")
                r2 = await asyncio.to_thread(
                    publish, server.port, "news", b"\x00\xffbin", "application/octet-stream")
                r3 = await asyncio.to_thread(publish, server.port, "news", b"no-type")
                for r in (r1, r2, r3):
                    assert r.status == 200, r
                    assert r.headers["content-type"].startswith("application/json")
                    assert r.json() == {"channel": "news", "subscribers": 2}
                for ws in (a, b):
                    async with asyncio.timeout(10):
                        assert await ws.recv() == "héllo"
                        assert await ws.recv() == b"\x00\xffbin"
                        assert await ws.recv() == b"no-type"
                # The other channel got none of it: its next message is its own publish.
                r = await asyncio.to_thread(publish, server.port, "elsewhere", "x", "text/plain")
                assert r.json() == {"channel": "elsewhere", "subscribers": 1}
                async with asyncio.timeout(10):
                    assert await other.recv() == "x"

        run(main())

    def test_publish_to_empty_channel_reaches_nobody(self, server: ServerProcess) -> None:
        r = publish(server.port, "nobody-here", "hi", "text/plain")
        assert r.status == 200
        assert r.json() == {"channel": "nobody-here", "subscribers": 0}

    def test_publish_token(self, start_server: StartServer) -> None:
        server = start_server(HTTP_PUBLISH_TOKEN="s3cret")
        missing = publish(server.port, "t", "x", "text/plain")
        assert missing.status == 401
        assert missing.closed
        assert "bearer" in missing.headers.get("www-authenticate", "").lower()
        wrong = publish(server.port, "t", "x", "text/plain", token="nope")
        assert wrong.status == 401
        assert wrong.closed
        right = publish(server.port, "t", "x", "text/plain", token="s3cret")
        assert right.status == 200
        assert right.json() == {"channel": "t", "subscribers": 0}

    def test_keep_alive_serves_several_publishes(self, server: ServerProcess) -> None:
        req = (b"POST /publish/k HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
               b"Content-Length: 1\r\n\r\na")
        last = req.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")
        resp = raw_http(server.port, req + req + last)
        assert resp.status == 200
        assert resp.body.count(b"HTTP/1.1 200 OK") == 2  # the two responses after the first


    def test_pipelined_publishes_are_answered_promptly(self, server: ServerProcess) -> None:
        # Regression: answering one publish releases the next pipelined request,
        # which must be flushed in the same iteration, not after the idle timeout.
        req = (b"POST /publish/k HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
               b"Content-Length: 1\r\n\r\na")
        last = req.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")
        start = time.monotonic()
        resp = raw_http(server.port, req * 4 + last)
        elapsed = time.monotonic() - start
        assert resp.status == 200
        assert resp.body.count(b"HTTP/1.1 200 OK") == 4
        assert elapsed < 0.5, f"5 pipelined publishes took {elapsed:.2f}s"


class TestHealthAndMetrics:
    def test_healthz(self, server: ServerProcess) -> None:
        r = http(server.port, "GET", "/healthz")
        assert r.status == 200
        assert r.body.startswith(b"ok"), r.body

    def test_metrics_prometheus_text(self, server: ServerProcess, backend: str) -> None:
        r = http(server.port, "GET", "/metrics")
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/plain")
        text = r.body.decode()
        for name in ("ringcast_connections", "ringcast_deliveries_total",
                     "ringcast_backend_info"):
            assert f"\n{name}{{" in text or text.startswith(f"{name}{{"), name
        m = metrics(server.port)
        assert m.value("ringcast_backend_info", backend=backend) == 1
        assert m.value("ringcast_build_info", version=ringcast.__version__,
                       python=platform.python_version()) == 1
        # The answering process's own figures (prometheus_client's process collector).
        assert m.value("process_open_fds") > 0
        assert m.value("process_resident_memory_bytes") > 0

    def test_counters_move_after_publishing(self, server: ServerProcess) -> None:
        async def main() -> None:
            async with connect(f"{server.ws_url}/count", **OPEN) as a, \
                    connect(f"{server.ws_url}/count", **OPEN) as b:
                before = await asyncio.to_thread(metrics, server.port)
                assert before.value("ringcast_connections") >= 2
                assert before.value("ringcast_subscribers") >= 2
                for i in range(3):
                    r = await asyncio.to_thread(publish, server.port, "count", f"{i}", "text/plain")
                    assert r.json()["subscribers"] == 2
                for ws in (a, b):
                    async with asyncio.timeout(10):
                        assert [await ws.recv() for _ in range(3)] == ["0", "1", "2"]
                after = await asyncio.to_thread(metrics, server.port)
                assert (after.value("ringcast_messages_published_total", source="http")
                        - before.value("ringcast_messages_published_total", source="http")) == 3
                # 3 messages x 2 subscribers (plus HTTP answers, which count as sends too)
                assert (after.value("ringcast_deliveries_total")
                        - before.value("ringcast_deliveries_total")) >= 6
                assert after.value("ringcast_bytes_out_total") > before.value(
                    "ringcast_bytes_out_total")

        run(main())


class TestRFC9110Errors:
    """RFC 9110 section 15: error statuses, each followed by the server closing."""

    def test_unknown_path_404(self, server: ServerProcess) -> None:
        r = raw_http(server.port, b"GET /no/such/path HTTP/1.1\r\nHost: x\r\n\r\n")
        assert r.status == 404
        assert r.closed
        assert r.headers.get("connection", "").lower() == "close"

    def test_wrong_method_405_with_allow(self, server: ServerProcess) -> None:
        r = raw_http(server.port, b"GET /publish/news HTTP/1.1\r\nHost: x\r\n\r\n")
        assert r.status == 405
        assert r.closed
        assert "POST" in r.headers["allow"]
        r = raw_http(server.port, b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert r.status == 405
        assert "GET" in r.headers["allow"]

    def test_body_over_limit_413(self, start_server: StartServer) -> None:
        server = start_server(LIMITS_MAX_HTTP_BODY=1024)
        ok = publish(server.port, "big", b"x" * 1024)
        assert ok.status == 200
        body = b"x" * 2000
        r = raw_http(server.port, b"POST /publish/big HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        assert r.status == 413
        assert r.closed
        # Chunked: no length announced, the limit is counted as chunks arrive.
        chunk = b"%x\r\n%s\r\n" % (700, b"y" * 700)
        r = raw_http(server.port, b"POST /publish/big HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 2)
        assert r.status == 413
        assert r.closed

    def test_malformed_request_line_400(self, server: ServerProcess) -> None:
        r = raw_http(server.port, b"THIS IS NOT HTTP\r\n\r\n")
        assert r.status == 400
        assert r.closed
        r = raw_http(server.port, b"GET /healthz HTTP/1.1\r\nbad header line\r\n\r\n")
        assert r.status == 400
        assert r.closed


class TestChannelNames:
    def test_bad_channel_name_400_with_reason(self, server: ServerProcess) -> None:
        r = raw_http(server.port, handshake_request("/a%20b"))
        assert r.status == 400
        assert r.closed
        assert b"'%'" in r.body, r.body
        r = raw_http(server.port, handshake_request("/" + "n" * 300))
        assert r.status == 400
        assert b"300 characters" in r.body, r.body
        r = raw_http(server.port, handshake_request("/"))
        assert r.status == 400
        assert b"empty" in r.body, r.body

    def test_bad_channel_name_on_publish_400(self, server: ServerProcess) -> None:
        r = publish(server.port, "a%20b", "x", "text/plain")
        assert r.status == 400
        assert b"not allowed" in r.body

    def test_valid_alphabet_accepted(self, server: ServerProcess) -> None:
        async def main() -> None:
            async with connect(f"{server.ws_url}/room.7@eu-1:user_42", **OPEN) as ws:
                r = await asyncio.to_thread(publish, server.port, "room.7@eu-1:user_42", "x",
                                            "text/plain")
                assert r.json()["subscribers"] == 1
                async with asyncio.timeout(10):
                    assert await ws.recv() == "x"

        run(main())


class TestRFC6455Handshake:
    """RFC 6455 section 4.2.1: a bad opening handshake gets 400 and no upgrade."""

    def test_missing_key_400(self, server: ServerProcess) -> None:
        r = raw_http(server.port, handshake_request("/news", Sec_WebSocket_Key=None))
        assert r.status == 400
        assert r.closed

    def test_bad_key_400(self, server: ServerProcess) -> None:
        r = raw_http(server.port, handshake_request("/news", Sec_WebSocket_Key="tooshort"))
        assert r.status == 400
        assert r.closed

    def test_wrong_version_426(self, server: ServerProcess) -> None:
        r = raw_http(server.port, handshake_request("/news", Sec_WebSocket_Version="8"))
        assert r.status == 426
        assert r.headers.get("sec-websocket-version") == "13"
        assert r.closed
