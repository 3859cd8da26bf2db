#!/usr/bin/env python3
"""Split a sender's CPU samples into "TCP's own work" and "the path that reaches it".

Reads ``perf script -F comm,ip,sym`` output of a `bench/ringio_fanout.py` run (sender
pinned to core 0) and sorts every sample by the system call it sits under:

  plain     under ``__x64_sys_sendto`` (the plain C loop's ``send()``)
  io_uring  under ``__do_sys_io_uring_enter`` (ringio's batched submission)

and, within each, whether ``tcp_sendmsg`` is on the stack (TCP's work, which includes
the receiving half of loopback TCP run in the sender's softirq) or not (syscall entry,
fd lookup, io_uring's SQE/CQE handling: what batching could save). It prints the
shares and the best ratio io_uring could reach against the plain loop if everything
outside ``tcp_sendmsg`` cost nothing.

    perf record -C 0 -g -o /tmp/fanout.perf -- \\
        .venv/bin/python bench/ringio_fanout.py --conns 1000 --sizes 64 --modes 1 \\
        --engines io_uring --seconds 6
    perf script -i /tmp/fanout.perf -F comm,ip,sym | python3 bench/perf_split.py
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator

PATHS = {"plain": "__x64_sys_sendto", "io_uring": "__do_sys_io_uring_enter"}
TCP = "tcp_sendmsg"


def samples(lines: Iterable[str]) -> Iterator[tuple[str, list[str]]]:
    """(command, call chain leaf first) for each sample of ``perf script`` output."""
    comm: str | None = None
    chain: list[str] = []
    for line in lines:
        if not line.strip():
            if comm is not None:
                yield comm, chain
            comm, chain = None, []
        elif line[0] not in " \t":
            comm = line.split()[0]
        else:
            fields = line.split()
            chain.append(fields[1] if len(fields) > 1 else "?")
    if comm is not None:
        yield comm, chain


def main() -> None:
    total: Counter[str] = Counter()
    under_tcp: Counter[str] = Counter()
    outside_leaf: dict[str, Counter[str]] = {name: Counter() for name in PATHS}
    for comm, chain in samples(sys.stdin):
        if comm == "swapper" or not chain:
            continue
        frames = set(chain)
        for name, entry in PATHS.items():
            if entry in frames:
                total[name] += 1
                if TCP in frames:
                    under_tcp[name] += 1
                else:
                    outside_leaf[name][chain[0]] += 1
                break
        else:
            total["elsewhere"] += 1
    if not total["plain"] or not total["io_uring"]:
        sys.exit("no samples under both send paths: was the sender on the recorded CPU?")
    for name in PATHS:
        n, t = total[name], under_tcp[name]
        top = ", ".join(f"{sym} {c / n:.1%}" for sym, c in outside_leaf[name].most_common(6))
        print(f"{name:9} {n:7d} samples: under {TCP} {t / n:.1%}, outside {1 - t / n:.1%} "
              f"({top})")
    print(f"elsewhere {total['elsewhere']:7d} samples (user space, other system calls)")
    plain, uring = total["plain"], total["io_uring"]
    print(f"io_uring / plain samples: {uring / plain:.3f}")
    print(f"best io_uring / plain if nothing outside {TCP} cost anything: "
          f"{under_tcp['io_uring'] / plain:.3f}")


if __name__ == "__main__":
    main()
