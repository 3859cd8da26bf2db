"""Waiting for a condition in asyncio tests: polled against a deadline, never a bare sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def wait_until(predicate: Callable[[], bool | Awaitable[bool]], timeout: float,
                     what: str | Callable[[], str], interval: float = 0.02) -> None:
    """Return once ``predicate()`` is true (awaited when it returns an awaitable).

    Polls every ``interval`` seconds; after ``timeout`` seconds raises AssertionError
    naming ``what``. A callable ``what`` is called only then, so it can describe the
    state the wait ended in.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            text = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout}s waiting for {text}")
        await asyncio.sleep(interval)
