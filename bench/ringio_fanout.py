#!/usr/bin/env python3
"""ringio fan-out microbenchmark (issue 2): server CPU per 1000 deliveries.

Sends 64-byte and 16-KiB frames to 1,000 and 10,000 loopback connections and
measures the CPU (user + sys, getrusage of the sending process over the
measured phase only) it costs per 1000 deliveries, through:

  plain C     a minimal C loop (ringio_fanout.c) compiled at run time with
              cffi: for each frame, for each fd:
              send(fd, frame, len, MSG_DONTWAIT | MSG_NOSIGNAL);
              a socket that refuses (EAGAIN or short) waits for EPOLLOUT and
              then gets the rest of its round in one send(); EAGAINs counted
  epoll       ringio's epoll engine (writes each queued frame at once with
              sendmsg when the socket has room: fanned out one frame at a
              time it is a send()-per-connection-per-frame loop in C)
  io_uring    ringio's io_uring engine (batched SQEs, per-connection queues
              coalesced into one sendmsg when a send completes)

Modes: 1 frame in flight (publish a frame, wait until every receiver has it,
repeat) and 8 in flight (8 frames per round). ringio gets the 8 frames either
joined into one slot per round (what ringcast's server does) or as one slot
per frame (so the coalescing in the per-connection queue shows); the plain
loop makes 8 send() calls per connection.

The receivers live in a forked process (pinned to core 1; the sender to core
0) that drains every client socket with its own epoll loop in C, counts the
bytes per connection and writes one acknowledgement byte to the sender when
every connection has the whole round, so "wait until every receiver has it"
is exact. Each ringio engine gets its own set of connections, shared with a
plain-loop measurement interleaved with it on the same sockets; the ratios
are against that plain measurement. The plain loop also runs once with the 8
frames of a round joined into one send() per connection: a reference for
what coalescing can reach at best, not a baseline.

Noise: the machine these ran on is shared, so each sender and mode is measured
in --slices interleaved slices (order ABC, CBA, ABC...) after one unmeasured
pass, and its figure is the sum over its slices; the detail table lists every
slice so the spread shows.

Bounded: a slice runs whole rounds for about --seconds / --slices (at least one
round); each round waits at most 30 s; the receiver gives up after 60 s idle.

    .venv/bin/python bench/ringio_fanout.py                # the whole grid, ~2.5 min
    .venv/bin/python bench/ringio_fanout.py --conns 1000 --sizes 64 --seconds 0.5
"""

from __future__ import annotations

import argparse
import array
import contextlib
import datetime as dt
import importlib.machinery
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cffi

from ringcast.ringio import Engine, EventKind, Loop, LoopParams

ROUND_TIMEOUT = 30.0        # seconds a round may take before the run fails
RECEIVER_IDLE_MS = 60_000   # the receiver gives up after this long without input
SENDER_CORE, RECEIVER_CORE = 0, 1

C_FILE = Path(__file__).with_suffix(".c")   # the plain sender and the receiver's loop
# What cffi sees of C_FILE (cffi parses declarations, not a C file with its #includes).
C_DECLS = """
typedef struct px px;
px *px_new(const int *fds, int n, int ackfd);
void px_free(px *p);
int px_round(px *p, const char *buf, uint32_t len, uint32_t frames, int timeout_ms);
void px_counters(px *p, uint64_t out[6]);

typedef struct rx rx;
rx *rx_new(const int *fds, int n);
void rx_free(rx *r);
int64_t rx_run(rx *r, uint64_t per_round, int ackfd, int ctlfd, int idle_ms, uint64_t *rounds);
"""


