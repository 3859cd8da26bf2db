"""cffi API-mode build of the fast path's head scanner (``._headscan``).

``csrc/headscan_api.h`` is the one declaration of the API, read both by cffi's cdef
parser and by the C compiler. Registered in setup.py's ``cffi_modules``, it is built
by ``pip install``.
"""

from __future__ import annotations

import os
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
CSRC = HERE / "csrc"

ffibuilder = FFI()
ffibuilder.cdef((CSRC / "headscan_api.h").read_text())
ffibuilder.set_source(
    "ringcast.server.protocol._headscan",
    '#include <stdint.h>\n#include <stddef.h>\n#include "headscan_api.h"',
    # setuptools insists on paths relative to the project root (the cwd).
    sources=[os.path.relpath(CSRC / "headscan.c")],
    include_dirs=[os.path.relpath(CSRC)],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra"],
)
