"""Where a task's tool function runs: this process (a thread pool) or a Ray cluster.

Both executors expose ``await executor.call(tool, kwargs)`` on already validated keyword
arguments, and ``close()``. :class:`LocalExecutor` awaits async tools on the event loop and
runs sync tools in its own thread pool (sized for many parallel blocking calls, so sleeping or
I/O-bound sync tools do not serialize behind the default pool's few threads).
:class:`RayExecutor` runs each call as a Ray remote task; Ray is imported only when it is
built. Remote tasks receive only the tool's function (pickled by Ray), never the ``Tool``.

A sync call that times out or is cancelled keeps running in its thread until it returns (Python
cannot stop a thread); the run does not wait for it, but interpreter exit does. This module
does not schedule, time out or retry (that is :mod:`ragloom.tfu`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from ragloom._lazy import require
from ragloom._sync import run_sync
from ragloom.errors import ConfigError

if TYPE_CHECKING:
    from ragloom.tools import Tool

__all__ = ["Executor", "LocalExecutor", "RayExecutor"]

DEFAULT_MAX_WORKERS = 64


class Executor(Protocol):
    """Runs tool functions for the task-fetching unit."""

    def call(self, tool: Tool, kwargs: dict[str, Any]) -> Awaitable[Any]:
        """Run ``tool`` on validated keyword arguments; awaiting this gives its result."""
        ...

    def close(self) -> None:
        """Release threads or handles (running sync calls are not waited for)."""
        ...


class LocalExecutor:
    """Async tools on the event loop, sync tools in a private thread pool.

    Args:
        max_workers: threads for sync tools (default 64; threads start only when needed).
    """

    def __init__(self, max_workers: int | None = None):
        workers = max_workers if max_workers is not None else DEFAULT_MAX_WORKERS
        if workers < 1:
            raise ConfigError(f"max_workers must be >= 1, got {workers}")
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="ragloom-tool")

    def call(self, tool: Tool, kwargs: dict[str, Any]) -> Awaitable[Any]:
        """The tool's own coroutine (async tool), or its run in the pool (sync).

        (Not a coroutine itself: the unit awaits an async tool's coroutine directly.)
        """
        if tool.coroutine is not None:
            return tool.coroutine(**kwargs)
        return tool.acall(kwargs, self._pool)

    def close(self) -> None:
        """Stop the pool without waiting for calls still running."""
        self._pool.shutdown(wait=False, cancel_futures=True)


class RayExecutor:
    """Each call is a Ray remote task (``num_cpus`` each); async tools run with ``run_sync``
    inside the worker. Starts a local Ray instance if none is initialized (dashboard off).

    Args:
        num_cpus: CPUs Ray reserves per call.
    """

    def __init__(self, num_cpus: float = 1.0):
        self._ray = require("ray", "distributed")
        if not self._ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            self._ray.init(include_dashboard=False, ignore_reinit_error=True)
        self._remote = self._ray.remote(num_cpus=num_cpus)(_run_in_worker)

    async def call(self, tool: Tool, kwargs: dict[str, Any]) -> Any:
        """Submit the tool's function to Ray and await its result (cancelled with the task)."""
        fn: Callable[..., Any] | None = tool.coroutine or tool.func
        ref = self._remote.remote(fn, tool.coroutine is not None, kwargs)
        try:
            return await ref
        except asyncio.CancelledError:
            self._ray.cancel(ref)
            raise
        except self._ray.exceptions.RayTaskError as exc:  # re-raise the tool's own error
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else exc.as_instanceof_cause()) from None

    def close(self) -> None:
        """Nothing to release (the Ray instance outlives the run)."""


def make_executor(kind: str, *, max_workers: int | None = None) -> Executor:
    """The executor called ``kind`` (``"local"`` or ``"ray"``)."""
    if kind == "local":
        return LocalExecutor(max_workers)
    if kind == "ray":
        return RayExecutor()
    raise ConfigError(f"executor must be 'local' or 'ray', got {kind!r}")


def _run_in_worker(fn: Callable[..., Any], is_async: bool, kwargs: dict[str, Any]) -> Any:
    if is_async:
        return run_sync(fn(**kwargs))
    return fn(**kwargs)
