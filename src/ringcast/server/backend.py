"""Choosing the I/O backend: io_uring where it works, epoll where it does not.

``backend = "auto"`` tries io_uring and falls back to epoll, keeping the exact
reason so the start-up log line can say it. ``"io_uring"`` refuses to start
without it; ``"epoll"`` never tries.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringcast.config import Config
from ringcast.errors import BackendError
from ringcast.ringio import Engine, Loop, LoopParams, RingUnavailable
from ringcast.server.workers import worker_count

# Ids the loop needs beyond client connections: listeners, the signal wake-up
# socket, the broker bridge's two connections; plus two links per other worker
# (see `loop_ids`). Kept apart so max_connections means client connections.
RESERVED_IDS = 16
# Connections refused at a limit whose 503 is still on its way; more are reset.
REFUSALS_IN_FLIGHT = 64


def loop_ids(config: Config) -> int:
    """Connection ids one process's loop holds: client connections (open or
    closing), ``REFUSALS_IN_FLIGHT``, ``RESERVED_IDS`` and two links per other
    worker."""
    workers = worker_count(config.server.workers)
    return (config.limits.max_connections + REFUSALS_IN_FLIGHT + RESERVED_IDS
            + 2 * max(0, workers - 1))


@dataclass(frozen=True)
class Backend:
    loop: Loop
    name: str       # "io_uring" or "epoll"
    reason: str     # why this one, for the start-up log line


def loop_params(config: Config, engine: Engine) -> LoopParams:
    ring = config.ring
    return LoopParams(
        engine=engine,
        max_conns=loop_ids(config),
        sq_entries=ring.sq_entries,
        cq_entries=ring.cq_entries,
        buf_count=ring.buffer_count,
        buf_size=ring.buffer_size,
        arena_size=ring.arena_size,
        zc_threshold=ring.zero_copy_threshold,
        data_capacity=max(4 << 20, 4 * ring.buffer_size),
    )


def open_backend(config: Config) -> Backend:
    choice = config.server.backend
    if choice == "epoll":
        return Backend(Loop(loop_params(config, Engine.EPOLL)), "epoll", "configured")
    try:
        loop = Loop(loop_params(config, Engine.IO_URING))
    except RingUnavailable as exc:
        if choice == "io_uring":
            raise BackendError(
                f"{exc} (server.backend is \"io_uring\", so ringcast will not fall back to "
                "epoll; set it to \"auto\" to allow that)"
            ) from exc
        return Backend(Loop(loop_params(config, Engine.EPOLL)), "epoll", str(exc))
    probe = loop.probe()
    zc = "zero-copy on" if probe.zc_enabled else "zero-copy off"
    return Backend(loop, "io_uring", f"kernel {probe.kernel_major}.{probe.kernel_minor}, {zc}")
