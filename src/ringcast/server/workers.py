"""One worker per core: the supervisor that forks them.

The supervisor binds nothing but a placeholder for the port (so ``port = 0``
resolves once for everyone), forks the workers, forwards SIGTERM/SIGINT/SIGHUP
to them and restarts one that dies, with backoff, logging why. Each worker
makes its own ring after the fork (SINGLE_ISSUER rings belong to the task that
made them) and its own ``SO_REUSEPORT`` listener, so the kernel spreads
connections over workers. How workers reach each other: :mod:`.peers`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from ringcast.server import sdnotify

log = logging.getLogger("ringcast")

RESTART_MIN, RESTART_MAX = 0.5, 10.0
PR_SET_PDEATHSIG = 1    # linux/prctl.h


# -- the supervisor ---------------------------------------------------------

@dataclass
class _Slot:
    pid: int = 0
    failures: int = 0
    restart_at: float | None = None
    started: float = 0.0


def _die_with_parent() -> None:
    """Drain and exit (SIGTERM) if the supervisor dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def worker_count(setting: int | str) -> int:
    """``"auto"``: one per CPU this process may run on (taskset, cgroup cpusets)."""
    return len(os.sched_getaffinity(0)) if setting == "auto" else int(setting)


def _exit_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"killed by {signal.Signals(sig).name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


WorkerMain = Callable[[int, str, Callable[[], None]], int]


def supervise(count: int, run_worker: WorkerMain, stop_seconds: float,
              on_ready: Callable[[], object] = lambda: None) -> int:
    """Fork ``count`` workers running ``run_worker(index, token, ready)``; restart the dead.

    A worker calls ``ready()`` once it listens and is linked to every other
    worker; ``on_ready`` runs when all have (systemd's READY=1), so nothing
    published after that can miss a worker. Returns 0 when every worker
    stopped cleanly after SIGTERM/SIGINT. A signal is forwarded to every worker as it came
    (SIGINT skips the workers' lame duck); ``stop_seconds`` is the longest a stop may take
    (lame duck and drain), after which, and 5 s more, a worker still there is killed.
    """
    token = f"ringcast-{os.getpid()}"
    slots = [_Slot() for _ in range(count)]
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    ready_r, ready_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    ready: set[int] = set()
    pending: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        pending.append(signum)

    signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, on_signal)

    def spawn(i: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                os.close(rfd)
                os.close(wfd)
                os.close(ready_r)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                _die_with_parent()
                code = run_worker(i, token, lambda: _say_ready(ready_w, i))
            except BaseException:
                log.exception("worker %d crashed", i)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        slots[i] = _Slot(pid=pid, failures=slots[i].failures, started=time.monotonic())

    for i in range(count):
        spawn(i)
    stopping = False
    stop_deadline = 0.0
    exit_code = 0
    while True:
        now = time.monotonic()
        # Reap children.
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                break
            for i, s in enumerate(slots):
                if s.pid != pid:
                    continue
                s.pid = 0
                if stopping or status == 0:
                    # Exit 0 means it drained after a SIGTERM of its own (systemd
                    # signals the whole cgroup, unless KillMode=mixed): not a crash.
                    if status != 0:
                        exit_code = 1
                        log.warning("worker %d %s while stopping", i, _exit_text(status))
                    else:
                        log.info("worker %d stopped", i)
                    break
                # A worker that lived a while had a fresh start: reset its backoff.
                if now - s.started > 30:
                    s.failures = 0
                delay = min(RESTART_MIN * 2 ** s.failures, RESTART_MAX)
                s.failures += 1
                s.restart_at = now + delay
                log.error("worker %d (pid %d) %s; restarting in %.1fs", i, pid,
                          _exit_text(status), delay)
        if all(s.pid == 0 and (stopping or s.restart_at is None) for s in slots):
            break   # every worker stopped cleanly
        if stopping and now > stop_deadline:
            for s in slots:
                if s.pid:
                    os.kill(s.pid, signal.SIGKILL)
            exit_code = 1
        # Signals.
        while pending:
            signum = pending.pop(0)
            if signum == signal.SIGCHLD:
                continue
            if signum in (signal.SIGTERM, signal.SIGINT) and not stopping:
                sdnotify.stopping()
                stopping = True
                stop_deadline = now + stop_seconds + 5
                log.info("stopping %d workers", sum(1 for s in slots if s.pid))
            for s in slots:
                if s.pid:
                    os.kill(s.pid, signum)
        if not stopping:
            for i, s in enumerate(slots):
                if s.pid == 0 and s.restart_at is not None and s.restart_at <= now:
                    s.restart_at = None
                    spawn(i)
        waits = [s.restart_at - now for s in slots if s.restart_at is not None and not stopping]
        timeout = max(0.0, min([1.0, *waits]))
        try:
            readable, _, _ = select.select([rfd, ready_r], [], [], timeout)
            if ready_r in readable and len(ready) < count:
                ready.update(os.read(ready_r, 512))
                if len(ready) == count:
                    on_ready()
            while True:
                os.read(rfd, 512)
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno != errno.EINTR:
                raise
    signal.set_wakeup_fd(-1)
    for fd in (rfd, wfd, ready_r, ready_w):
        os.close(fd)
    return exit_code


def _say_ready(fd: int, index: int) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, bytes([index % 256]))
