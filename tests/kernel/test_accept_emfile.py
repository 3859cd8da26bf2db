"""Accept after fd exhaustion: ACCEPT_ERROR(EMFILE), then resume_accept() goes on.

The fd limit is lowered in a child process so pytest's own limit is untouched.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ringcast
from ringcast.ringio import Engine

pytestmark = pytest.mark.kernel

CHILD = textwrap.dedent(r"""
    import errno, json, os, resource, socket, sys, time
    from ringcast.ringio import Engine, EventKind, Loop, LoopParams

    engine = Engine[sys.argv[1]]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Lower the limit before the listener is armed: io_uring reads RLIMIT_NOFILE
    # when it prepares the accept, epoll when accept4 runs.
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
    out = {}
    loop = Loop(LoopParams(engine=engine, max_conns=64, sq_entries=64, cq_entries=128,
                           buf_count=64, arena_size=0, data_capacity=1 << 20))
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0)); ls.listen(64)
    port = ls.getsockname()[1]
    lid = loop.listen(ls)

    def wait(pred, what, timeout=5.0):
        events, deadline = [], time.monotonic() + timeout
        while not pred(events):
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}: {events} {loop.stats()}")
            events += loop.reap(0.02)
        return events

    def has(kind):
        return lambda evs: any(e.kind == kind for e in evs)

    clients = [socket.create_connection(("127.0.0.1", port), timeout=5)]
    wait(has(EventKind.ACCEPT), "the first accept")

    fillers = []
    try:
        while True:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        out["fill_errno"] = exc.errno
    os.close(fillers.pop())                      # room for exactly one client socket
    pending = socket.socket()
    pending.settimeout(5)
    pending.connect(("127.0.0.1", port))         # completes in the backlog; no fd left to accept
    clients.append(pending)
    evs = wait(has(EventKind.ACCEPT_ERROR), "ACCEPT_ERROR")
    err = [e for e in evs if e.kind == EventKind.ACCEPT_ERROR][0]
    out["error"] = {"conn": err.conn, "errno": err.res}
    out["lid"] = lid
    out["accepts_while_full"] = sum(e.kind == EventKind.ACCEPT for e in evs)

    # Paused: no accept, and no storm of errors while nothing is resumed.
    quiet, deadline = [], time.monotonic() + 0.3
    while time.monotonic() < deadline:
        quiet += loop.reap(0.02)
    out["while_paused"] = sorted({int(e.kind) for e in quiet})

    for fd in fillers:
        os.close(fd)
    loop.resume_accept(lid)
    evs = wait(has(EventKind.ACCEPT), "the pending connection to be accepted after resume")
    out["resumed_accepts"] = sum(e.kind == EventKind.ACCEPT for e in evs)

    clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    wait(has(EventKind.ACCEPT), "a new connection after resume")
    out["stats"] = loop.stats()
    loop.close()
    for c in clients:
        c.close()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    print(json.dumps(out))
""")


def test_emfile_gives_accept_error_then_resume_accept_accepts_again(engine: Engine) -> None:
    src = str(Path(ringcast.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (src, os.environ.get("PYTHONPATH", "")) if p))
    proc = subprocess.run([sys.executable, "-c", CHILD, engine.name], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"child failed:\n{proc.stdout}\n{proc.stderr}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["fill_errno"] == errno.EMFILE
    assert out["error"] == {"conn": out["lid"], "errno": errno.EMFILE}
    assert out["accepts_while_full"] == 0
    assert out["while_paused"] == [], "accepting must stay stopped until resume_accept()"
    assert out["resumed_accepts"] == 1
    assert out["stats"]["accepts"] == 3
    assert out["stats"]["conns_live"] == 4
