"""Scheduling overhead of ragloom's task-fetching unit against two polling schedulers.

DAGs of sleeping tools: 200 independent 20 ms tasks, a 50-deep chain of 10 ms tasks and a
seeded random 300-task DAG (5-30 ms each, up to 3 dependencies among the previous 40 tasks).
For each scheduler and DAG we print makespan ÷ critical path. Every tool call records its own
start and end; the critical path is computed over those measured durations, so the ratio is the
scheduler's overhead alone (a sleep that overshoots by a fraction of a millisecond is the
tool's time, not the scheduler's). The ratio over nominal durations is printed too.

Schedulers, all run in this process on the same DAGs:

- ``ragloom``: :class:`ragloom.TaskFetchingUnit`, async tools (and, on the independent DAG,
  sync ``time.sleep`` tools in its thread pool: ``ragloom_sync``, and async tools recording a
  :class:`ragloom.Trace`, as the agent does: ``ragloom_traced``; without a trace the unit
  records no timings).
- ``poll10ms``: the LLMCompiler reference task-fetching unit (SqueezeAILab/LLMCompiler,
  ``TaskFetchingUnit.schedule``): every 10 ms (``SCHEDULING_INTERVAL``) scan the remaining
  tasks, ``asyncio.create_task`` those whose dependencies' ``asyncio.Event`` are all set.
- ``asyncio_floor`` (independent DAG only): no scheduler, ``asyncio.gather`` of every call —
  what any asyncio scheduler can at best do on this machine at this moment. Its runs alternate
  with ``ragloom``'s and ``ragloom_traced``'s (a, b, c, a, b, c, ...), so that all three see
  the same moments of a shared machine's load.
- ``poll250ms``: the LangGraph LLMCompiler tutorial's ``schedule_tasks``: a
  ``ThreadPoolExecutor``; each task whose dependencies are not all observed is submitted as
  ``schedule_pending_task``, which checks and ``time.sleep(0.25)``s until they are. Two
  deviations in the baseline's favour: ready tasks are submitted to the pool (the tutorial's
  commented-out parallel line) instead of being run inline one after another, and the pool
  has a thread per task instead of the default ``min(32, cpus + 4)``.

The asyncio schedulers run on the event loop that ragloom starts for itself
(:func:`ragloom.run_sync`: uvloop's where it is installed; the JSON says which as
``event_loop``). On the independent DAG, ``ragloom_stdloop`` and ``floor_stdloop`` run ragloom's
unit and the bare ``asyncio.gather`` on the standard library's loop as well, alternating with
the others: most of the cost of 200 tasks at once is the loop's own (creating and waking tasks).

Fast schedulers are run 5 times per DAG and the run with the median ratio is reported (the
250 ms poller once with ``--quick``, 3 times otherwise); timings on a shared machine are noisy.
Each fast scheduler first runs once untimed, so that no figure includes a first call's imports
and caches.

The cost per task is timed on 2,000 independent tasks that do not sleep (best of 15, the two
alternating): ragloom's unit against a bare ``asyncio.gather``, on both loops
(``*_us_per_task``).

Dispatch latency is the time from a dependency's tool returning to its dependant's tool
starting (the last dependency, for tasks with several). The streamed case feeds a 12-task plan
through :class:`ragloom.StreamingPlanParser` from an async generator that writes one line every
20 ms, and records whether the first task started before the stream ended.

    .venv/bin/python benchmarks/tfu_overhead.py --quick

The last line is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from ragloom import (
    Plan,
    StreamingPlanParser,
    Task,
    TaskFetchingUnit,
    Tool,
    ToolRegistry,
    Trace,
    event_loop_factory,
    run_sync,
)

Spans = dict[int, tuple[float, float]]  # task id -> (tool start, tool end), perf_counter


@dataclass
class Dag:
    name: str
    deps: dict[int, list[int]]  # id -> dependency ids (ids increase along the plan)
    ms: dict[int, float]  # id -> nominal duration


def independent(n: int = 200, ms: float = 20.0) -> Dag:
    return Dag(
        "independent_200x20ms", {i: [] for i in range(1, n + 1)}, dict.fromkeys(range(1, n + 1), ms)
    )


def chain(n: int = 50, ms: float = 10.0) -> Dag:
    return Dag(
        "chain_50x10ms",
        {i: [i - 1] if i > 1 else [] for i in range(1, n + 1)},
        dict.fromkeys(range(1, n + 1), ms),
    )


def random_dag(n: int = 300, seed: int = 0) -> Dag:
    rng = random.Random(seed)
    deps, ms = {}, {}
    for i in range(1, n + 1):
        window = list(range(max(1, i - 40), i))
        deps[i] = sorted(rng.sample(window, min(len(window), rng.choice([0, 1, 1, 2, 2, 3]))))
        ms[i] = rng.uniform(5.0, 30.0)
    return Dag(f"random_{n}_seed{seed}", deps, ms)


def critical_path(dag: Dag, durations: dict[int, float]) -> float:
    tasks = [Task(i, "nap", deps=frozenset(d)) for i, d in dag.deps.items()]
    return Plan(tasks).critical_path(durations)[1]


def dispatch_latencies(dag: Dag, spans: Spans) -> list[float]:
    return [spans[i][0] - max(spans[d][1] for d in deps) for i, deps in dag.deps.items() if deps]


# --- tools ---------------------------------------------------------------------------------


def make_naps(spans: Spans) -> tuple[Callable, Callable]:
    async def nap(i: int, ms: float, after: object = None) -> int:
        """Sleep ``ms`` milliseconds (async)."""
        start = time.perf_counter()
        await asyncio.sleep(ms / 1000)
        spans[i] = (start, time.perf_counter())
        return i

    def nap_sync(i: int, ms: float, after: object = None) -> int:
        """Sleep ``ms`` milliseconds (blocking)."""
        start = time.perf_counter()
        time.sleep(ms / 1000)
        spans[i] = (start, time.perf_counter())
        return i

    return nap, nap_sync


# --- schedulers: each returns (wall seconds, spans) ------------------------------------------


async def run_ragloom(dag: Dag, sync: bool = False, traced: bool = False) -> tuple[float, Spans]:
    spans: Spans = {}
    nap, nap_sync = make_naps(spans)
    registry = ToolRegistry([Tool.from_function(nap_sync if sync else nap, name="nap")])
    tasks = [Task(i, "nap", {"i": i, "ms": dag.ms[i]}, frozenset(d)) for i, d in dag.deps.items()]
    unit = TaskFetchingUnit(registry, max_workers=len(tasks) + 8)
    trace = Trace() if traced else None
    start = time.perf_counter()
    out = await unit.run(tasks, trace=trace)
    wall = time.perf_counter() - start
    assert all(o.ok for o in out.values()), [o.error for o in out.values() if not o.ok][:3]
    return wall, spans


class PollingTFU:
    """The LLMCompiler reference scheduler (``schedule``), polling every ``interval`` s."""

    def __init__(self, dag: Dag, tool: Callable, interval: float):
        self.dag, self.tool, self.interval = dag, tool, interval
        self.tasks_done = {i: asyncio.Event() for i in dag.deps}
        self.remaining_tasks = set(dag.deps)

    def _all_tasks_done(self) -> bool:
        return all(self.tasks_done[d].is_set() for d in self.tasks_done)

    def _get_all_executable_tasks(self) -> list[int]:
        return [
            i
            for i in self.remaining_tasks
            if all(self.tasks_done[d].is_set() for d in self.dag.deps[i])
        ]

    async def _run_task(self, i: int) -> None:
        await self.tool(i, self.dag.ms[i])
        self.tasks_done[i].set()

    async def schedule(self) -> None:
        pending = set()  # (the reference drops the task handles; we keep them alive)
        while not self._all_tasks_done():
            for i in self._get_all_executable_tasks():
                pending.add(asyncio.create_task(self._run_task(i)))
                self.remaining_tasks.remove(i)
            await asyncio.sleep(self.interval)


async def run_poll10ms(dag: Dag) -> tuple[float, Spans]:
    spans: Spans = {}
    nap, _ = make_naps(spans)
    start = time.perf_counter()
    await PollingTFU(dag, nap, 0.01).schedule()
    return time.perf_counter() - start, spans


def run_poll250ms(dag: Dag) -> tuple[float, Spans]:
    """The LangGraph tutorial's ``schedule_tasks`` / ``schedule_pending_task``."""
    spans: Spans = {}
    _, nap_sync = make_naps(spans)
    observations: dict[int, int] = {}
    retry_after = 0.25

    def schedule_task(i: int) -> None:
        observations[i] = nap_sync(i, dag.ms[i])

    def schedule_pending_task(i: int) -> None:
        while True:
            deps = dag.deps[i]
            if deps and any(dep not in observations for dep in deps):
                time.sleep(retry_after)
                continue
            schedule_task(i)
            break

    start = time.perf_counter()
    futures = []
    with ThreadPoolExecutor(max_workers=len(dag.deps) + 8) as executor:
        for i, deps in dag.deps.items():
            if deps and any(dep not in observations for dep in deps):
                futures.append(executor.submit(schedule_pending_task, i))
            else:
                futures.append(executor.submit(schedule_task, i))
        wait(futures)
    return time.perf_counter() - start, spans


