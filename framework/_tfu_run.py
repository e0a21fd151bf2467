"""The state machine behind :meth:`ragloom.tfu.TaskFetchingUnit.run` (one instance per run).

``add`` takes an arriving task and starts it if its dependencies are done, or files it under
each missing one; ``finish`` records an observation and starts (or fails) the dependants it
was the last missing dependency of. Both run on the event loop, so no locks are needed. When
the input stream has ended and nothing runs, tasks still waiting can never start: they fail
as stranded (missing dependency or cycle) and the run is over.

This module does not define the public types (:mod:`ragloom.tfu`) or run tool functions
(:mod:`ragloom.executors`).
"""

from __future__ import annotations

import asyncio
import graphlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

from ragloom.errors import PlanError, RagloomError, RunCancelledError, ToolError
from ragloom.plan import JOIN, Task, resolve_args
from ragloom.tfu import Observation, TaskEvent, Tasks
from ragloom.tools import Tool, with_timeout
from ragloom.trace import Trace

if TYPE_CHECKING:
    from ragloom.executors import Executor
    from ragloom.tfu import TaskFetchingUnit

__all__ = ["Run"]

_log = logging.getLogger("ragloom.tfu")
_Settings: TypeAlias = tuple[Tool, int, float | None, asyncio.Semaphore | None]


class Run:
    """State of one run: arrived tasks, unmet dependencies, finished observations."""

    def __init__(
        self,
        unit: TaskFetchingUnit,
        trace: Trace | None,
        prior: dict[int, Observation],
        executor: Executor,
    ):
        self.unit, self.executor = unit, executor
        self.trace = trace if trace is not None else _UNTRACED
        self.traced = trace is not None  # (the hot paths skip even the untraced calls)
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
        self.running: dict[int, asyncio.Task[None]] = {}  # task id -> its asyncio task
        self.tools: dict[str, _Settings] = {}  # tool name -> the tool and its call settings

    async def execute(self, tasks: Tasks) -> dict[int, Observation]:
        feeder = None
        try:
            # a plan or list is added right here, so its ready tasks are all created before
            # the first await; only an async stream needs a task of its own
            if isinstance(tasks, AsyncIterable):
                feeder = asyncio.ensure_future(self._consume(tasks))
            else:
                self._consume_now(tasks)
            await self.finished.wait()
            if self.cancelled:
                raise RunCancelledError("the run was cancelled")
            if self.error is not None:
                raise self.error
            return self.out
        finally:
            pending = [*self.running.values()]
            if feeder is not None:
                pending.append(feeder)
            if pending:
                for job in pending:
                    job.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

    def cancel(self) -> None:
        self.cancelled = True
        self.finished.set()

    def _emit(self, kind: Any, task: Task, obs: Observation | None = None) -> None:
        if self.unit.on_event is None:
            return
        try:
            self.unit.on_event(TaskEvent(kind, task.id, task.tool, time.perf_counter(), obs))
        except Exception:  # a broken listener must not break the run; its error is logged
            _log.exception("on_event callback failed for task %s", task.id)

    async def _consume(self, tasks: AsyncIterable[Task]) -> None:
        try:
            async for task in tasks:
                self.add(task)
        except Exception as exc:  # a bad stream ends the run (on_event saw the finished tasks)
            self._stream_failed(exc)
            return
        self.stream_ended = True
        self._check_done()

    def _consume_now(self, tasks: Iterable[Task]) -> None:
        try:
            for task in tasks:
                self.add(task)
        except Exception as exc:
            self._stream_failed(exc)
            return
        self.stream_ended = True
        self._check_done()

    def _stream_failed(self, exc: Exception) -> None:
        self.error = exc
        self.finished.set()

    # --- scheduling ---------------------------------------------------------------------------

    def add(self, task: Task) -> None:
        if task.id in self.arrived or task.id in self.done:
            raise PlanError(f"task id {task.id} is used twice", task_id=task.id)
        self.arrived[task.id] = task
        if not task.deps and task.tool != JOIN:  # fast path: ready on arrival
            if self.traced:
                self.trace.queued(task.id, task.tool, ready=True)
            if self.unit.on_event is not None:
                self._emit("queued", task)
            self._start(task)
            return
        deps = set(task.deps)
        if task.is_join:
            deps |= {i for i in self.arrived if i < task.id}
        self.trace.queued(task.id, task.tool)
        self._emit("queued", task)
        failed = [d for d in sorted(deps) if d in self.done and not self.done[d].ok]
        if failed and not task.is_join:
            self.finish(_skipped(task, self.done[failed[0]]))
            return
        unmet = {d for d in deps if d not in self.done}
        if not unmet:
            self.trace.ready(task.id)
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
            if self.unit.on_event is not None:
                self._emit(kind, self.arrived[current.task_id], current)
            for waiter in self.waiters.pop(current.task_id, ()):
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
                    self.trace.ready(waiter)
                    self._start(task)

    def _start(self, task: Task) -> None:
        self.active += 1
        self.running[task.id] = self.loop.create_task(self._execute(task))

    def _check_done(self) -> None:
        if not self.stream_ended:
            return
        # stream over and nothing running: the tasks still waiting wait for ids that never
        # come (or for each other); fail them one by one (a join may start and run first)
        while self.unmet and not self.active:
            task_id, why = _stranded(self.unmet, self.arrived, self.done)
            del self.unmet[task_id]
            task = self.arrived[task_id]
            error = f"PlanError: {PlanError(why, task_id=task_id, line=task.line)}"
            self._record(Observation(task_id, task.tool, task.args, error=error, attempts=0))
        if not self.unmet and not self.active:
            self.finished.set()

    # --- one task -----------------------------------------------------------------------------

    async def _execute(self, task: Task) -> None:
        """A started task, as its own asyncio task: the tool's attempts, then the observation.

        One coroutine per task (no nested helpers): its cost is paid for every task started.
        """
        try:
            ready = self._prepare(task)
            if isinstance(ready, Observation):
                obs = ready
            else:
                (tool, attempts, timeout, limit), kwargs = ready
                attempt = 0
                while True:
                    attempt += 1
                    try:
                        if limit is not None:
                            await limit.acquire()
                        try:
                            if attempt == 1:
                                if self.traced:
                                    self.trace.started(task.id)
                                if self.unit.on_event is not None:
                                    self._emit("started", task)
                            call = self.executor.call(tool, kwargs)
                            value = await (
                                call if timeout is None else with_timeout(call, timeout, tool.name)
                            )
                        finally:
                            if limit is not None:
                                limit.release()
                        obs = Observation(task.id, tool.name, kwargs, value=value, attempts=attempt)
                        break
                    except (Exception, asyncio.CancelledError) as exc:
                        failed = self._failed(task, tool, kwargs, exc, attempt, attempts)
                        if failed is not None:
                            obs = failed
                            break
                    await asyncio.sleep(self.unit.retry.backoff_s * 2 ** (attempt - 1))
        except (KeyboardInterrupt, SystemExit) as exc:  # not a tool failure: run() raises it
            self.error = exc  # (re-raised here, asyncio would let it escape the event loop)
            self.finished.set()
            return
        finally:
            self.active -= 1
            del self.running[task.id]
        self.finish(obs)

    def _prepare(self, task: Task) -> Observation | tuple[_Settings, dict[str, Any]]:
        """The tool with its call settings and the validated keyword arguments, or the task's
        observation if it is not to be called (a join; an unknown tool; arguments that do not
        fit).
        """
        if task.tool == JOIN:
            self.trace.started(task.id)
            return Observation(task.id, task.tool, {}, attempts=0)
        args: dict[str, Any] = task.args
        try:
            settings = self.tools.get(task.tool) or self._settings(task.tool)
            if task.deps:  # (without references the arguments stay as they are)
                args = resolve_args(task, {d: self.done[d].value for d in task.deps})
            return settings, settings[0].validate_args(args)
        except Exception as exc:  # (not only RagloomError: a task left unfinished hangs the run)
            error = str(exc) if isinstance(exc, RagloomError) else f"{type(exc).__name__}: {exc}"
            return Observation(task.id, task.tool, args, error=error, attempts=0)

    def _settings(self, name: str) -> _Settings:
        """The tool called ``name``, its attempts in all, timeout and concurrency limit (looked
        up once a run; ``ToolError`` if there is no such tool).
        """
        tool = self.unit.registry.get(name)
        attempts = tool.retries + 1 if tool.retries else self.unit.retry.max_attempts
        timeout = tool.timeout if tool.timeout is not None else self.unit.default_timeout
        limit = None if tool.max_concurrency is None else asyncio.Semaphore(tool.max_concurrency)
        settings = self.tools[name] = tool, attempts, timeout, limit
        return settings

    def _failed(
        self,
        task: Task,
        tool: Tool,
        kwargs: dict[str, Any],
        exc: BaseException,
        attempt: int,
        attempts: int,
    ) -> Observation | None:
        """The error observation of a failed attempt, or ``None`` if another is due."""
        if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
            raise exc  # the run (or its caller) is cancelling us, not the tool failing
        error = str(exc) if isinstance(exc, ToolError) else f"{type(exc).__name__}: {exc}"
        if attempt == attempts or not isinstance(exc, self.unit.retry.retry_on):
            return Observation(task.id, tool.name, kwargs, error=error, attempts=attempt)
        return None


