"""The task-fetching unit: runs a plan's tasks in parallel, each as soon as it can.

Scheduling is event-driven: when a task finishes, its dependants whose last dependency that
was are started right there (``asyncio.create_task``) — there is no polling loop. Tasks may
arrive from an async stream while others already run; a task that refers to an id not yet
seen waits for it, and if the stream ends without it the task gets an error observation.

Every task ends as one :class:`Observation`. A task that raises, times out, names an unknown
tool or gets arguments that do not fit becomes an error observation; its dependants are not
run and get ``"dependency $N failed: ..."``. The run never hangs on a missing dependency or a
cycle (those tasks fail when the stream ends) and only :meth:`TaskFetchingUnit.cancel`, a
duplicate task id or a failing input stream end it with an exception. ``join()`` is a marker
that finishes (ok, value ``None``) after every task that arrived before it.

This module does not parse plan text (:mod:`ragloom.plan_parser`) or run tool functions
itself (:mod:`ragloom.executors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from ragloom.errors import ConfigError, PlanError, RagloomError, RunCancelledError, ToolError
from ragloom.executors import Executor, make_executor
from ragloom.plan import Plan, Task, resolve_args
from ragloom.tools import Tool, ToolRegistry, with_timeout
from ragloom.trace import Trace

__all__ = ["Observation", "RetryPolicy", "TaskEvent", "TaskFetchingUnit"]

_log = logging.getLogger(__name__)
_NO_LIMIT = contextlib.nullcontext()  # stateless, so one instance serves every call
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
        self._runs: set[_Run] = set()

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
            trace: a trace to record timings in (a fresh one otherwise).
            results: observations of tasks finished before (resume / replan): they are not
                run again and their values feed the tasks that refer to them.

        Returns:
            task id -> observation, for every task of this run (not the given ``results``).

        Raises:
            RunCancelledError: :meth:`cancel` was called.
            PlanError: two tasks share an id (or repeat an id in ``results``).
        """
        owned = isinstance(self.executor, str)
        executor = (
            make_executor(self.executor, max_workers=self.max_workers)
            if isinstance(self.executor, str)
            else self.executor
        )
        run = _Run(self, trace if trace is not None else Trace(), dict(results or {}), executor)
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

    def _emit(self, kind: Any, task: Task, obs: Observation | None = None) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(TaskEvent(kind, task.id, task.tool, time.perf_counter(), obs))
        except Exception:  # a broken listener must not break the run; its error is logged
            _log.exception("on_event callback failed for task %s", task.id)