# --- cost per task --------------------------------------------------------------------------


async def no_wait(i: int, ms: float) -> int:
    """Return at once (after one pass through the loop)."""
    await asyncio.sleep(0)
    return i


def per_task_us(n: int = 2000, repeats: int = 15) -> dict[str, float]:
    """Microseconds per task of ``n`` independent tasks that do not sleep: ragloom's unit
    against a bare ``asyncio.gather``, on ragloom's loop and on the standard one (best of
    ``repeats``, the two alternating): what a wide DAG pays per task before any tool runs."""
    registry = ToolRegistry([Tool.from_function(no_wait, name="nap")])
    unit = TaskFetchingUnit(registry)
    tasks = [Task(i, "nap", {"i": i, "ms": 0.0}) for i in range(1, n + 1)]

    async def ragloom() -> float:
        start = time.perf_counter()
        await unit.run(tasks)
        return time.perf_counter() - start

    async def floor() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(no_wait(i, 0.0) for i in range(n)))
        return time.perf_counter() - start

    out = {}
    for loop, factory in (("", LOOP), ("_stdloop", asyncio.new_event_loop)):
        with asyncio.Runner(loop_factory=factory) as runner:
            runs: dict[str, list[float]] = {"ragloom": [], "asyncio_floor": []}
            for _ in range(repeats + 1):  # (the first round warms up, untimed)
                for name, fn in (("ragloom", ragloom), ("asyncio_floor", floor)):
                    runs[name].append(runner.run(fn()))
            for name, times in runs.items():
                out[f"{name}{loop}_us_per_task"] = round(min(times[1:]) / n * 1e6, 2)
    return out