def build_helper() -> tuple[Any, Any]:
    """Compile the C helper with cffi (API mode) into a temp dir and load it."""
    ffi = cffi.FFI()
    ffi.cdef(C_DECLS)
    # Included rather than pasted: the compiler's messages name C_FILE and its lines.
    ffi.set_source("_ringio_fanout_helper", f'#include "{C_FILE.name}"',
                   include_dirs=[str(C_FILE.parent)], extra_compile_args=["-O2"])
    tmp = tempfile.mkdtemp(prefix="ringio-fanout-")
    path = ffi.compile(tmpdir=tmp, verbose=False)
    loader = importlib.machinery.ExtensionFileLoader("_ringio_fanout_helper", path)
    spec = importlib.util.spec_from_file_location("_ringio_fanout_helper", path, loader=loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    shutil.rmtree(tmp, ignore_errors=True)     # loaded: the files are no longer needed
    return mod.ffi, mod.lib


# -- the receiver process ----------------------------------------------------


def receiver_main(ctl: socket.socket, plain_ack: socket.socket, ffi: Any, lib: Any) -> None:
    """Serve the sender's commands: connect, run, close. Exits on EOF."""
    socks: list[socket.socket] = []
    ctx = ffi.NULL
    loop_ack: socket.socket | None = None
    while True:
        msg, fds, _flags, _addr = socket.recv_fds(ctl, 256, 1)
        if not msg:
            return
        cmd = msg.decode().split()
        if cmd[0] == "connect":
            port, n = int(cmd[1]), int(cmd[2])
            loop_ack = socket.socket(fileno=fds[0])
            for _ in range(n):
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=30))
            fd_arr = ffi.new("int[]", [s.fileno() for s in socks])
            ctx = lib.rx_new(fd_arr, len(socks))
            ctl.send(b"ok" if ctx != ffi.NULL else b"error rx_new")
        elif cmd[0] == "run":
            per_round, which = int(cmd[1]), cmd[2]
            ack = plain_ack if which == "plain" else loop_ack
            assert ack is not None
            rounds = ffi.new("uint64_t *")
            got = lib.rx_run(ctx, per_round, ack.fileno(), ctl.fileno(), RECEIVER_IDLE_MS, rounds)
            stop = ctl.recv(256)
            if not stop:
                return
            ctl.send(f"done {got} {rounds[0]}".encode())
        elif cmd[0] == "close":
            lib.rx_free(ctx)
            ctx = ffi.NULL
            for s in socks:
                s.close()
            socks.clear()
            if loop_ack is not None:
                loop_ack.close()
                loop_ack = None
            ctl.send(b"ok")


# -- the sending side --------------------------------------------------------


@dataclass
class Cell:
    """One sender and mode on one set of connections, summed over its slices."""

    conns: int
    size: int
    mode: str                   # "1", "8 joined", "8 separate"; plain also "8"
    sender: str                 # "plain", "epoll", "io_uring"
    sockets: str                # the engine whose connection set it ran on
    rounds: int = 0
    deliveries: int = 0
    wall: float = 0.0
    user: float = 0.0
    sys: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)
    slices: list[float] = field(default_factory=list)   # µs/1000 of each slice

    @property
    def us_per_1000(self) -> float:
        return (self.user + self.sys) / self.deliveries * 1e9

    def per_1000(self, name: str) -> float:
        return self.counters.get(name, 0) / self.deliveries * 1000

    def add(self, rounds: int, deliveries: int, *, wall: float, user: float, sys_: float,
            counters: dict[str, int]) -> None:
        self.rounds += rounds
        self.deliveries += deliveries
        self.wall += wall
        self.user += user
        self.sys += sys_
        for k, v in counters.items():
            self.counters[k] = self.counters.get(k, 0) + v
        self.slices.append((user + sys_) / deliveries * 1e9)


class Receiver:
    def __init__(self, ffi: Any, lib: Any, pin: bool) -> None:
        self.ctl, child_ctl = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.plain_ack, child_ack = socket.socketpair()
        self.pid = os.fork()
        if self.pid == 0:
            code = 0
            try:
                self.ctl.close()
                self.plain_ack.close()
                if pin:
                    os.sched_setaffinity(0, {RECEIVER_CORE})
                receiver_main(child_ctl, child_ack, ffi, lib)
            except BaseException:
                traceback.print_exc()
                code = 1
            os._exit(code)
        child_ctl.close()
        child_ack.close()
        self.ctl.settimeout(120)
        if pin:
            os.sched_setaffinity(0, {SENDER_CORE})

    def command(self, text: str, fds: list[int] | None = None) -> str:
        if fds:
            socket.send_fds(self.ctl, [text.encode()], fds)
        else:
            self.ctl.send(text.encode())
        reply = self.ctl.recv(256).decode()
        if not reply.startswith(("ok", "done")):
            raise RuntimeError(f"receiver: {reply or 'exited'}")
        return reply

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        os.waitpid(self.pid, 0)


