"""Build hook: setuptools reads everything else from pyproject.toml."""

from setuptools import setup

setup(
    cffi_modules=[
        "src/ringcast/ringio/_build.py:ffibuilder",
        "src/ringcast/loadtest/_build.py:ffibuilder",
        "src/ringcast/server/protocol/_build.py:ffibuilder",
    ]
)