# --- streamed plan ---------------------------------------------------------------------------


async def streamed_plan(line_delay: float = 0.02) -> dict:
    spans: Spans = {}
    nap, _ = make_naps(spans)
    registry = ToolRegistry([Tool.from_function(nap, name="nap")])
    lines = [f"{i}. nap({i}, 10)" for i in range(1, 7)]
    lines += [f"{i}. nap({i}, 10, after=${i - 6})" for i in range(7, 13)]
    text = "Thought: search, then combine.\n" + "\n".join(lines) + "\n13. join()\n<END_OF_PLAN>"
    stream_end = 0.0

    async def tokens() -> AsyncIterator[str]:
        nonlocal stream_end
        for line in text.splitlines(keepends=True):
            for piece in (line[: len(line) // 2], line[len(line) // 2 :]):
                await asyncio.sleep(line_delay / 2)
                yield piece
        stream_end = time.perf_counter()

    async def tasks() -> AsyncIterator[Task]:
        parser = StreamingPlanParser(registry)
        async for delta in tokens():
            for task in parser.feed(delta):
                yield task
        for task in parser.close():
            yield task

    start = time.perf_counter()
    out = await TaskFetchingUnit(registry).run(tasks())
    first = min(s for s, _ in spans.values())
    assert all(o.ok for o in out.values()), [o.error for o in out.values() if not o.ok]
    return {
        "first_task_before_plan_end": first < stream_end,
        "first_task_start_ms": round((first - start) * 1000, 2),
        "plan_stream_end_ms": round((stream_end - start) * 1000, 2),
        "streamed_makespan_ms": round((time.perf_counter() - start) * 1000, 2),
    }


# --- driver ----------------------------------------------------------------------------------


@dataclass
class Result:
    ratio: float  # wall / critical path of measured tool durations
    ratio_nominal: float  # wall / critical path of nominal durations
    wall_ms: float
    dispatch_ms: list[float]


def measure(dag: Dag, wall: float, spans: Spans) -> Result:
    assert set(spans) == set(dag.deps), "every task must have run exactly once"
    measured = critical_path(dag, {i: end - start for i, (start, end) in spans.items()})
    nominal = critical_path(dag, {i: ms / 1000 for i, ms in dag.ms.items()})
    latencies = [x * 1000 for x in dispatch_latencies(dag, spans)]
    return Result(wall / measured, wall / nominal, wall * 1000, latencies)


async def run_floor(dag: Dag) -> tuple[float, Spans]:
    """No scheduler at all: ``asyncio.gather`` of every call (valid only without dependencies)."""
    assert not any(dag.deps.values())
    spans: Spans = {}
    nap, _ = make_naps(spans)
    start = time.perf_counter()
    await asyncio.gather(*(nap(i, dag.ms[i]) for i in dag.deps))
    return time.perf_counter() - start, spans


# the event loop ragloom starts for itself (ragloom.run_sync): uvloop's where installed
LOOP = event_loop_factory()
LOOP_NAME = type(LOOP()).__module__.split(".")[0]


def on(factory: Callable[[], asyncio.AbstractEventLoop], coro: Coroutine) -> tuple[float, Spans]:
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


RUNNERS: dict[str, Callable] = {
    "ragloom": lambda dag: on(LOOP, run_ragloom(dag)),
    "ragloom_sync": lambda dag: on(LOOP, run_ragloom(dag, sync=True)),
    "ragloom_traced": lambda dag: on(LOOP, run_ragloom(dag, traced=True)),
    "poll10ms": lambda dag: on(LOOP, run_poll10ms(dag)),
    "poll250ms": run_poll250ms,
    "asyncio_floor": lambda dag: on(LOOP, run_floor(dag)),
    # the same two on the standard library's loop, for comparison
    "ragloom_stdloop": lambda dag: on(asyncio.new_event_loop, run_ragloom(dag)),
    "floor_stdloop": lambda dag: on(asyncio.new_event_loop, run_floor(dag)),
}


def median_runs(names: list[str], dag: Dag, repeats: int) -> dict[str, Result]:
    """Per scheduler, the run with the median ratio over ``repeats`` runs (dispatch latencies
    pooled); the schedulers' runs alternate (a, b, a, b, ...).
    """
    runs: dict[str, list[Result]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            runs[name].append(measure(dag, *RUNNERS[name](dag)))
    medians = {}
    for name, results in runs.items():
        results.sort(key=lambda r: r.ratio)
        mid = results[len(results) // 2]
        pooled = [x for r in results for x in r.dispatch_ms]
        medians[name] = Result(mid.ratio, mid.ratio_nominal, mid.wall_ms, pooled)
    return medians


def pct(values: list[float], q: int) -> float | None:
    if len(values) < 2:
        return round(values[0], 3) if values else None
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 3)


def row(dag: str, name: str, r: Result) -> str:
    p50 = pct(r.dispatch_ms, 50)
    return (
        f"{dag:22} {name:14} {r.wall_ms:9.1f} {r.ratio:8.3f} {r.ratio_nominal:9.3f} "
        f"{p50 if p50 is not None else '-':>9}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (< 1 minute)")
    args = parser.parse_args()
    # median of several runs for the fast schedulers; the 250 ms poller takes ~20 s a round
    repeats = {"ragloom": 5, "poll10ms": 5, "poll250ms": 1 if args.quick else 3}
    repeats |= {"ragloom_sync": 5, "asyncio_floor": 5, "ragloom_traced": 5}
    repeats |= {"ragloom_stdloop": 5, "floor_stdloop": 5}
    dags = [independent(), chain(), random_dag()]
    results: dict[str, dict[str, Result]] = {name: {} for name in repeats}
    print(f"event loop: {LOOP_NAME} (ragloom's own; *_stdloop: the standard library's)")
    head = ("DAG", "scheduler", "wall ms", "÷ crit.", "÷ nominal", "disp. p50")
    print("{:22} {:14} {:>9} {:>8} {:>9} {:>9}".format(*head))
    # on the independent DAG, ragloom's runs alternate with the floor's (same load moments)
    firsts = ["ragloom", "ragloom_traced", "asyncio_floor", "ragloom_stdloop", "floor_stdloop"]
    for name in (*firsts, "poll10ms"):
        RUNNERS[name](dags[0])  # warm-up, untimed
    plan = [(dags[0], firsts)]
    plan += [(dags[0], ["poll10ms"]), (dags[0], ["poll250ms"])]
    plan += [(dag, [name]) for dag in dags[1:] for name in ("ragloom", "poll10ms", "poll250ms")]
    plan += [(dags[0], ["ragloom_sync"])]
    for dag, names in plan:
        for name, r in median_runs(names, dag, repeats[names[0]]).items():
            results[name][dag.name] = r
            print(row(dag.name, name, r))
    stream = run_sync(streamed_plan())
    print(
        f"streamed plan: first task started at {stream['first_task_start_ms']} ms, "
        f"the plan stream ended at {stream['plan_stream_end_ms']} ms"
    )
    costs = per_task_us()
    print("µs per task (2,000 tasks, no sleep):", costs)
    print(json.dumps(summary(results, stream, repeats) | costs))


def summary(results: dict[str, dict[str, Result]], stream: dict, repeats: dict) -> dict:
    def worst(name: str) -> float:
        return round(max(r.ratio for r in results[name].values()), 4)

    def dispatch(name: str, q: int) -> float | None:
        return pct([x for r in results[name].values() for x in r.dispatch_ms], q)

    figures = {
        "ragloom_ratio_max": worst("ragloom"),
        "poll10ms_ratio_max": worst("poll10ms"),
        "poll250ms_ratio_max": worst("poll250ms"),
        "asyncio_floor_ratio": worst("asyncio_floor"),  # (independent DAG only)
        "ragloom_traced_ratio": worst("ragloom_traced"),  # (independent DAG only)
        "event_loop": LOOP_NAME,
        "ragloom_stdloop_ratio": worst("ragloom_stdloop"),  # (independent DAG only)
        "asyncio_floor_stdloop_ratio": worst("floor_stdloop"),  # (independent DAG only)
        "dispatch_ms_p50": dispatch("ragloom", 50),
        "dispatch_ms_p90": dispatch("ragloom", 90),
        "poll10ms_dispatch_ms_p50": dispatch("poll10ms", 50),
        "poll250ms_dispatch_ms_p50": dispatch("poll250ms", 50),
        "ragloom_ratio_nominal_max": round(
            max(r.ratio_nominal for r in results["ragloom"].values()), 4
        ),
        "ratios": {n: {d: round(r.ratio, 4) for d, r in v.items()} for n, v in results.items()},
        **stream,
        "repeats": repeats,
    }
    figures["meets_targets"] = (
        figures["ragloom_ratio_max"] <= 1.05
        and (figures["dispatch_ms_p50"] or 0.0) < 1.0
        and stream["first_task_before_plan_end"]
    )
    return figures


if __name__ == "__main__":
    main()
