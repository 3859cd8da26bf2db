"""Run a command with io_uring_setup blocked by a seccomp filter, as containers do.

    python seccomp_block.py EPERM|ENOSYS COMMAND [ARG...]

Installs a classic-BPF seccomp filter (no dependency: prctl through ctypes)
that makes io_uring_setup(2) fail with the given errno, then execs COMMAND;
the filter survives execve. Docker 25+ answers EPERM, podman ENOSYS. Only the
calling process and its children are affected, never the machine.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys

NR_IO_URING_SETUP = 425          # the same on every architecture's unified table
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06
SECCOMP_RET_ERRNO, SECCOMP_RET_ALLOW = 0x00050000, 0x7FFF0000


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def block_io_uring(err: int) -> None:
    arch = AUDIT_ARCH[platform.machine()]
    program = [
        (BPF_LD_W_ABS, 0, 0, 4),                  # A = seccomp_data.arch
        (BPF_JEQ_K, 0, 3, arch),                  # other arch: allow
        (BPF_LD_W_ABS, 0, 0, 0),                  # A = seccomp_data.nr
        (BPF_JEQ_K, 0, 1, NR_IO_URING_SETUP),     # not io_uring_setup: allow
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | err),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in program)
    buf = ctypes.create_string_buffer(raw, len(raw))
    prog = SockFprog(len(program), ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or \
            libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


if __name__ == "__main__":
    block_io_uring(getattr(errno, sys.argv[1]))
    os.execvp(sys.argv[2], sys.argv[2:])
