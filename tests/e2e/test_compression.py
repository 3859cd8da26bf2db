"""permessage-deflate end to end (RFC 7692): real clients, compressed once per message.

The websockets library offers the extension by default (as browsers do) and inflates what
it gets; the raw client reads the frames as they travel, RSV1 and all; headless Chromium
(Debian's ``chromium``; the test fails without it, CI installs it) is the browser.
"""

from __future__ import annotations

import asyncio
import json
import signal
import zlib
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.sync.client import connect as sync_connect

from tests.support.chromium import INSTALL_HINT, Browser, chromium_path
from tests.support.rawws import OP_BINARY, OP_CLOSE, OP_TEXT, RSV1, RawWebSocket, frame

from .conftest import StartServer
from .helpers import TIMEOUT, metrics, publish, run
from .server import ServerProcess
from .test_pubsub import clients, recv_n
from .test_reload import wait_for_log

OFFER = "permessage-deflate; client_max_window_bits"  # what Chrome sends
FEED = json.dumps({"symbol": "ABC", "quotes": [{"bid": 100 + i, "ask": 101 + i, "size": 7}
                                               for i in range(40)]})


def inflate(payload: bytes) -> bytes:
    """A message compressed on its own (server_no_context_takeover), as a client reads it."""
    return zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")


def test_a_browsers_offer_gets_messages_compressed_once_and_short_ones_as_they_are(
        server: ServerProcess) -> None:
    with RawWebSocket.connect(server.port, "/feed", Sec_WebSocket_Extensions=OFFER) as ws:
        assert ws.deflate
        assert publish(server.port, "feed", FEED, "application/json").status == 200
        got = ws.recv_frame()
        assert got is not None
        assert (got.opcode, got.rsv) == (OP_TEXT, RSV1)
        assert len(got.payload) < len(FEED) // 3
        assert inflate(got.payload) == FEED.encode()
        assert publish(server.port, "feed", b"tiny", "application/octet-stream").status == 200
        short = ws.recv_frame()
        assert short is not None
        assert (short.opcode, short.rsv, short.payload) == (OP_BINARY, 0, b"tiny")


def test_subscribers_with_and_without_the_extension_share_a_channel(
        server: ServerProcess) -> None:
    """Every subscriber gets every message; each message is compressed once, for all
    twenty that agreed, not once per subscriber."""
    sent = [FEED.replace("ABC", f"S{i:02d}") for i in range(10)]

    async def main() -> None:
        async with clients(f"{server.ws_url}/q", 20) as deflating, \
                clients(f"{server.ws_url}/q", 5, compression=None) as plain:
            assert all(ws.response is not None and "permessage-deflate" in
                       ws.response.headers.get("Sec-WebSocket-Extensions", "")
                       for ws in deflating)
            assert metrics(server.port).value("ringcast_subscribers_compressed") == 20
            before = metrics(server.port).value("ringcast_compressed_messages_total")
            for m in sent:
                assert publish(server.port, "q", m, "application/json").status == 200
            got = await asyncio.gather(*(recv_n(ws, len(sent)) for ws in deflating + plain))
            assert all(received == sent for received in got)
            after = metrics(server.port)
            assert after.value("ringcast_compressed_messages_total") - before == len(sent)
            assert after.value("ringcast_compression_out_bytes_total") < \
                after.value("ringcast_compression_in_bytes_total") / 3

    run(main())


def test_a_clients_compressed_messages_are_published(server: ServerProcess) -> None:
    async def main() -> None:
        async with clients(f"{server.ws_url}/up", 1) as (pub,), \
                clients(f"{server.ws_url}/up", 1, compression=None) as (sub,):
            text, blob = "x" * 10_000, bytes(range(256)) * 40
            await pub.send(text)
            await pub.send(blob)
            assert await recv_n(sub, 2) == [text, blob]

    run(main())


def test_a_deflate_bomb_ends_with_1009_and_costs_nobody_else_a_message(
        start_server: StartServer) -> None:
    server = start_server(LIMITS_MAX_MESSAGE_SIZE=65536)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = (c.compress(b"\0" * 50_000_000) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]  # ~50 KB
    with RawWebSocket.connect(server.port, "/b", Sec_WebSocket_Extensions=OFFER) as attacker, \
            RawWebSocket.connect(server.port, "/b") as bystander:
        attacker.send(frame(OP_BINARY, bomb, rsv=RSV1))
        close = attacker.recv_frame()
        assert close is not None
        assert (close.opcode, close.close_code) == (OP_CLOSE, 1009)
        assert publish(server.port, "b", "still here", "text/plain").status == 200
        got = bystander.recv_frame()
        assert got is not None
        assert got.payload == b"still here"
    refused = metrics(server.port).value("ringcast_refusals_total",
                                         reason="message_too_big")
    assert refused == 1


