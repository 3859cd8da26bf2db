"""CPU time and memory of processes on this machine, from /proc."""

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


def sample(pid: int) -> ProcSample:
    cpu = _schedstat_ns(pid)
    if cpu is None:
        cpu = _stat_ns(pid)
    return ProcSample(
        pid=pid,
        cpu_ns=cpu or 0,
        rss_bytes=_status_kib(pid, "VmRSS") * 1024,
        hwm_bytes=_status_kib(pid, "VmHWM") * 1024,
        alive=cpu is not None,
    )


def self_cpu_ns() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return int((r.ru_utime + r.ru_stime) * 1e9)
