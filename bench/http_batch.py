"""Server CPU per message published with the batch form, ``POST /publish``.

N requests of B text messages (64 B each) on one keep-alive connection, spread over C
channels with one raw WebSocket subscriber each (read and discarded, so the server never
sees a slow consumer); the server's CPU is read from /proc before and after.

    taskset -c 0 ringcast serve --port 8080 &
    taskset -c 1 .venv/bin/python bench/http_batch.py --port 8080 --server-pid $! \\
        --requests 100 --batch 1000 --channels 100
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import selectors
import socket
import threading
import time
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def subscribe(port: int, channel: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /{channel} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    answer = sock.recv(4096)
    if not answer.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"subscribing to {channel}: {answer[:80]!r}")
    return sock


def discard(socks: list[socket.socket]) -> None:
    sel = selectors.DefaultSelector()
    for sock in socks:
        sel.register(sock, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select(1):
            if not key.fileobj.recv(1 << 20):  # type: ignore[union-attr]
                return


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--server-pid", type=int, required=True)
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--channels", type=int, default=1)
    a = p.parse_args()
    subs = [subscribe(a.port, f"c{c}") for c in range(a.channels)]
    threading.Thread(target=discard, args=(subs,), daemon=True).start()
    body = json.dumps({"messages": [{"channel": f"c{i % a.channels}", "text": "x" * 64}
                                    for i in range(a.batch)]}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", a.port)
    t0, c0 = time.monotonic(), cpu_seconds(a.server_pid)
    for _ in range(a.requests):
        conn.request("POST", "/publish", body, {"Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        if answer.status != 200:
            raise SystemExit(f"POST /publish answered {answer.status}")
    t1, c1 = time.monotonic(), cpu_seconds(a.server_pid)
    n = a.requests * a.batch
    print(f"batch {a.batch} x {a.requests} requests over {a.channels} channels: "
          f"{n / (t1 - t0):,.0f} messages/s, server CPU {(c1 - c0) * 1e6 / n:.2f} µs/message")


if __name__ == "__main__":
    main()
