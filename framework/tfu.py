"""The task-fetching unit: runs a plan's tasks in parallel, each as soon as it can.

Scheduling is event-driven: when a task finishes, every dependant for which it was the last
missing dependency is started at once (``asyncio.create_task``) — there is no polling loop.
Async tools run on the event loop, sync tools in a thread pool, or all of them on Ray. Tasks
may arrive from an async stream while others already run; a task that refers to an id not
yet seen waits for it, and if the stream ends without it the task gets an error observation.
Per-tool concurrency limits (``Tool.max_concurrency``), timeouts (``Tool.timeout`` or the
unit's default), a :class:`RetryPolicy` and :meth:`TaskFetchingUnit.cancel` apply.

Every task ends as one :class:`Observation`. A task that raises, times out, names an unknown
tool or gets arguments that do not fit becomes an error observation; its dependants are not
run and get ``"dependency $N failed: ..."``. The run never hangs on a missing dependency or a
cycle (those tasks fail when the stream ends) and only :meth:`TaskFetchingUnit.cancel`, a
duplicate task id or a failing input stream end it with an exception. ``join()`` is a marker
that finishes (ok, value ``None``) after every task that arrived before it.

This module holds the public types; the scheduling state machine is ``_tfu_run``. It does not
parse plan text (:mod:`ragloom.plan_parser`) or run tool functions (:mod:`ragloom.executors`).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from ragloom.errors import ConfigError
from ragloom.executors import Executor, make_executor
from ragloom.plan import Plan, Task
from ragloom.tools import ToolRegistry
from ragloom.trace import Trace

if TYPE_CHECKING:
    from ragloom._tfu_run import Run

__all__ = ["Observation", "RetryPolicy", "TaskEvent", "TaskFetchingUnit"]

Tasks: TypeAlias = Plan | Iterable[Task] | AsyncIterable[Task]


@dataclass(slots=True)
class Observation:
    """What one task produced.

    Attributes:
        task_id: the task's id.
        tool: the tool's name.
        args: the arguments it was called with (after ``$N`` substitution; the plan's
            arguments if it never ran).
        value: the tool's return value (``None`` on error).
        error: the error text, ``None`` on success.
        ok: ``error is None`` (derived; may be passed, but must agree).
        attempts: how many times the tool was called (0 if it never ran).

    >>> Observation(1, "search", {"query": "x"}, error="boom").ok
    False
    """

    task_id: int
    tool: str
    args: dict[str, Any]
    value: Any = None
    error: str | None = None
    ok: bool = None  # type: ignore[assignment]  # derived from error in __post_init__
    attempts: int = 1

    def __post_init__(self) -> None:
        derived = self.error is None
        if self.ok is not None and bool(self.ok) != derived:
            raise ConfigError(f"Observation ok={self.ok} contradicts error={self.error!r}")
        self.ok = derived


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """How often a failing tool call is tried.

    Attributes:
        max_attempts: calls in all (1 = no retry). A tool's own ``retries`` overrides this.
        backoff_s: seconds before the 2nd attempt, doubling for each further one.
        retry_on: exception types worth another attempt (timeouts are ``ToolTimeoutError``).
    """

    max_attempts: int = 1
    backoff_s: float = 0.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.backoff_s < 0:
            raise ConfigError(f"backoff_s must be >= 0, got {self.backoff_s}")


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """A task changed state; ``observation`` is set for ``finished`` and ``failed``.

    ``time`` is ``time.perf_counter()`` when it happened.
    """

    kind: Literal["queued", "started", "finished", "failed"]
    task_id: int
    tool: str
    time: float
    observation: Observation | None = None


class TaskFetchingUnit:
    """Runs tasks on a tool registry, each the moment its dependencies are done.

    Args:
        registry: the tools tasks may call.
        executor: ``"local"`` (event loop + thread pool), ``"ray"`` (Ray remote tasks), or
            an :class:`~ragloom.executors.Executor` instance (kept open after runs).
        default_timeout: seconds per call for tools without their own ``timeout``.
        retry: the retry policy (default: one attempt).
        max_workers: threads for sync tools (local executor; default 64).
        on_event: called (on the event loop) with every :class:`TaskEvent`.

    Example:
        >>> import asyncio
        >>> from ragloom.plan_parser import parse_plan
        >>> def add(a: int, b: int) -> int:
        ...     return a + b
        >>> registry = ToolRegistry([add])
        >>> unit = TaskFetchingUnit(registry)
        >>> out = asyncio.run(unit.run(parse_plan("1. add(1, 2)\\n2. add($1, 3)", registry)))
        >>> out[2].value
        6
    """

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        executor: Literal["local", "ray"] | Executor = "local",
        default_timeout: float | None = None,
        retry: RetryPolicy | None = None,
        max_workers: int | None = None,
        on_event: Callable[[TaskEvent], None] | None = None,
    ):
        if isinstance(executor, str) and executor not in ("local", "ray"):
            raise ConfigError(f"executor must be 'local' or 'ray', got {executor!r}")
        if default_timeout is not None and default_timeout <= 0:
            raise ConfigError(f"default_timeout must be > 0 seconds, got {default_timeout}")
        self.registry = registry
        self.executor = executor
        self.default_timeout = default_timeout
        self.retry = retry or RetryPolicy()
        self.max_workers = max_workers
        self.on_event = on_event
        self._runs: set[Run] = set()

    async def run(
        self,
        tasks: Tasks,
        *,
        trace: Trace | None = None,
        results: Mapping[int, Observation] | None = None,
    ) -> dict[int, Observation]:
        """Run ``tasks`` (a plan, a list, or an async stream) to the end.

        Args:
            tasks: the tasks; an async iterable is consumed while earlier tasks run.
            trace: a trace to record timings in (none are recorded without one).
            results: observations of tasks finished before (resume / replan): they are not
                run again and their values feed the tasks that refer to them.

        Returns:
            task id -> observation, for every task of this run (not the given ``results``).

        Raises:
            RunCancelledError: :meth:`cancel` was called.
            PlanError: two tasks share an id (or repeat an id in ``results``).
        """
        from ragloom._tfu_run import Run

        owned = isinstance(self.executor, str)
        executor = (
            make_executor(self.executor, max_workers=self.max_workers)
            if isinstance(self.executor, str)
            else self.executor
        )
        run = Run(self, trace, dict(results or {}), executor)
        self._runs.add(run)
        try:
            return await run.execute(tasks)
        finally:
            self._runs.discard(run)
            if owned:
                executor.close()

    def cancel(self) -> None:
        """Cancel every run in progress (thread-safe); they raise ``RunCancelledError``."""
        for run in list(self._runs):
            run.loop.call_soon_threadsafe(run.cancel)