class _Run:
    """State of one run: arrived tasks, unmet dependencies, finished observations."""

    def __init__(
        self,
        unit: TaskFetchingUnit,
        trace: Trace,
        prior: dict[int, Observation],
        executor: Executor,
    ):
        self.unit, self.trace, self.executor = unit, trace, executor
        self.loop = asyncio.get_running_loop()
        self.done: dict[int, Observation] = prior  # finished, including earlier runs
        self.out: dict[int, Observation] = {}  # finished in this run
        self.arrived: dict[int, Task] = {}
        self.unmet: dict[int, set[int]] = {}  # waiting task -> ids it still needs
        self.waiters: defaultdict[int, list[int]] = defaultdict(list)
        self.active = 0
        self.stream_ended = False
        self.finished = asyncio.Event()
        self.error: BaseException | None = None
        self.cancelled = False
        self.running: set[asyncio.Task[None]] = set()
        self.semaphores: dict[str, asyncio.Semaphore] = {}

    async def execute(self, tasks: Tasks) -> dict[int, Observation]:
        feeder = asyncio.ensure_future(self._consume(tasks))
        try:
            await self.finished.wait()
            if self.cancelled:
                raise RunCancelledError("the run was cancelled")
            if self.error is not None:
                raise self.error
            return self.out
        finally:
            pending = [feeder, *self.running]
            for job in pending:
                job.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def cancel(self) -> None:
        self.cancelled = True
        self.finished.set()

    async def _consume(self, tasks: Tasks) -> None:
        try:
            if isinstance(tasks, AsyncIterable):
                async for task in tasks:
                    self.add(task)
            else:
                for task in tasks:
                    self.add(task)
        except Exception as exc:  # a bad stream ends the run; finished tasks stay in .out
            self.error = exc
            self.finished.set()
            return
        self.stream_ended = True
        self._check_done()

    # --- scheduling ---------------------------------------------------------------------------

    def add(self, task: Task) -> None:
        if task.id in self.arrived or task.id in self.done:
            raise PlanError(f"task id {task.id} is used twice", task_id=task.id)
        deps = set(task.deps)
        if task.is_join:
            deps |= {i for i in self.arrived if i < task.id}
        self.arrived[task.id] = task
        self.trace.queued(task.id, task.tool)
        self.unit._emit("queued", task)
        failed = [d for d in sorted(deps) if d in self.done and not self.done[d].ok]
        if failed and not task.is_join:
            self.finish(_skipped(task, self.done[failed[0]]))
            return
        unmet = {d for d in deps if d not in self.done}
        if not unmet:
            self._start(task)
            return
        self.unmet[task.id] = unmet
        for dep in unmet:
            self.waiters[dep].append(task.id)

    def finish(self, obs: Observation) -> None:
        """Record an observation, start (or fail) its dependants, and see if the run is over."""
        self._record(obs)
        self._check_done()

    def _record(self, obs: Observation) -> None:
        queue = [obs]
        while queue:
            current = queue.pop()
            self.done[current.task_id] = self.out[current.task_id] = current
            self.trace.finished(current)
            kind = "finished" if current.ok else "failed"
            self.unit._emit(kind, self.arrived[current.task_id], current)
            for waiter in self.waiters.pop(current.task_id, []):
                unmet = self.unmet.get(waiter)
                if unmet is None:  # already failed through another dependency
                    continue
                task = self.arrived[waiter]
                if not current.ok and not task.is_join:
                    del self.unmet[waiter]
                    queue.append(_skipped(task, current))
                    continue
                unmet.discard(current.task_id)
                if not unmet:
                    del self.unmet[waiter]
                    self._start(task)

    def _start(self, task: Task) -> None:
        self.trace.ready(task.id)
        self.active += 1
        self.running.add(self.loop.create_task(self._execute(task)))

    def _check_done(self) -> None:
        if not self.stream_ended:
            return
        # stream over and nothing running: the tasks still waiting wait for ids that never
        # come (or for each other); fail them one by one (a join may start and run first)
        while self.unmet and not self.active:
            first = min(self.unmet)
            del self.unmet[first]
            self._record(_stranded(self.arrived[first], self.arrived))
        if not self.unmet and not self.active:
            self.finished.set()

    # --- one task -----------------------------------------------------------------------------

    async def _execute(self, task: Task) -> None:
        try:
            obs = await self._call(task)
        except (KeyboardInterrupt, SystemExit) as exc:  # not a tool failure: run() raises it
            self.error = exc  # (re-raised here, asyncio would let it escape the event loop)
            self.finished.set()
            return
        finally:
            self.active -= 1
            self.running.discard(asyncio.current_task())  # type: ignore[arg-type]
        self.finish(obs)

    async def _call(self, task: Task) -> Observation:
        if task.is_join:
            self.trace.started(task.id)
            return Observation(task.id, task.tool, {}, attempts=0)
        args: dict[str, Any] = task.args
        try:
            tool = self.unit.registry.get(task.tool)
            args = resolve_args(task, {d: self.done[d].value for d in task.deps})
            kwargs = tool.validate_args(args)
        except RagloomError as exc:
            return Observation(task.id, task.tool, args, error=str(exc), attempts=0)
        return await self._attempts(task, tool, kwargs)

    async def _attempts(self, task: Task, tool: Tool, kwargs: dict[str, Any]) -> Observation:
        policy = self.unit.retry
        attempts = tool.retries + 1 if tool.retries else policy.max_attempts
        timeout = tool.timeout if tool.timeout is not None else self.unit.default_timeout
        for attempt in range(1, attempts + 1):
            try:
                async with self._semaphore(tool):
                    if attempt == 1:
                        self.trace.started(task.id)
                        self.unit._emit("started", task)
                    value = await with_timeout(self.executor.call(tool, kwargs), timeout, tool.name)
                return Observation(task.id, tool.name, kwargs, value=value, attempts=attempt)
            except (Exception, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
                    raise  # the run (or its caller) is cancelling us, not the tool failing
                error = str(exc) if isinstance(exc, ToolError) else f"{type(exc).__name__}: {exc}"
                if attempt == attempts or not isinstance(exc, policy.retry_on):
                    return Observation(task.id, tool.name, kwargs, error=error, attempts=attempt)
                await asyncio.sleep(policy.backoff_s * 2 ** (attempt - 1))
        raise AssertionError("unreachable: the last attempt always returns")

    def _semaphore(self, tool: Tool) -> Any:
        if tool.max_concurrency is None:
            return _NO_LIMIT
        if tool.name not in self.semaphores:
            self.semaphores[tool.name] = asyncio.Semaphore(tool.max_concurrency)
        return self.semaphores[tool.name]


def _being_cancelled() -> bool:
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0


def _skipped(task: Task, failed: Observation) -> Observation:
    error = f"dependency ${failed.task_id} failed: {failed.error}"
    return Observation(task.id, task.tool, task.args, error=error, attempts=0)


def _stranded(task: Task, arrived: Mapping[int, Task]) -> Observation:
    missing = sorted(d for d in task.deps if d not in arrived)
    if missing:
        why = f"depends on ${missing[0]}, which never arrived"
    else:
        why = "waits in a dependency cycle"
    error = str(PlanError(why, task_id=task.id, line=task.line))
    return Observation(task.id, task.tool, task.args, error=f"PlanError: {error}", attempts=0)
