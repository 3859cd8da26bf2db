"""CPU time and memory of processes on this machine, from /proc.

PSS (proportional set size, /proc/PID/smaps_rollup) is read along with RSS: the workers
of a forked server share the pages of their parent, which RSS counts in every one of
them and PSS shares out, so a sum of PSS over the workers is the host's memory.
`with_children` finds a supervisor's workers (/proc/PID/task/*/children).
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcSample:
    pid: int
    cpu_ns: int          # user + system, all threads
    rss_bytes: int
    hwm_bytes: int       # peak RSS
    alive: bool
    pss_bytes: int = 0   # 0: smaps_rollup unreadable


def _schedstat_ns(pid: int) -> int | None:
    """Run time of every thread, ns (exact, unlike the tick counts of /proc/PID/stat)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    found = False
    for tid in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            found = True
        except (OSError, ValueError, IndexError):
            continue
    return total if found else None


def _stat_ns(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # After "pid (comm)": field 3 is index 0; utime is field 14, stime field 15.
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1_000_000_000 // CLK_TCK


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def pss_bytes(pid: int) -> int:
    """The process's PSS from /proc/PID/smaps_rollup (0 when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def children(pid: int) -> list[int]:
    """The process's children (every thread's), from /proc/PID/task/*/children."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            out += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except (OSError, ValueError):
            continue
    return out


def with_children(pids: list[int] | tuple[int, ...]) -> list[int]:
    """``pids`` and every descendant of each (a supervisor's workers), each once, the
    given ones first."""
    out: list[int] = []
    seen: set[int] = set()
    todo = list(pids)
    while todo:
        pid = todo.pop(0)
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        todo += children(pid)
    return out


def sample(pid: int, *, pss: bool = True) -> ProcSample:
    cpu = _schedstat_ns(pid)
    if cpu is None:
        cpu = _stat_ns(pid)
    return ProcSample(
        pid=pid,
        cpu_ns=cpu or 0,
        rss_bytes=_status_kib(pid, "VmRSS") * 1024,
        hwm_bytes=_status_kib(pid, "VmHWM") * 1024,
        alive=cpu is not None,
        pss_bytes=pss_bytes(pid) if pss else 0,
    )


def self_cpu_ns() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return int((r.ru_utime + r.ru_stime) * 1e9)
