"""How many connections one server process can take, and what bounds that.

Every connection is a file descriptor and an id in the loop's table, so the open-files
limit bounds it; memory does too. ``limits.max_connections = "auto"`` (the default) takes
what the process can hold: at start-up each process raises its soft ``RLIMIT_NOFILE`` to
the hard one and takes every file it then may open, less the loop's own needs, and at
most one connection per ``MEMORY_PER_CONNECTION`` bytes of the memory available to its
share of the workers. A number takes that many, and the open-files limit is raised as
far as it needs (with a warning when the hard limit is lower).

Beyond client connections (open, or closed and not yet released) a loop holds ids for the
refusals on their way (``REFUSALS_IN_FLIGHT``), its listeners, the signal wake-up socket,
the broker's two connections (``RESERVED_IDS``) and two links per other worker.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ringcast.config import Config
from ringcast.fdlimit import FD_HEADROOM, raise_nofile
from ringcast.server.clients import REFUSALS_IN_FLIGHT
from ringcast.server.workers import worker_count

__all__ = ["MEMORY_PER_CONNECTION", "RESERVED_IDS", "Capacity", "plan_capacity"]

RESERVED_IDS: Final = 16
MEMORY_PER_CONNECTION: Final = 8 << 10
"""What an idle connection costs, rounded up: about 1 KiB in ringcast and a few in the
kernel (the socket, its file); messages in flight come on top, up to
``limits.queue_max_bytes`` each."""
MOST: Final = 1 << 20  # the kernel's fixed-file table limit, and ringio's id table's


@dataclass(frozen=True, slots=True)
class Capacity:
    """What one process takes."""

    connections: int
    """Client connections at most (``limits.max_connections`` in force)."""
    loop_ids: int
    """Ids its loop needs: the connections, and what else the loop holds."""
    bound: str
    """What bounds ``connections``, for the start-up line."""
    files_short: bool
    """The configured number needs more open files than the hard limit allows: the
    connections past it will be refused."""
    nofile: int
    """The soft open-files limit now in force."""


def plan_capacity(config: Config, meminfo: Path = Path("/proc/meminfo")) -> Capacity:
    """Raise this process's open-files limit and say how many connections it takes."""
    workers = worker_count(config.server.workers)
    others = REFUSALS_IN_FLIGHT + RESERVED_IDS + 2 * max(0, workers - 1)
    configured = config.limits.max_connections
    if configured != "auto":
        nofile, needed = raise_nofile(configured + others)
        return Capacity(configured, configured + others, "limits.max_connections",
                        nofile < needed, nofile)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = MOST + others if hard == resource.RLIM_INFINITY else hard - FD_HEADROOM
    nofile, _ = raise_nofile(want)
    by_files = max(1, nofile - FD_HEADROOM - others)
    available = _available_memory(meminfo)
    by_memory = (MOST if available is None
                 else max(1, available // workers // MEMORY_PER_CONNECTION))
    connections, bound = min(
        (by_files, f"the open-files limit ({nofile})"),
        (by_memory, f"memory ({(available or 0) >> 20} MiB available, {workers} "
                    f"worker{'s' if workers > 1 else ''})"),
        (MOST, "the most one loop can hold"),
    )
    return Capacity(connections, connections + others, bound, False, nofile)


def _available_memory(meminfo: Path) -> int | None:
    """MemAvailable from ``/proc/meminfo``, in bytes, or None when it cannot be read."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
