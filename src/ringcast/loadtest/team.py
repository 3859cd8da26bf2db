"""A run over several client processes (``--processes N``): one command, one report.

Why: a process may hold only so many open files (20,000 here), and one process reads
only so many deliveries a second. How:

* The lead (the process the user started) forks its followers before it opens a socket
  or a ring. Subscribers are shared out by index (`shares`): each process connects its
  own share, from its own source pairs (`connector.PairPlan`: addresses 127.(k+1).x.y
  for process k, or a slice of the kernel's 127.0.0.x). Publishers live in the lead.
* Start barrier: each follower says "connected" when its share is open (with the time);
  the lead publishes only once every process has, holds ``--hold`` seconds if asked (the
  server's keepalive CPU), and says "go". The report carries each process's time and
  the go's, and checks the one came after the others (``barrier_held``).
* Per message, the lead tells every follower ``(publisher, sequence, timestamp)``
  *before* it sends it (a blocking write; `wire`), and a follower drains what the lead
  told it after each reap and before it scans what it reaped: its scanner knows of
  every message before the server can have delivered it.
* A follower reports each message it is done with (`Scanner.take_done`); the lead
  merges the reports (`Scanner.merge`), so a message leaves the lead's window, counts as
  delivered to every subscriber and gives its time to the last subscriber only when
  every process has resolved it.
* At the end the lead says "finish"; each follower sends its counts, latency buckets,
  connection tallies, storm and CPU ("result") and exits; the lead adds them up.

A follower that fails sends why ("error") and exits 1; the lead stops with that
reason. Every wait is bounded by the run's ``--max-time``.
"""

from __future__ import annotations

import array
import contextlib
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ringcast.loadtest.options import LoadError
from ringcast.loadtest.wire import Wire, WireClosed

__all__ = ["Follower", "Lead", "Share", "fork_followers", "shares"]

STATUS_EVERY = 0.25             # seconds between a follower's status reports


@dataclass(frozen=True)
class Share:
    """One process's part of the run."""

    process: int                # 0: the lead
    processes: int
    first: int                  # global index of its first subscriber
    count: int                  # its subscribers
    total: int                  # subscribers over every process


def shares(total: int, processes: int) -> list[Share]:
    """``total`` subscribers over ``processes``, as evenly as they go."""
    base, extra = divmod(total, processes)
    out, first = [], 0
    for i in range(processes):
        n = base + (i < extra)
        out.append(Share(i, processes, first, n, total))
        first += n
    return out


class Lead:
    """The lead's side: the wires to its followers and what they last said."""

    def __init__(self, wires: list[Wire], pids: list[int]) -> None:
        self.wires = wires
        self.pids = pids
        self.connected: list[dict[str, Any] | None] = [None] * len(wires)
        self.status: list[dict[str, Any]] = [{} for _ in wires]
        self.results: list[dict[str, Any] | None] = [None] * len(wires)

    def poll(self, merge: Callable[[bytes], None]) -> None:
        """Read every follower: merge its done records, keep its status and results."""
        for i, w in enumerate(self.wires):
            try:
                messages = w.receive()
            except WireClosed:
                if self.results[i] is not None:
                    continue
                raise LoadError(f"client process {i + 1} ended before the run did"
                                f"{_exit_status(self.pids[i])}") from None
            for op, value in messages:
                if op == "done":
                    merge(value)
                elif op == "status":
                    self.status[i] = value
                elif op == "connected":
                    self.connected[i] = value
                elif op == "result":
                    self.results[i] = value
                elif op == "error":
                    raise LoadError(f"client process {i + 1} failed: {value}")

    def tell(self, op: str, value: Any = None) -> None:
        for i, w in enumerate(self.wires):
            try:
                w.send(op, value)
            except WireClosed:
                raise LoadError(f"client process {i + 1} ended before the run did"
                                f"{_exit_status(self.pids[i])}") from None

    def published(self, records: array.array[int]) -> None:
        """Messages about to be sent: ``records`` holds (publisher, sequence, timestamp)
        triples. Returns once every follower's socket has them."""
        if records:
            self.tell("publish", records.tobytes())

    def all_connected(self) -> bool:
        return all(c is not None for c in self.connected)

    def all_results(self) -> bool:
        return all(r is not None for r in self.results)

    def follower_sum(self, key: str) -> int:
        return sum(int(s.get(key, 0)) for s in self.status)

    def close(self) -> None:
        """Close the wires; then every follower ends (by itself, or made to)."""
        for w in self.wires:
            w.close()
        deadline = time.monotonic() + 5.0
        for pid in self.pids:
            while True:
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if done:
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.01)


class Follower:
    """A follower's side: the wire to the lead and what the lead said."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.go = False
        self.finish = False
        self.storm = False
        self._next_status = 0.0

    def poll(self, publish: Callable[[int, int, int], None]) -> None:
        """Read the lead; register each message it is about to send with ``publish``."""
        try:
            messages = self.wire.receive()
        except WireClosed:
            raise LoadError("the lead process ended before the run did") from None
        for op, value in messages:
            if op == "publish":
                rec = array.array("Q")
                rec.frombytes(value)
                for i in range(0, len(rec), 3):
                    publish(rec[i], rec[i + 1], rec[i + 2])
            elif op == "go":
                self.go = True
            elif op == "storm":
                self.storm = True
            elif op == "finish":
                self.finish = True

    def report(self, done: bytes, status: Callable[[], dict[str, Any]],
               now: float) -> None:
        """Send the done records (at once: the lead's window waits for them) and, now and
        then, a status for the lead's progress line."""
        if done:
            self.wire.send("done", done)
        if now >= self._next_status:
            self._next_status = now + STATUS_EVERY
            self.wire.send("status", status())
        else:
            self.wire.flush()

    def send(self, op: str, value: Any = None) -> None:
        self.wire.send(op, value)

    def flush_before_exit(self, limit: float) -> None:
        """Block until the lead has taken everything (bounded)."""
        self.wire.blocking_send = True
        self.wire.sock.settimeout(limit)
        with contextlib.suppress(OSError, WireClosed):
            self.wire.flush()


def fork_followers(count: int, body: Callable[[int, Follower], None]) -> Lead:
    """Fork ``count`` followers; follower i (1-based) runs ``body(i, follower)`` and
    exits (0, or 1 after telling the lead why). The lead gets the `Lead`."""
    wires: list[Wire] = []
    pids: list[int] = []
    for i in range(1, count + 1):
        lead_end, follower_end = socket.socketpair()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:                                     # the follower
            lead_end.close()
            for w in wires:
                w.close()
            _follow(i, Follower(Wire(follower_end, blocking_send=False)), body)
        follower_end.close()
        wires.append(Wire(lead_end, blocking_send=True))
        pids.append(pid)
    return Lead(wires, pids)


def _follow(index: int, follower: Follower, body: Callable[[int, Follower], None]) -> None:
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)     # the lead decides when to stop
        body(index, follower)
    except BaseException as exc:
        code = 1
        why = str(exc) if isinstance(exc, LoadError) else "".join(
            traceback.format_exception_only(type(exc), exc)).strip()
        with contextlib.suppress(OSError, WireClosed):
            follower.send("error", why)
    follower.flush_before_exit(5.0)
    os._exit(code)


def _exit_status(pid: int) -> str:
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return ""
    if not done:
        return ""
    if os.WIFSIGNALED(status):
        return f" (killed by {signal.Signals(os.WTERMSIG(status)).name})"
    return f" (exit status {os.WEXITSTATUS(status)})"
