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


@dataclass(frozen=True)
class Backend:
    loop: Loop
    name: str       # "io_uring" or "epoll"
    reason: str     # why this one, for the start-up log line


def loop_params(config: Config, engine: Engine, ids: int) -> LoopParams:
    """The loop of a process that holds ``ids`` connection ids (see :mod:`.capacity`)."""
    ring = config.ring
    return LoopParams(
        engine=engine,
        max_conns=ids,
        sq_entries=ring.sq_entries,
        cq_entries=ring.cq_entries,
        buf_count=ring.buffer_count,
        buf_size=ring.buffer_size,
        arena_size=ring.arena_size,
        zc_threshold=ring.zero_copy_threshold,
        data_capacity=max(4 << 20, 4 * ring.buffer_size),
    )


def open_backend(config: Config, ids: int) -> Backend:
    """The loop of this process, for ``ids`` connection ids."""
    choice = config.server.backend
    if choice == "epoll":
        return Backend(Loop(loop_params(config, Engine.EPOLL, ids)), "epoll", "configured")
    try:
        loop = Loop(loop_params(config, Engine.IO_URING, ids))
    except RingUnavailable as exc:
        if choice == "io_uring":
            raise BackendError(
                f"{exc} (server.backend is \"io_uring\", so ringcast will not fall back to "
                "epoll; set it to \"auto\" to allow that)"
            ) from exc
        return Backend(Loop(loop_params(config, Engine.EPOLL, ids)), "epoll", str(exc))
    probe = loop.probe()
    zc = "zero-copy on" if probe.zc_enabled else "zero-copy off"
    return Backend(loop, "io_uring", f"kernel {probe.kernel_major}.{probe.kernel_minor}, {zc}")
