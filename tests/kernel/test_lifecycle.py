"""The loop's own lifecycle: Loop.close() closes every fd the loop owns, is idempotent,
and a closed loop refuses further use (RingioError, EBADF) instead of touching freed
memory."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import ringcast
from ringcast.ringio import Engine

from .helpers import LOCALHOST, Server

pytestmark = pytest.mark.kernel


def test_loop_close_closes_every_owned_fd_and_is_idempotent(
        make_server: Callable[..., Server]) -> None:
    srv = make_server()
    clients = srv.connect(3)
    srv.loop.send(clients[0].conn, b"before")
    srv.received(clients[:1], 6)
    srv.loop.close()
    srv.loop.close()
    for c in clients:
        c.sock.setblocking(True)
        c.sock.settimeout(5)
        assert c.sock.recv(100) == b"", "the accepted socket must be closed with the loop"
    s = socket.socket()
    s.settimeout(5)
    try:
        with pytest.raises(ConnectionRefusedError):
            s.connect((LOCALHOST, srv.port))
    finally:
        s.close()


CHILD = textwrap.dedent(r"""
    import array, json, sys
    from ringcast.ringio import ConnId, Engine, Loop, LoopParams
    loop = Loop(LoopParams(engine=Engine[sys.argv[1]], arena_size=1 << 16))
    loop.close()
    calls = {
        "reap": lambda: loop.reap(0),
        "slot": lambda: loop.slot(b"x"),
        "fanout": lambda: loop.fanout(0, array.array("I", [0]), 1),
        "send": lambda: loop.send(ConnId(0), b"x"),
        "close_connection": lambda: loop.close_connection(ConnId(0)),
        "queued": lambda: loop.queued(ConnId(0)),
        "probe": lambda: loop.probe(),
        "stats": lambda: loop.stats(),
    }
    for name, call in calls.items():
        print(json.dumps({"call": name}), flush=True)   # a crash names the call it was in
        try:
            call()
        except Exception as exc:
            print(json.dumps({"call": name, "raised": type(exc).__name__,
                              "errno": getattr(exc, "errno", None), "message": str(exc)}),
                  flush=True)
        else:
            print(json.dumps({"call": name, "returned": True}), flush=True)
""")
CALLS = ["reap", "slot", "fanout", "send", "close_connection", "queued", "probe", "stats"]


def test_a_closed_loop_raises_instead_of_crashing(engine: Engine) -> None:
    src = str(Path(ringcast.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (src, os.environ.get("PYTHONPATH", "")) if p))
    proc = subprocess.run([sys.executable, "-c", CHILD, engine.name], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, (
        f"the child died (rc {proc.returncode}) after:\n{proc.stdout}{proc.stderr}")
    outcomes = [json.loads(line) for line in proc.stdout.splitlines()]
    results = {o["call"]: o for o in outcomes if len(o) > 1}
    assert list(results) == CALLS, proc.stdout
    for name, outcome in results.items():
        assert outcome == {"call": name, "raised": "RingioError", "errno": errno.EBADF,
                           "message": "[Errno 9] the loop is closed"}, name
