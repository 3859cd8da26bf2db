"""Measure plain IORING_OP_SEND against SEND_ZC (registered buffer) by frame size.

Both run in one process on loopback, side by side, and the figure that
matters is the ratio: zero-copy time / plain time for the same bytes. On
loopback the kernel always copies zero-copy data (MSG_ZEROCOPY doc,
"Loopback"), so this measures the *cost* zero-copy adds where it cannot help;
``zc_keep`` keeps it on after the kernel says it copied, which ringcast itself
never does. Bounded: a fixed byte count per point, a 20 s cap per point.

    .venv/bin/python bench/zc_threshold.py [--mib 64] [--clients 4]
"""

from __future__ import annotations

import argparse
import array
import platform
import socket
import time

from ringcast.ringio import Engine, EventKind, Loop, LoopParams, probe

SIZES = [1024, 4096, 16384, 65536, 262144]


def run(size: int, zero_copy: bool, total: int, clients: int) -> tuple[float, float, int]:
    params = LoopParams(engine=Engine.IO_URING, max_conns=64, arena_size=64 << 20,
                        zc_threshold=1 if zero_copy else 0, zc_keep=True,
                        zc_loopback=True)
    server = Loop(params)
    reader = Loop(LoopParams(engine=Engine.EPOLL, max_conns=64, data_capacity=16 << 20,
                             buf_size=65536))
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    addr = ls.getsockname()
    server.listen(ls)
    for _ in range(clients):
        reader.adopt(socket.create_connection(addr))
    ids: list[int] = []
    while len(ids) < clients:
        ids += [e.conn for e in server.reap(1.0) if e.kind == EventKind.ACCEPT]
    conns = array.array("I", ids)
    payload = bytes(size)
    messages = max(1, total // (size * clients))
    want = messages * size * clients
    got = 0
    sent = 0
    t0, c0 = time.perf_counter(), time.process_time()
    deadline = t0 + 20
    while got < want and time.perf_counter() < deadline:
        # Keep at most 8 frames per client in flight.
        while sent < messages and (sent * size * clients - got) < 8 * size * clients:
            slot = server.slot(payload)
            server.fanout(slot, conns, len(conns))
            server.release(slot)
            sent += 1
        server.reap(0)
        got += sum(len(e.data) for e in reader.reap(0) if e.kind == EventKind.DATA)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    zc_sends = server.stats()["zc_sends"]
    server.close()
    reader.close()
    return elapsed, cpu, zc_sends


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=64, help="MiB delivered per point")
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    p = probe()
    if isinstance(p, Exception) or not p.zc_enabled:
        raise SystemExit(f"zero-copy unavailable here: {p}")
    print(f"# {platform.node()} kernel {platform.release()}, {args.mib} MiB per point, "
          f"{args.clients} loopback clients")
    print("| frame size | plain MiB/s | zero-copy MiB/s | zc time / plain time | zc sends |")
    print("|---:|---:|---:|---:|---:|")
    for size in SIZES:
        plain = run(size, False, args.mib << 20, args.clients)
        zc = run(size, True, args.mib << 20, args.clients)
        mib = args.mib
        print(f"| {size} | {mib / plain[0]:.0f} | {mib / zc[0]:.0f} | "
              f"{zc[0] / plain[0]:.2f} | {zc[2]} |")


if __name__ == "__main__":
    main()