class _Untraced(Trace):
    """Records nothing: a run given no trace has no one to read its timings."""

    def queued(self, task_id: int, tool: str, *, ready: bool = False) -> None:
        pass

    def ready(self, task_id: int) -> None:
        pass

    def started(self, task_id: int) -> None:
        pass

    def finished(self, obs: Observation) -> None:
        pass


_UNTRACED = _Untraced()


def _being_cancelled() -> bool:
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0


def _skipped(task: Task, failed: Observation) -> Observation:
    error = f"dependency ${failed.task_id} failed: {failed.error}"
    return Observation(task.id, task.tool, task.args, error=error, attempts=0)


def _stranded(
    unmet: Mapping[int, set[int]], arrived: Mapping[int, Task], done: Mapping[int, Observation]
) -> tuple[int, str]:
    """A waiting task that can never start, and why: first those that wait for an id that
    never arrived, then a member of a dependency cycle (their dependants then fail in turn).
    """
    for task_id in sorted(unmet):
        missing = sorted(d for d in unmet[task_id] if d not in arrived and d not in done)
        if missing:
            return task_id, f"depends on ${missing[0]}, which never arrived"
    graph = {t: [d for d in deps if d in unmet] for t, deps in unmet.items()}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        return cycle[0], "is in a dependency cycle " + " -> ".join(f"${i}" for i in cycle)
    raise AssertionError("waiting tasks with every dependency arrived must form a cycle")
