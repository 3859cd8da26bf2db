"""Server CPU per delivery: raw subscribers against ringcast.v1 ones, with and without
history (issue 12's "raw subscribers unaffected; with history, and for ringcast.v1
subscribers, <= 1.2x").

One `ringcast serve` per cell, pinned to core 0; the client (this process) on core 1:
``--subscribers`` WebSocket subscribers of one channel (raw: ``/bench``; ringcast.v1: ``/``
plus a subscribe command), and a raw WebSocket publisher sending ``--messages`` text
messages of ``--size`` bytes in bursts of ``--window`` (one write; the next once every
subscriber has the burst). The subscribers are plain asyncio sockets that count
frames (a frame header walk in Python: the client's CPU, not the server's). Server CPU
is /proc utime+stime from the first publish to the last delivery, divided by the
deliveries. Cells interleave, ``--runs`` times:

    raw             raw subscribers, no history
    raw+history     raw subscribers, the channel keeps history
    v1              ringcast.v1 subscribers, no history
    v1+history      ringcast.v1 subscribers, the channel keeps history

    taskset -c 1 .venv/bin/python bench/v1_fanout.py --runs 2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CELLS = {
    "raw": (False, False),
    "raw+history": (False, True),
    "v1": (True, False),
    "v1+history": (True, True),
}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(history: bool, src: Path | None) -> tuple[subprocess.Popen[bytes], int]:
    env = {**os.environ, "RINGCAST_SHUTDOWN_LAME_DUCK": "0",
           "RINGCAST_LIMITS_PING_INTERVAL": "0"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    if history:
        env["RINGCAST_HISTORY_CHANNELS"] = "bench"
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "ringcast", "serve", "--port", "0"],
        env=env, stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stderr is not None
    for line in proc.stderr:
        found = re.search(rb"listening on [\d.]+:(\d+)", line)
        if found:
            # Keep reading its log: a full pipe would stall the server mid-run.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, int(found.group(1))
    raise RuntimeError("the server did not start")


def mask(payload: bytes, opcode: int = 1) -> bytes:
    key = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Subscriber(asyncio.Protocol):
    """Counts the data frames it receives (after its ``subscribed`` reply, for v1)."""

    def __init__(self, request: bytes, v1: bool, progress: asyncio.Event) -> None:
        self.request, self.v1, self.progress = request, v1, progress
        self.buf = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.frames = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            assert buf.startswith(b"HTTP/1.1 101"), bytes(buf[:200])
            del buf[:end + 4]
            self.upgraded.set_result(None)
        at, n = 0, len(buf)
        while n - at >= 2:
            length = buf[at + 1] & 0x7F
            start = at + 2
            if length == 126:
                if n - at < 4:
                    break
                length, start = int.from_bytes(buf[at + 2:at + 4]), at + 4
            if n < start + length:
                break
            self.frames += 1
            at = start + length
        del buf[:at]
        self.progress.set()


async def cell(port: int, pid: int, v1: bool, args: argparse.Namespace) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    progress = asyncio.Event()
    key = base64.b64encode(os.urandom(16)).decode()
    path = "/" if v1 else "/bench"
    offer = "Sec-WebSocket-Protocol: ringcast.v1\r\n" if v1 else ""
    request = (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n").encode()
    subs = []
    for _ in range(args.subscribers):
        _, sub = await loop.create_connection(
            lambda: Subscriber(request, v1, progress), "127.0.0.1", port)
        subs.append(sub)
    await asyncio.gather(*(s.upgraded for s in subs))
    if v1:
        command = mask(json.dumps({"type": "subscribe", "channel": "bench"}).encode())
        for sub in subs:
            assert sub.transport is not None
            sub.transport.write(command)
        while min(s.frames for s in subs) < 1:  # the subscribed replies
            progress.clear()
            await progress.wait()
        for sub in subs:
            sub.frames = 0
    _, publisher = await loop.create_connection(
        lambda: Subscriber(request.replace(path.encode(), b"/bench", 1)
                           .replace(offer.encode(), b""), False, asyncio.Event()),
        "127.0.0.1", port)
    await publisher.upgraded
    assert publisher.transport is not None
    message = mask(b"x" * args.size)
    sent = 0
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    while sent < args.messages:
        # A burst in one write: the server reads it at once and sends each subscriber
        # the burst in one send, whatever the client's pace (a sliding window would make
        # the messages per send, and so the cost per delivery, depend on it).
        burst = min(args.window, args.messages - sent)
        publisher.transport.write(message * burst)
        sent += burst
        while min(s.frames for s in subs) < sent:
            progress.clear()
            await progress.wait()
    took, cpu = time.monotonic() - t0, cpu_seconds(pid) - cpu0
    for sub in [*subs, publisher]:
        assert sub.transport is not None
        sub.transport.close()
    deliveries = args.messages * args.subscribers
    return {"us_per_delivery": cpu / deliveries * 1e6, "deliveries_per_s": deliveries / took}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--cells", default=",".join(CELLS),
                        help="comma-separated subset of: " + ", ".join(CELLS))
    parser.add_argument("--src", type=Path, default=None,
                        help="run the server from this src directory (another build, e.g. "
                             "bench/builds.py's checkout of an older revision)")
    args = parser.parse_args()
    cells = {name: CELLS[name] for name in args.cells.split(",")}
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.subscribers} "
          f"subscribers, {args.messages} messages of {args.size} B, bursts of {args.window}")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in cells}
    for run in range(1, args.runs + 1):
        for name, (v1, history) in cells.items():
            proc, port = start_server(history, args.src)
            try:
                got = asyncio.run(cell(port, proc.pid, v1, args))
            finally:
                proc.terminate()
                proc.wait(15)
            results[name].append(got)
            print(f"run {run} {name:12} {got['us_per_delivery']:.3f} µs server CPU per "
                  f"delivery, {got['deliveries_per_s']:,.0f} deliveries/s", flush=True)
    base = results.get("raw")
    print("\n| cell | run | µs server CPU per delivery | ratio to raw (same run) |")
    print("|---|---|---|---|")
    for name, rows in results.items():
        for run, row in enumerate(rows, 1):
            ratio = (f"{row['us_per_delivery'] / base[run - 1]['us_per_delivery']:.2f}x"
                     if base else "-")
            print(f"| {name} | {run} | {row['us_per_delivery']:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