def connect(rx: Receiver, n: int, loop_ack_child: socket.socket) -> list[socket.socket]:
    """n loopback connections: the receiver connects, this process accepts."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4096)
    ls.settimeout(30)
    port = ls.getsockname()[1]
    socket.send_fds(rx.ctl, [f"connect {port} {n}".encode()], [loop_ack_child.fileno()])
    loop_ack_child.close()
    socks: list[socket.socket] = []
    deadline = time.monotonic() + 120
    while len(socks) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"accepted only {len(socks)} of {n} connections")
        s, _ = ls.accept()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    ls.close()
    reply = rx.ctl.recv(256).decode()
    if reply != "ok":
        raise RuntimeError(f"receiver: {reply or 'exited'}")
    return socks


class PlainSender:
    name = "plain"
    NAMES = ("sends", "eagain", "partial", "waits", "epoll_ctls", "acks")

    def __init__(self, ffi: Any, lib: Any, fds: list[int], ackfd: int) -> None:
        self.ffi, self.lib = ffi, lib
        self.ctx = lib.px_new(ffi.new("int[]", fds), len(fds), ackfd)
        if self.ctx == ffi.NULL:
            raise RuntimeError("px_new failed")
        self.buf: Any = None
        self.len = self.frames = 0

    def prepare(self, frame: bytes, frames: int, joined: bool) -> None:
        # joined (a reference, not a baseline): the frames of a round in one send().
        self.buf = self.ffi.new("char[]", frame * frames)
        self.len, self.frames = (len(frame) * frames, 1) if joined else (len(frame), frames)

    def round(self) -> None:
        rc = self.lib.px_round(self.ctx, self.buf, self.len, self.frames,
                               int(ROUND_TIMEOUT * 1000))
        if rc < 0:
            raise RuntimeError(f"plain round failed: {os.strerror(-rc)}")

    def counters(self) -> dict[str, int]:
        out = self.ffi.new("uint64_t[6]")
        self.lib.px_counters(self.ctx, out)
        return dict(zip(self.NAMES, (int(x) for x in out), strict=True))

    def close(self) -> None:
        self.lib.px_free(self.ctx)


class RingioSender:
    COUNTERS = ("submits", "sqes", "cqes", "waits", "sends", "short_sends", "coalesced",
                "deliveries", "drops", "zc_sends")

    def __init__(self, engine: Engine, socks: list[socket.socket], ack: socket.socket) -> None:
        self.name = "io_uring" if engine is Engine.IO_URING else "epoll"
        self.loop = Loop(LoopParams(engine=engine, max_conns=len(socks) + 16))
        self.ids = array.array("I", [self.loop.adopt(s) for s in socks])
        self.ack_id = self.loop.adopt(ack)
        self.acks = 0
        self.payloads: list[bytes] = []

    def prepare(self, frame: bytes, frames: int, joined: bool) -> None:
        self.payloads = [frame * frames] if joined else [frame] * frames

    def round(self) -> None:
        loop, ids, n = self.loop, self.ids, len(self.ids)
        for data in self.payloads:
            slot = loop.slot(data)
            loop.fanout(slot, ids, n)
            loop.release(slot)
        target = self.acks + 1
        deadline = time.monotonic() + ROUND_TIMEOUT
        while self.acks < target:
            for ev in loop.reap(1.0):
                if ev.kind == EventKind.DATA and ev.conn == self.ack_id:
                    self.acks += len(ev.data)
                elif ev.kind in (EventKind.HUP, EventKind.OVERFLOW):
                    raise RuntimeError(f"{self.name}: unexpected event {ev}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: round timed out")

    def counters(self) -> dict[str, int]:
        st = self.loop.stats()
        return {k: st[k] for k in self.COUNTERS}

    def close(self) -> None:
        self.loop.close()


def cpu() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


def measure(rx: Receiver, sender: PlainSender | RingioSender, cell: Cell, *, frames: int,
            seconds: float) -> None:
    """One slice: warm up, then run rounds for about ``seconds``; add to ``cell``."""
    frame = bytes((i * 7 + 1) & 0xFF for i in range(cell.size))
    sender.prepare(frame, frames, cell.mode == "8 joined")
    per_round = cell.size * frames
    rx.ctl.send(f"run {per_round} {'plain' if sender.name == 'plain' else 'loop'}".encode())
    # Warm up: socket buffers autotune, slots and queues reach their size.
    warm = 0
    t_end = time.monotonic() + min(0.1, seconds / 4)
    while warm < 1 or (time.monotonic() < t_end and warm < 100):
        sender.round()
        warm += 1
    c0, u0, t0 = sender.counters(), cpu(), time.perf_counter()
    rounds = 0
    while True:
        sender.round()
        rounds += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
    t1, u1, c1 = time.perf_counter(), cpu(), sender.counters()
    reply = rx.command("stop").split()
    got, acked = int(reply[1]), int(reply[2])
    total = warm + rounds
    if got != total * per_round * cell.conns or acked != total:
        raise RuntimeError(f"receiver got {got} bytes / {acked} rounds, "
                           f"want {total * per_round * cell.conns} / {total}")
    cell.add(rounds, rounds * cell.conns * frames, wall=t1 - t0, user=u1[0] - u0[0],
             sys_=u1[1] - u0[1], counters={k: c1[k] - c0[k] for k in c1})


def run_grid(args: argparse.Namespace, ffi: Any, lib: Any) -> list[Cell]:
    rx = Receiver(ffi, lib, args.pin)
    cells: list[Cell] = []
    try:
        for n in args.conns:
            for engine in (Engine.IO_URING, Engine.EPOLL):
                if engine.name.lower() not in args.engines:
                    continue
                loop_ack, loop_ack_child = socket.socketpair()
                t = time.monotonic()
                socks = connect(rx, n, loop_ack_child)
                fds = [s.fileno() for s in socks]
                # The plain loop sends on the same sockets (their numbers stay
                # valid while the loop owns them; nothing else sends meanwhile).
                plain = PlainSender(ffi, lib, fds, rx.plain_ack.fileno())
                ring = RingioSender(engine, socks, loop_ack)
                log(f"{n} connections for {ring.name} + plain in {time.monotonic() - t:.1f} s")
                try:
                    for size in args.sizes:
                        cells += run_groups(args, rx, plain, ring, n=n, size=size)
                finally:
                    plain.close()
                    ring.close()
                    rx.command("close")
    finally:
        rx.ctl.close()
        rx.stop()
    return cells


def run_groups(args: argparse.Namespace, rx: Receiver, plain: PlainSender,
               ring: RingioSender, *, n: int, size: int) -> list[Cell]:
    """Each group (1 in flight; 8 in flight) interleaves its senders in slices,
    in alternating order (ABC CBA ABC), so drift on a noisy machine hits all."""
    groups: list[tuple[int, list[tuple[PlainSender | RingioSender, str]]]] = []
    if "1" in args.modes:
        groups.append((1, [(plain, "1"), (ring, "1")]))
    eight: list[tuple[PlainSender | RingioSender, str]] = [
        (ring, m) for m in ("8 joined", "8 separate") if m in args.modes]
    if eight:
        ref: list[tuple[PlainSender | RingioSender, str]] = (
            [(plain, "8 joined")] if ring.name == "io_uring" and "8 joined" in args.modes else [])
        groups.append((8, [(plain, "8"), *ref, *eight]))
    out = []
    for frames, plan in groups:
        cells = [Cell(conns=n, size=size, mode=mode, sender=sender.name, sockets=ring.name)
                 for sender, mode in plan]
        # A pass that is not measured: in trials the first slice on fresh
        # connections cost ~40% more than the following ones.
        for sender, mode in plan:
            measure(rx, sender, Cell(conns=n, size=size, mode=mode, sender=sender.name,
                                     sockets=ring.name), frames=frames, seconds=0.2)
        for rep in range(args.slices):
            order = list(range(len(plan)))
            if rep % 2:
                order.reverse()
            for i in order:
                measure(rx, plan[i][0], cells[i], frames=frames,
                        seconds=args.seconds / args.slices)
        for c in cells:
            log(describe(c))
        out += cells
    return out


def log(text: str) -> None:
    print(f"# {text}", file=sys.stderr, flush=True)


def describe(c: Cell) -> str:
    return (f"{c.conns} conns {fmt_size(c.size)} {c.mode:>10} {c.sender:>8}: "
            f"{c.us_per_1000:8.1f} us/1000 (user {c.user * 1e3:.0f} ms, sys {c.sys * 1e3:.0f} ms,"
            f" {c.rounds} rounds, {c.deliveries / c.wall:,.0f} deliveries/s, slices "
            f"{' '.join(f'{x:.0f}' for x in c.slices)})")


def fmt_size(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def fmt_num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


# -- report ------------------------------------------------------------------


def find(cells: list[Cell], **kw: Any) -> Cell | None:
    for c in cells:
        if all(getattr(c, k) == v for k, v in kw.items()):
            return c
    return None


ROWS = (("1", "1", "1"), ("8 joined", "8", "8, one slot per round"),
        ("8 separate", "8", "8, one slot per frame"))


def report(cells: list[Cell]) -> str:
    out = [
        "Server CPU µs per 1000 deliveries (user+sys of the sending process over the measured "
        "phase; lower is better). In brackets: the ratio to the plain C loop measured in "
        "interleaved slices on the same sockets.",
        "",
        "| conns | frame | in flight | plain C send loop | ringio epoll | ringio io_uring |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    verdicts: list[str] = []
    for n, size in sorted({(c.conns, c.size) for c in cells}):
        for mode, pmode, label in ROWS:
            pvals, ring_txt = [], []
            for eng in ("epoll", "io_uring"):
                pc = find(cells, conns=n, size=size, mode=pmode, sender="plain", sockets=eng)
                rc = find(cells, conns=n, size=size, mode=mode, sender=eng)
                if pc:
                    pvals.append(fmt_num(pc.us_per_1000))
                if rc is None or pc is None:
                    ring_txt.append("-")
                    continue
                ratio = rc.us_per_1000 / pc.us_per_1000
                ring_txt.append(f"{fmt_num(rc.us_per_1000)} ({ratio:.2f}x)")
                if eng == "io_uring" and mode in ("1", "8 joined"):
                    target = 0.9 if mode == "1" else 0.25
                    ok = "met" if ratio <= target else "NOT met"
                    verdicts.append(f"- {n:,} conns, {fmt_size(size)}, {label} in flight: "
                                    f"io_uring {ratio:.2f}x of plain, target ≤ {target}x: {ok}")
            if ring_txt == ["-", "-"]:
                continue
            out.append(f"| {n:,} | {fmt_size(size)} | {label} | {' / '.join(pvals) or '-'} | "
                       f"{ring_txt[0]} | {ring_txt[1]} |")
    out += ["", "Plain C column: measured on the epoll engine's sockets / on the io_uring "
            "engine's sockets (each ringio engine is compared with the one on its own sockets).",
            "", "Targets (issue 2, ringio io_uring against the plain loop):", *verdicts]
    refs = []
    for n, size in sorted({(c.conns, c.size) for c in cells}):
        pj = find(cells, conns=n, size=size, mode="8 joined", sender="plain")
        p8 = find(cells, conns=n, size=size, mode="8", sender="plain", sockets="io_uring")
        rj = find(cells, conns=n, size=size, mode="8 joined", sender="io_uring")
        if pj and p8 and rj:
            refs.append(f"| {n:,} | {fmt_size(size)} | {fmt_num(p8.us_per_1000)} | "
                        f"{fmt_num(pj.us_per_1000)} ({pj.us_per_1000 / p8.us_per_1000:.2f}x) | "
                        f"{fmt_num(rj.us_per_1000)} ({rj.us_per_1000 / pj.us_per_1000:.2f}x) |")
    if refs:
        out += ["", "Reference, 8 in flight: the plain loop with the 8 frames of a round joined "
                "into one send() per connection (the floor coalescing can reach; not a baseline)."
                " io_uring's ratio here is against that joined plain loop.", "",
                "| conns | frame | plain, 8 send() | plain, 1 joined send() | "
                "ringio io_uring, one slot per round |", "|---:|---:|---:|---:|---:|", *refs]
    out += ["", "Detail (per 1000 deliveries unless said; slices: µs/1000 of each interleaved "
            "slice; sends: send()/sendmsg calls or send SQEs; waits: epoll_wait or rio_reap "
            "calls):", "",
            "| conns | frame | in flight | sender | µs/1000 | user | sys | slices | "
            "deliveries/s | rounds | sends | waits | other |",
            "|---:|---:|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for c in cells:
        d = c.deliveries / 1000
        if c.sender == "plain":
            other = (f"EAGAIN {c.per_1000('eagain'):.1f}, short {c.per_1000('partial'):.1f}, "
                     f"epoll_ctl {c.per_1000('epoll_ctls'):.1f}")
        elif c.sender == "io_uring":
            other = (f"SQEs {c.per_1000('sqes'):.0f}, CQEs {c.per_1000('cqes'):.0f}, "
                     f"submits {c.per_1000('submits'):.2f}, coalesced "
                     f"{c.per_1000('coalesced'):.0f}, short {c.per_1000('short_sends'):.1f}, "
                     f"zc {c.per_1000('zc_sends'):.1f}")
        else:
            other = (f"coalesced {c.per_1000('coalesced'):.0f}, "
                     f"short {c.per_1000('short_sends'):.1f}, "
                     f"epoll events {c.per_1000('cqes'):.1f}")
        mode = c.mode
        if c.sender == "plain" and c.mode == "8 joined":
            mode = "8 (one send() per round)"
        out.append(
            f"| {c.conns:,} | {fmt_size(c.size)} | {mode} | {c.sender} | "
            f"{fmt_num(c.us_per_1000)} | {c.user * 1e6 / d:,.0f} | {c.sys * 1e6 / d:,.0f} | "
            f"{' '.join(f'{x:.0f}' for x in c.slices)} | "
            f"{c.deliveries / c.wall:,.0f} | {c.rounds} | {c.per_1000('sends'):.0f} | "
            f"{c.per_1000('waits'):.2f} | {other} |")
    return "\n".join(out)


def machine() -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"nproc {os.cpu_count()}, CPU {model}, kernel {platform.release()}, "
            f"python {platform.python_version()}, load average before the run {load}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conns", default="1000,10000", help="comma-separated connection counts")
    ap.add_argument("--sizes", default="64,16384", help="comma-separated frame sizes (bytes)")
    ap.add_argument("--modes", default="1,8 joined,8 separate",
                    help="comma-separated: 1, 8 joined, 8 separate")
    ap.add_argument("--engines", default="io_uring,epoll", help="ringio engines to measure")
    ap.add_argument("--seconds", type=float, default=1.5,
                    help="measured time per sender and mode (split into slices)")
    ap.add_argument("--slices", type=int, default=3,
                    help="interleaved slices per sender and mode")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="do not pin the sender to core 0 and the receiver to core 1")
    ap.add_argument("--json", help="also write the raw cells to this file")
    args = ap.parse_args()
    args.conns = [int(x) for x in args.conns.split(",")]
    args.sizes = [int(x) for x in args.sizes.split(",")]
    args.modes = [m.strip() for m in args.modes.split(",")]
    args.engines = [e.strip() for e in args.engines.split(",")]
    args.slices = max(1, args.slices)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max(args.conns) + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))
    if (os.cpu_count() or 1) <= RECEIVER_CORE:
        args.pin = False
    started = dt.datetime.now(dt.UTC)
    info = machine()
    ffi, lib = build_helper()
    t0 = time.monotonic()
    cells = run_grid(args, ffi, lib)
    print(f"# ringio fan-out microbenchmark, {started:%Y-%m-%d %H:%M} UTC, "
          f"{time.monotonic() - t0:.0f} s")
    print(f"# {info}")
    print(f"# command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(report(cells))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": started.isoformat(), "machine": info,
                       "cells": [asdict(c) | {"us_per_1000": c.us_per_1000} for c in cells]},
                      f, indent=1)


if __name__ == "__main__":
    main()