@pytest.mark.parametrize("workers", [1, 2], ids=["single", "supervisor"])
def test_compression_off_names_no_extension(start_server: StartServer, workers: int) -> None:
    server = start_server(COMPRESSION_ENABLED="false", SERVER_WORKERS=workers)

    async def main() -> None:
        async with connect(f"{server.ws_url}/off", open_timeout=10) as ws:
            assert ws.response is not None
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            assert publish(server.port, "off", FEED, "application/json").status == 200
            assert await recv_n(ws, 1) == [FEED]

    run(main())


def test_with_workers_every_compressed_subscriber_gets_every_message(
        start_server: StartServer) -> None:
    """A message published on one worker reaches the others' subscribers as a frame;
    each worker compresses it for its own."""
    server = start_server(SERVER_WORKERS=2)
    sent = [FEED.replace("ABC", f"W{i}") for i in range(5)]

    async def main() -> None:
        async with clients(f"{server.ws_url}/w", 16) as subs, \
                clients(f"{server.ws_url}/w", 1) as (pub,):
            for m in sent:
                await pub.send(m)
            got = await asyncio.gather(*(recv_n(ws, len(sent)) for ws in subs))
            assert all(received == sent for received in got)

    run(main())


def test_a_real_browser_negotiates_and_reads_compressed_text_and_binary(
        start_server: StartServer) -> None:
    """Headless Chromium (Debian's ``chromium``): it offers permessage-deflate, ringcast
    agrees, and what the page receives is what was published, compressed on the wire; what
    the page sends compressed is published inflated."""
    chromium = chromium_path()
    if chromium is None:
        pytest.fail(f"chromium is not installed: {INSTALL_HINT}")
    server = start_server()
    base = f"127.0.0.1:{server.port}"
    blob = bytes(range(256)) * 16  # 4 KiB, compressible
    with Browser(chromium) as browser, \
            sync_connect(f"ws://{base}/page", open_timeout=TIMEOUT, compression=None) as sub:
        page = browser.open(f"http://{base}/healthz")  # any page of the same origin
        page.evaluate(f"""new Promise((resolve, reject) => {{
            const ws = new WebSocket("ws://{base}/page");
            ws.binaryType = "arraybuffer";
            window.got = [];
            ws.onmessage = (e) => window.got.push(typeof e.data === "string"
                ? {{text: e.data}} : {{binary: Array.from(new Uint8Array(e.data))}});
            ws.onopen = () => {{ window.ws = ws; resolve(true); }};
            ws.onerror = () => reject(new Error("the WebSocket failed"));
        }})""")
        assert "permessage-deflate" in page.evaluate("window.ws.extensions")
        assert metrics(server.port).value("ringcast_subscribers_compressed") == 1
        before = metrics(server.port).value("ringcast_compressed_messages_total")
        assert publish(server.port, "page", FEED, "application/json").status == 200
        assert publish(server.port, "page", blob, "application/octet-stream").status == 200
        assert sub.recv(timeout=TIMEOUT) == FEED
        assert sub.recv(timeout=TIMEOUT) == blob
        page.wait_for("window.got.length === 2", timeout=TIMEOUT)
        assert page.evaluate("window.got") == [{"text": FEED}, {"binary": list(blob)}]
        assert metrics(server.port).value("ringcast_compressed_messages_total") - before == 2
        # Chromium compresses what it sends once the extension is agreed.
        page.evaluate("window.ws.send('from the browser '.repeat(500))")
        assert sub.recv(timeout=TIMEOUT) == "from the browser " * 500


def test_a_reload_turns_compression_off_for_new_connections_only(tmp_path: Path) -> None:
    config = tmp_path / "ringcast.toml"
    config.write_text("[compression]\nenabled = true\n")
    server = ServerProcess.spawn({}, config=str(config))
    server.wait_listening()
    try:
        with RawWebSocket.connect(server.port, "/r", Sec_WebSocket_Extensions=OFFER) as before:
            assert before.deflate
            config.write_text("[compression]\nenabled = false\nlevel = 9\n")
            server.proc.send_signal(signal.SIGHUP)
            wait_for_log(server, "reload: applied")
            with RawWebSocket.connect(server.port, "/r",
                                      Sec_WebSocket_Extensions=OFFER) as after:
                assert not after.deflate
                assert publish(server.port, "r", FEED, "application/json").status == 200
                old, new = before.recv_frame(), after.recv_frame()
                assert old is not None and new is not None
                assert old.rsv == RSV1 and inflate(old.payload) == FEED.encode()
                assert (new.rsv, new.payload) == (0, FEED.encode())
    finally:
        server.stop()
        server.cleanup()
