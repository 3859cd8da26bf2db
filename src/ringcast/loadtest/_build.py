"""cffi API-mode build of the load client's frame scanner (``ringcast.loadtest._wsscan``).

``csrc/wsscan_api.h`` is the one declaration of the API, read both by cffi's
cdef parser and by the C compiler. Registered in setup.py's ``cffi_modules``
it is built by ``pip install``; ``python -m ringcast.loadtest._build`` builds
it in place (into this package's directory) for a checkout where it is not.
It links zlib (permessage-deflate: compressed messages are inflated in C); Debian's
headers are in zlib1g-dev, which scripts/setup installs.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
CSRC = HERE / "csrc"
MODULE = "ringcast.loadtest._wsscan"


def _relpath(p: Path) -> str:
    # setuptools insists on source paths relative to the project root (the cwd).
    try:
        return os.path.relpath(p)
    except ValueError:
        return str(p)


ffibuilder = FFI()
ffibuilder.cdef((CSRC / "wsscan_api.h").read_text())
ffibuilder.set_source(
    MODULE,
    '#include "wsscan_api.h"',
    sources=[_relpath(CSRC / "wsscan.c")],
    include_dirs=[_relpath(CSRC)],
    libraries=["z"],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)


def build_in_place(verbose: bool = False) -> Path:
    """Compile the module into this package's directory; returns the .so path."""
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="wsscan-build-") as tmp:
        try:
            os.chdir(tmp)
            builder = FFI()
            builder.cdef((CSRC / "wsscan_api.h").read_text())
            builder.set_source(
                MODULE, '#include "wsscan_api.h"', sources=[str(CSRC / "wsscan.c")],
                include_dirs=[str(CSRC)], libraries=["z"],
                extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra",
                                    "-Wno-unused-parameter"],
            )
            built = Path(builder.compile(tmpdir=tmp, verbose=verbose))
        finally:
            os.chdir(cwd)
        target = HERE / built.name
        shutil.copy2(built, target.with_suffix(".tmp"))
        os.replace(target.with_suffix(".tmp"), target)
    return target


if __name__ == "__main__":
    print(build_in_place(verbose="-v" in sys.argv[1:]))
