"""Run a coroutine to completion from synchronous code, also inside a running event loop.

``asyncio.run`` refuses to start while a loop runs in the same thread (a Jupyter kernel, an
async web handler). Then the coroutine runs on a fresh loop in a worker thread instead, and
the caller blocks until it is done. This module does not make async code thread-safe: the
coroutine must not touch objects bound to the caller's loop.

The loops ragloom starts itself are uvloop's where it is installed: it creates and wakes tasks
in about half the time of the standard loop, which is most of the task-fetching unit's cost on
a wide plan (``benchmarks/tfu_overhead.py`` prints both). ``RAGLOOM_EVENT_LOOP=asyncio``
chooses the standard loop. A loop the caller runs is never replaced.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ragloom.errors import ConfigError

__all__ = ["event_loop_factory", "run_sync"]

T = TypeVar("T")

LOOP_ENV = "RAGLOOM_EVENT_LOOP"
_LOOPS = ("auto", "uvloop", "asyncio")


def event_loop_factory(kind: str | None = None) -> Callable[[], asyncio.AbstractEventLoop]:
    """The factory of the event loops ragloom starts (for ``asyncio.Runner(loop_factory=...)``).

    Args:
        kind: ``"uvloop"``, ``"asyncio"`` (the standard loop) or ``"auto"`` (uvloop if it is
            installed); ``None`` reads ``$RAGLOOM_EVENT_LOOP``, default ``"auto"``.

    Raises:
        ConfigError: an unknown kind, or ``"uvloop"`` without uvloop installed.
    """
    kind = (kind if kind is not None else os.environ.get(LOOP_ENV, "auto")).strip().lower()
    if kind not in _LOOPS:
        raise ConfigError(f"{LOOP_ENV} must be one of {', '.join(_LOOPS)}; got {kind!r}")
    if kind == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError as exc:
        if kind == "uvloop":
            raise ConfigError(f"{LOOP_ENV}=uvloop, but uvloop is not installed") from exc
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Block until ``coro`` finishes and return its result (on a loop of
    :func:`event_loop_factory`'s kind).

    >>> async def two() -> int:
    ...     return 2
    >>> run_sync(two())
    2
    """
    try:
        factory = event_loop_factory()
    except ConfigError:
        coro.close()  # (never awaited: no "coroutine was never awaited" warning on top)
        raise
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run(coro, factory)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_run, coro, factory).result()


def _run(coro: Coroutine[Any, Any, T], factory: Callable[[], asyncio.AbstractEventLoop]) -> T:
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)
