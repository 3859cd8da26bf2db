"""Clients for the end-to-end tests: HTTP and metrics, all with deadlines.

The raw WebSocket client and the bytes it sends come from tests.support.rawws. Nothing
here sleeps hoping something happened: every wait is on a socket (or on a condition
polled against a deadline) and fails with what it waited for.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from http.client import HTTPConnection
from typing import Any, TypeVar

from tests.support.metrics import Metrics

# Re-exported: the tests wait with it alongside these clients.
from tests.support.waiting import wait_until as wait_until  # noqa: PLC0414

T = TypeVar("T")

HOST = "127.0.0.1"
TIMEOUT = 10.0


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run a coroutine to completion on a fresh event loop, bounded in time."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


# -- HTTP ---------------------------------------------------------------------------


@dataclass
class HttpResponse:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    closed: bool  # the server closed the connection after the response

    def json(self) -> Any:
        return json.loads(self.body)


def http(port: int, method: str, path: str, body: bytes = b"", *,
         headers: dict[str, str] | None = None, timeout: float = TIMEOUT,
         source: str | None = None) -> HttpResponse:
    """One request on a fresh http.client connection (from address ``source`` if given);
    the response read in full."""
    conn = HTTPConnection(HOST, port, timeout=timeout,
                          source_address=None if source is None else (source, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        return HttpResponse(resp.status, resp.reason, hdrs, data, resp.will_close)
    finally:
        conn.close()


def raw_http(port: int, request: bytes, timeout: float = TIMEOUT) -> HttpResponse:
    """Send raw bytes, read until the server closes; fail if it does not within timeout."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(request)
        data = recv_until_eof(sock, timeout)
    return parse_http_response(data, closed=True)


def recv_until_eof(sock: socket.socket, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            got = b"".join(chunks)
            raise AssertionError(
                f"the server did not close the connection within {timeout}s; got {got!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def parse_http_response(data: bytes, closed: bool) -> HttpResponse:
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete HTTP response head in {data!r}"
    lines = head.decode("latin-1").split("\r\n")
    version, status, *reason = lines[0].split(" ", 2)
    assert version == "HTTP/1.1", lines[0]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return HttpResponse(int(status), reason[0] if reason else "", headers, body, closed)


def publish(port: int, channel: str, body: bytes | str, content_type: str | None = None,
            token: str | None = None) -> HttpResponse:
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = body.encode() if isinstance(body, str) else body
    return http(port, "POST", f"/publish/{channel}", data, headers=headers)


# -- metrics ------------------------------------------------------------------------

def metrics(port: int, source: str | None = None) -> Metrics:
    """GET /metrics (from ``source``, when given) and parse it; asserts a 200."""
    resp = http(port, "GET", "/metrics", source=source)
    assert resp.status == 200, resp
    return Metrics(resp.body.decode())
