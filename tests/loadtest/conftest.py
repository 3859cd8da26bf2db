"""Fixtures for the load client's tests.

The C frame scanner is built in place when this checkout has not built it
(until setup.py registers it, ``pip install -e .`` builds only ringio's extension).
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("ringcast.loadtest._wsscan") is None:  # pragma: no cover
    from ringcast.loadtest._build import build_in_place

    build_in_place()
