"""Shared by the reference servers: arguments, the fd limit, the ready line.

Every reference server implements ringcast's protocol: a WebSocket to
``/<channel>`` subscribes to the channel; a data message from a connection is
broadcast to every *other* subscriber of its channel (same opcode); where the
library makes it simple, ``POST /publish/<channel>`` broadcasts the body too.
They are what a competent user of each library would write, without tuning
beyond turning off compression (the load client does not ask for it).
"""

from __future__ import annotations

import argparse
import resource


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return args


def ready(name: str, port: int) -> None:
    print(f"READY {name} {port}", flush=True)
