#!/usr/bin/env python3
"""The sans-I/O cost of a storm's handshake and of a publish, for one or more builds.

No socket, no loop: the protocol layer alone, as the runtime calls it for the commonest
requests (``Session.receive_data`` of a whole plain request, and ``publish_done`` for the
publish), and the fast path's whole-request readers beneath it. Best of seven repeats of
100,000 calls each, the builds interleaved ``--rounds`` times (each build in its own
process, pinned to one core), so that the machine's noise falls on all alike.

    .venv/bin/python bench/sansio.py src bench/results/tmp/builds/af98b2c/src --rounds 3

Each argument is a ``src`` directory holding a built ``ringcast`` package (bench/builds.py
leaves one per revision under bench/results/tmp/builds/).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

# The build measured is the one on PYTHONPATH (each measurement is a child process).
from ringcast.config import Config
from ringcast.server.protocol import Session, fast_path
from ringcast.server.settings import protocol_settings

REQUESTS = 100_000
REPEATS = 7


def measure() -> dict[str, float]:
    """The figures of the build this process imports (µs per call)."""
    settings = protocol_settings(Config())
    key = base64.b64encode(os.urandom(16))
    upgrade = (b"GET /storm HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
               b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    publish = (b"POST /publish/pub HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
               b"Content-Type: application/octet-stream\r\nContent-Length: 64\r\n\r\n" +
               b"x" * 64)
    publisher = Session(settings, 0.0, unix_offset=1.0)

    def handshake() -> object:
        return Session(settings, 0.0, unix_offset=1.0).receive_data(upgrade, 0.0)

    def published() -> object:
        publisher.receive_data(publish, 0.0)
        return publisher.publish_done(1, None)

    def best(fn: Callable[[], object]) -> float:
        return min(timeit.repeat(fn, number=REQUESTS, repeat=REPEATS)) / REQUESTS * 1e6

    return {
        "read_upgrade": best(lambda: fast_path.read_upgrade(upgrade, settings, 1.0)),
        "read_publish": best(lambda: fast_path.read_publish(publish, settings)),
        "handshake session (new Session + receive_data)": best(handshake),
        "publish session (receive_data + publish_done)": best(published),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", nargs="+", type=Path, help="a src directory with a built ringcast")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--core", default="0", help="the core each measurement is pinned to")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure()))
        return 0
    best: dict[Path, dict[str, float]] = {}
    for _ in range(args.rounds):
        for src in args.src:
            out = subprocess.run(
                ["taskset", "-c", args.core, sys.executable, __file__, "--child", str(src)],
                env={**os.environ, "PYTHONPATH": str(src.resolve())}, check=True,
                capture_output=True, text=True).stdout
            figures = json.loads(out)
            kept = best.setdefault(src, figures)
            for name, value in figures.items():
                kept[name] = min(kept[name], value)
    names = list(next(iter(best.values())))
    print("| µs per call, best of all rounds | " + " | ".join(str(s) for s in args.src) + " |")
    print("|---|" + "---|" * len(args.src))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{best[s][name]:.2f}" for s in args.src) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
