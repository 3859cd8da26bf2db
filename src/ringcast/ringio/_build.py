"""cffi API-mode build of ringio's C core against the system liburing.

API mode (compiled stubs) rather than ABI mode because liburing 2.3, the
version Debian bookworm ships, has no ``liburing-ffi.so``: its prep helpers are
``static inline`` and exist only in the header. ``csrc/ringio_api.h`` is the
one declaration of the API, read both by cffi's cdef parser and by the C
compiler.
"""

from __future__ import annotations

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
CSRC = HERE / "csrc"

ffibuilder = FFI()
ffibuilder.cdef((CSRC / "ringio_api.h").read_text())
ffibuilder.set_source(
    "ringcast.ringio._ringio",
    '#include "ringio.h"',
    # setuptools insists on paths relative to the project root (the cwd).
    sources=[os.path.relpath(CSRC / name) for name in ("core.c", "uring.c", "epoll.c")],
    include_dirs=[os.path.relpath(CSRC)],
    libraries=["uring"],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    # cffi compiles from inside tmpdir, so the relative paths above must start
    # there: run as `python src/ringcast/ringio/_build.py` from the project root.
    os.chdir(HERE.parent.parent)
    ffibuilder.compile(verbose=True)
