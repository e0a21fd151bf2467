"""Run a coroutine to completion from synchronous code, also inside a running event loop.

``asyncio.run`` refuses to start while a loop runs in the same thread (a Jupyter kernel, an
async web handler). Then the coroutine runs on a fresh loop in a worker thread instead, and
the caller blocks until it is done. This module does not make async code thread-safe: the
coroutine must not touch objects bound to the caller's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_sync"]

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Block until ``coro`` finishes and return its result.

    >>> async def two() -> int:
    ...     return 2
    >>> run_sync(two())
    2
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
