"""ringio's exceptions, and the diagnosis of why io_uring cannot be used here.

::

    RingioError (OSError)    a call failed; a failed reap() means the loop has failed
    └── RingUnavailable      io_uring_setup or a required registration failed

``RingUnavailable`` carries ``cause`` (what happened, in words) and ``remedy``
(what to do). The causes are the ones seen in the field: a container's seccomp
profile (Docker 25+ answers EPERM, podman ENOSYS), the ``kernel.io_uring_disabled``
sysctl (Linux 6.6+, default on RHEL 9), a kernel older than 6.0, and
``RLIMIT_MEMLOCK``.
"""

from __future__ import annotations

import enum
import errno
import os
import platform
import resource
from pathlib import Path

from ringcast.ringio._ringio import lib


class RingioError(OSError):
    """Root of ringio's errors; ``errno`` is set where a system call failed."""


class RingUnavailable(RingioError):
    """io_uring cannot be used on this machine; ``cause`` and ``remedy`` say why."""

    def __init__(self, err: int, cause: str, remedy: str) -> None:
        super().__init__(err, f"io_uring unavailable: {cause}. {remedy}")
        self.cause = cause
        self.remedy = remedy


class Stage(enum.IntEnum):
    """Where rio_open failed: its ``*stage``, one of RIO_STAGE_* in csrc/ringio_api.h."""

    SETUP = lib.RIO_STAGE_SETUP              # io_uring_setup
    BUFFER_RING = lib.RIO_STAGE_BUFFER_RING  # registering the provided-buffer ring
    MEMORY = lib.RIO_STAGE_MEMORY            # allocating the loop's memory
    EPOLL = lib.RIO_STAGE_EPOLL              # epoll_create1
    KERNEL = lib.RIO_STAGE_KERNEL            # a kernel older than 6.0
    PARAMS = lib.RIO_STAGE_PARAMS            # invalid parameters


def open_failed(err: int, stage: int, *, uring: bool) -> RingioError:
    """The error for a failed rio_open: why the loop could not be created.

    With ``uring``, every failure but invalid parameters is a `RingUnavailable`
    (the caller may fall back to epoll); see `diagnose`.
    """
    where = Stage(stage)
    if where is Stage.PARAMS:
        return RingioError(err, "invalid loop parameters: max_conns and data_capacity must be "
                                "positive, data_capacity at least buf_size, event_limit 0 or "
                                "at least 3")
    if uring:
        return diagnose(err, where)
    what = "epoll_create1" if where is Stage.EPOLL else "allocating the loop"
    return RingioError(err, f"{what} failed: {os.strerror(err)}")


def reap_failed(err: int, *, uring: bool) -> RingioError:
    """The error for a failed rio_reap: the loop has failed for good and must be closed."""
    if not uring:
        cause = f"epoll_wait failed: {os.strerror(err)}"
    elif err == errno.EBADR:
        cause = "the kernel dropped completions (CQ overflow with no memory to hold them)"
    else:
        cause = f"io_uring_enter failed with {errno.errorcode.get(err, err)} ({os.strerror(err)})"
        if err in (errno.EEXIST, errno.EINVAL, errno.EBADF):
            # SINGLE_ISSUER answers EEXIST, and a registered ring fd, known to its thread
            # only, EINVAL or EBADF.
            cause += "; was it used from a thread other than the one that created it?"
    return RingioError(err, f"the loop has failed: {cause}; close it")

SECCOMP_REMEDY = (
    "Allow io_uring in the container's seccomp profile: docker/podman run "
    "--security-opt seccomp=<profile with io_uring_setup, io_uring_enter and "
    "io_uring_register allowed> (see the README), or use backend = \"epoll\""
)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _seccomp_filtered() -> bool:
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("Seccomp:"):
            return line.split()[1] == "2"
    return False


def diagnose(err: int, stage: Stage) -> RingUnavailable:
    """Turn the errno and stage of a failed ring setup into a RingUnavailable."""
    release = platform.release()
    if stage is Stage.KERNEL:
        return RingUnavailable(
            err,
            f"kernel {release} is too old (multishot receive needs Linux 6.0)",
            "Upgrade the kernel, or run with backend = \"epoll\"",
        )
    if stage is Stage.BUFFER_RING:
        return RingUnavailable(
            err,
            f"registering the provided-buffer ring failed ({os.strerror(err)}) on kernel {release}",
            "Lower ring.buffer_count, or use backend = \"epoll\"",
        )
    if stage is Stage.MEMORY:
        return RingUnavailable(
            err, f"out of memory setting up the loop ({os.strerror(err)})",
            "Lower limits.max_connections or ring sizes",
        )
    disabled = _read("/proc/sys/kernel/io_uring_disabled").strip()
    if err == errno.EPERM and disabled in ("1", "2"):
        return RingUnavailable(
            err,
            f"the sysctl kernel.io_uring_disabled is {disabled}",
            "Run `sysctl -w kernel.io_uring_disabled=0` (or, for value 1, add the service's "
            "group to kernel.io_uring_group), or use backend = \"epoll\"",
        )
    if err in (errno.EPERM, errno.ENOSYS) and _seccomp_filtered():
        return RingUnavailable(
            err,
            f"io_uring_setup is blocked by this process's seccomp filter ({errno.errorcode[err]}; "
            "Docker 25+ and podman block io_uring by default)",
            SECCOMP_REMEDY,
        )
    if err == errno.ENOSYS:
        return RingUnavailable(
            err, f"kernel {release} has no io_uring (CONFIG_IO_URING is off)",
            "Use a kernel built with io_uring, or backend = \"epoll\"",
        )
    if err == errno.EPERM:
        return RingUnavailable(
            err, "io_uring_setup was refused (EPERM) by a security policy (LSM or sandbox)",
            "Allow io_uring for this service, or use backend = \"epoll\"",
        )
    if err == errno.ENOMEM:
        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        return RingUnavailable(
            err,
            f"the kernel could not allocate the ring (ENOMEM; RLIMIT_MEMLOCK is {soft} bytes)",
            "Raise the memlock limit (ulimit -l / LimitMEMLOCK=) or lower ring sizes",
        )
    return RingUnavailable(
        err,
        f"io_uring_setup failed with {errno.errorcode.get(err, err)} ({os.strerror(err)}) "
        f"on kernel {release}",
        "Use backend = \"epoll\"",
    )
