"""The task-fetching unit: parallel runs, failures, timeouts, retries, limits, streams, cancel.

No timing assertions: ordering and concurrency are checked with events, barriers and counters.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragloom import (
    Observation,
    RetryPolicy,
    Task,
    TaskEvent,
    TaskFetchingUnit,
    Tool,
    ToolRegistry,
    Trace,
    parse_plan,
    tool,
)
from ragloom.errors import ConfigError, PlanError, RunCancelledError


def add(a: int, b: int) -> int:
    """Add two integers (sync: runs in the thread pool)."""
    return a + b


async def hits(query: str) -> list[dict]:
    """Pretend search returning objects."""
    await asyncio.sleep(0)
    return [{"id": f"{query}-1"}, {"id": f"{query}-2"}]


def count(items: list) -> int:
    """Count items."""
    return len(items)


def echo(text: str) -> str:
    """Return the text."""
    return text


def boom(x: int = 0) -> int:
    """Always fails."""
    raise ValueError(f"boom {x}")


def registry(*extra: Tool) -> ToolRegistry:
    return ToolRegistry([add, hits, count, echo, boom, *extra])


async def run_text(text: str, reg: ToolRegistry | None = None, **kwargs) -> dict:
    reg = reg or registry()
    return await TaskFetchingUnit(reg, **kwargs).run(parse_plan(text, reg))


async def test_dag_runs_with_object_passing_and_formatting() -> None:
    out = await run_text(
        "1. hits('paris')\n2. add(2, 3)\n3. count($1)\n4. add($2, $3)\n"
        "5. echo('n=$4, first=${1}')\n6. join()"
    )
    assert out[3].value == 2 and out[4].value == 7  # $1 arrived as the list object
    assert out[5].value == "n=7, first=[{'id': 'paris-1'}, {'id': 'paris-2'}]"
    assert out[4].args == {"a": 5, "b": 2} and out[4].attempts == 1
    assert out[6].ok and out[6].value is None and out[6].tool == "join"
    assert all(o.ok for o in out.values())


async def test_failing_tool_fails_its_dependants_not_the_run() -> None:
    out = await run_text("1. boom(7)\n2. add($1, 1)\n3. echo('after $2')\n4. add(1, 1)\n5. join()")
    assert out[1].error == "ValueError: boom 7" and not out[1].ok
    assert out[2].error == "dependency $1 failed: ValueError: boom 7" and out[2].attempts == 0
    assert out[3].error.startswith("dependency $2 failed: dependency $1 failed")
    assert out[4].value == 2 and out[5].ok


async def test_bad_arguments_at_run_time_are_error_observations() -> None:
    reg = registry()
    tasks = [Task(1, "echo", {"text": "x"}), Task(2, "add", {"a": "$1", "b": 1})]
    tasks.append(Task(3, "nope", {}))
    out = await TaskFetchingUnit(reg).run(tasks)
    assert out[1].ok
    assert "tool 'add': argument 'a'" in out[2].error and out[2].attempts == 0
    assert "unknown tool 'nope'" in out[3].error


async def test_arguments_that_break_validation_are_an_error_not_a_hang() -> None:
    out = await asyncio.wait_for(TaskFetchingUnit(registry()).run([Task(1, "echo", {1: "x"})]), 5)
    assert out[1].error.startswith("TypeError") and out[1].attempts == 0


async def test_hanging_tools_time_out() -> None:
    release = threading.Event()

    @tool(timeout=0.05)
    async def stall() -> None:
        """Hangs."""
        await asyncio.Event().wait()

    def sync_stall() -> None:
        """Hangs in a thread."""
        release.wait(10)

    reg = registry(stall, Tool.from_function(sync_stall))
    try:
        out = await TaskFetchingUnit(reg, default_timeout=0.1).run(
            parse_plan("1. stall()\n2. sync_stall()\n3. echo('$1')\n4. echo('ok')", reg)
        )
    finally:
        release.set()
    assert out[1].error == "tool 'stall': timed out after 0.05 s"
    assert out[2].error == "tool 'sync_stall': timed out after 0.1 s"
    assert out[3].error.startswith("dependency $1 failed: tool 'stall': timed out")
    assert out[4].value == "ok"


async def test_retry_policy_and_tool_retries() -> None:
    calls = {"flaky": 0, "stubborn": 0}

    def flaky() -> str:
        """Fails twice, then works."""
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionError("try again")
        return "ok"

    @tool(retries=1)
    def stubborn() -> str:
        """Always fails."""
        calls["stubborn"] += 1
        raise ConnectionError("down")

    reg = registry(Tool.from_function(flaky), stubborn)
    policy = RetryPolicy(max_attempts=3, backoff_s=0.001)
    out = await run_text("1. flaky()\n2. stubborn()\n3. boom()", reg, retry=policy)
    assert out[1].value == "ok" and out[1].attempts == 3
    assert out[2].attempts == 2 and calls["stubborn"] == 2  # the tool's own retries win
    assert out[3].attempts == 3
    only_conn = RetryPolicy(max_attempts=3, retry_on=(ConnectionError,))
    out = await run_text("1. boom()", reg, retry=only_conn)
    assert out[1].attempts == 1  # ValueError is not worth another attempt


async def test_per_tool_concurrency_limit_is_respected() -> None:
    state = {"now": 0, "peak": 0}

    @tool(max_concurrency=2)
    async def limited(i: int) -> int:
        """At most two at once."""
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.005)
        state["now"] -= 1
        return i

    reg = registry(limited)
    out = await TaskFetchingUnit(reg).run([Task(i, "limited", {"i": i}) for i in range(1, 9)])
    assert [o.value for o in out.values()] == list(range(1, 9))
    assert state["peak"] == 2


async def test_failed_and_timed_out_calls_give_back_their_concurrency_slot() -> None:
    @tool(max_concurrency=1, retries=1, timeout=0.05)
    async def gated(i: int) -> int:
        """One at a time; 1 fails, 2 hangs."""
        if i == 1:
            raise ConnectionError("down")
        if i == 2:
            await asyncio.Event().wait()
        return i

    tasks = [Task(i, "gated", {"i": i}) for i in (1, 2, 3)]
    out = await asyncio.wait_for(TaskFetchingUnit(registry(gated)).run(tasks), 5)
    assert out[1].error == "ConnectionError: down" and out[1].attempts == 2
    assert out[2].error == "tool 'gated': timed out after 0.05 s" and out[2].attempts == 2
    assert out[3].value == 3  # a slot kept by a failed attempt would leave it waiting


async def test_sync_tools_run_in_parallel_threads() -> None:
    barrier = threading.Barrier(12, timeout=10)  # breaks if the pool serializes the calls

    def meet(i: int) -> int:
        """Wait for all the others."""
        barrier.wait()
        return i

    reg = registry(Tool.from_function(meet))
    out = await TaskFetchingUnit(reg).run([Task(i, "meet", {"i": i}) for i in range(1, 13)])
    assert all(o.ok for o in out.values()), [o.error for o in out.values()]


async def test_first_task_starts_before_the_stream_ends() -> None:
    started = asyncio.Event()
    stream_finished = False

    async def first() -> str:
        """Signals that it runs."""
        started.set()
        return "first"

    reg = registry(Tool.from_function(first))

    async def stream() -> AsyncIterator[Task]:
        nonlocal stream_finished
        yield Task(1, "first")
        await asyncio.wait_for(started.wait(), 5)  # only continues once task 1 is running
        yield Task(2, "echo", {"text": "after $1"})
        await asyncio.sleep(0.01)
        yield Task(3, "join")
        stream_finished = True

    out = await TaskFetchingUnit(reg).run(stream())
    assert stream_finished and out[2].value == "after first" and out[3].ok


async def test_streamed_task_may_arrive_before_its_dependency() -> None:
    async def stream() -> AsyncIterator[Task]:
        yield Task(2, "echo", {"text": "got $1"})  # waits for task 1
        await asyncio.sleep(0.01)
        yield Task(1, "echo", {"text": "one"})

    out = await TaskFetchingUnit(registry()).run(stream())
    assert out[2].value == "got one"


async def test_missing_dependency_and_cycles_fail_when_the_stream_ends() -> None:
    tasks = [
        Task(1, "echo", {"text": "$99"}),
        Task(2, "echo", {"text": "$1"}),
        Task(3, "echo", {"text": "$4"}),
        Task(4, "echo", {"text": "$3"}),
        Task(5, "echo", {"text": "fine"}),
        Task(6, "join"),
        Task(7, "echo", {"text": "$8"}),  # waits on a cycle without being in it
        Task(8, "echo", {"text": "$9 $10"}),
        Task(9, "echo", {"text": "$10"}),
        Task(10, "echo", {"text": "$9"}),
    ]
    out = await asyncio.wait_for(TaskFetchingUnit(registry()).run(tasks), 10)
    assert "task 1: depends on $99, which never arrived" in out[1].error
    assert out[2].error.startswith("dependency $1 failed: PlanError")
    cycle_member, behind = sorted((3, 4), key=lambda i: "cycle" in out[i].error, reverse=True)
    assert "is in a dependency cycle $" in out[cycle_member].error
    assert out[behind].error.startswith(f"dependency ${cycle_member} failed")
    assert out[5].value == "fine" and out[6].ok
    # 7 and 8 only wait on the cycle 9 <-> 10: they fail as dependants, not as its members
    assert out[7].error.startswith("dependency $8 failed: dependency $")
    assert out[8].error.startswith(("dependency $9 failed", "dependency $10 failed"))
    assert any(f"task {i}: is in a dependency cycle ${i} -> $" in out[i].error for i in (9, 10))


async def test_results_of_earlier_rounds_feed_dependants_and_are_not_rerun() -> None:
    prior = {1: Observation(1, "hits", {"query": "x"}, value=["a", "b", "c"])}
    out = await TaskFetchingUnit(registry()).run([Task(2, "count", {"items": "$1"})], results=prior)
    assert list(out) == [2] and out[2].value == 3
    with pytest.raises(PlanError, match="task id 1 is used twice"):
        await TaskFetchingUnit(registry()).run([Task(1, "echo", {"text": "a"})], results=prior)


async def test_cancel_stops_the_whole_run() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def forever() -> None:
        """Runs until cancelled."""
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    reg = registry(Tool.from_function(forever))
    unit = TaskFetchingUnit(reg)
    run = asyncio.ensure_future(unit.run([Task(1, "forever"), Task(2, "echo", {"text": "$1"})]))
    await asyncio.wait_for(started.wait(), 5)
    unit.cancel()
    with pytest.raises(RunCancelledError):
        await asyncio.wait_for(run, 5)
    assert cancelled.is_set()


async def test_cancel_from_another_thread() -> None:
    started = threading.Event()

    async def forever() -> None:
        """Runs until cancelled."""
        started.set()
        await asyncio.Event().wait()

    unit = TaskFetchingUnit(registry(Tool.from_function(forever)))
    threading.Thread(target=lambda: started.wait(5) and unit.cancel()).start()
    with pytest.raises(RunCancelledError):
        await asyncio.wait_for(unit.run([Task(1, "forever")]), 5)


async def test_events_and_trace_cover_every_task(tmp_path) -> None:
    events: list[TaskEvent] = []
    trace = Trace()
    reg = registry()
    unit = TaskFetchingUnit(reg, on_event=events.append)
    await unit.run(parse_plan("1. add(1, 2)\n2. boom()\n3. add($1, $2)", reg), trace=trace)
    kinds = {(e.task_id, e.kind) for e in events}
    assert {(1, "queued"), (1, "started"), (1, "finished"), (2, "failed"), (3, "failed")} <= kinds
    assert (3, "started") not in kinds  # a dependant of a failure never starts
    assert events[-1].observation is not None
    records = {r.task_id: r for r in trace.records}
    assert records[1].ok and records[1].started >= records[1].ready >= records[1].queued
    assert records[3].started is None and records[3].error.startswith("dependency $2")
    assert trace.makespan >= records[1].duration >= 0
    assert trace.to_dict()["records"][0]["value"] == "3"
    png = tmp_path / "trace.png"
    fig = trace.plot(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and fig.axes[0].get_yticklabels()


async def test_a_broken_event_listener_does_not_break_the_run(caplog) -> None:
    def listener(event: TaskEvent) -> None:
        raise RuntimeError("listener bug")

    out = await TaskFetchingUnit(registry(), on_event=listener).run(
        [Task(1, "add", {"0": 1, "1": 1})]
    )
    assert out[1].value == 2 and "listener bug" in caplog.text


async def test_a_tool_raising_cancelled_error_is_a_failure_not_a_hang() -> None:
    async def gives_up() -> None:
        """Cancels itself, as some client libraries do on their own timeouts."""
        raise asyncio.CancelledError("upstream gave up")

    reg = registry(Tool.from_function(gives_up))
    out = await asyncio.wait_for(
        TaskFetchingUnit(reg).run([Task(1, "gives_up"), Task(2, "echo", {"text": "$1"})]), 5
    )
    assert out[1].error == "CancelledError: upstream gave up"
    assert out[2].error.startswith("dependency $1 failed")


@pytest.mark.timeout(30)
async def test_system_exit_in_a_tool_ends_the_run() -> None:
    def leave() -> None:
        """Exits."""
        raise SystemExit(3)

    unit = TaskFetchingUnit(registry(Tool.from_function(leave)))
    with pytest.raises(SystemExit):  # (no wait_for: its task would let SystemExit escape)
        await unit.run([Task(1, "leave"), Task(2, "echo", {"text": "x"})])


async def test_a_failing_stream_ends_the_run_with_its_error() -> None:
    async def stream() -> AsyncIterator[Task]:
        yield Task(1, "echo", {"text": "a"})
        raise PlanError("bad line", line=2)

    with pytest.raises(PlanError, match="line 2: bad line"):
        await TaskFetchingUnit(registry()).run(stream())


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="executor"):
        TaskFetchingUnit(registry(), executor="gpu")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="default_timeout"):
        TaskFetchingUnit(registry(), default_timeout=0)
    with pytest.raises(ConfigError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigError, match="contradicts"):
        Observation(1, "x", {}, error="e", ok=True)


# --- property: any DAG, any failures, streamed in any order ----------------------------------


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[Task], set[int], bool]:
    """Tasks with random earlier dependencies, a set of failing ids, and stream or list."""
    n = draw(st.integers(1, 14))
    tasks = []
    for i in range(1, n + 1):
        deps = draw(st.sets(st.integers(1, i - 1), max_size=3)) if i > 1 else set()
        tasks.append(Task(i, "step", {"i": i, "after": [f"${d}" for d in sorted(deps)]}))
    failing = draw(st.sets(st.integers(1, n), max_size=3))
    return draw(st.permutations(tasks)), failing, draw(st.booleans())


@settings(max_examples=40, deadline=None)
@given(dags())
@pytest.mark.timeout(60)
def test_property_every_task_gets_the_right_observation(case) -> None:
    tasks, failing, streamed = case
    ended: dict[int, int] = {}
    clock = iter(range(10**6))

    async def step(i: int, after: list) -> int:
        """Fails for the chosen ids."""
        await asyncio.sleep(0)
        ended[i] = next(clock)
        if i in failing:
            raise RuntimeError(f"fail {i}")
        return i

    started: dict[int, int] = {}

    def on_event(event: TaskEvent) -> None:
        if event.kind == "started":
            started[event.task_id] = next(clock)

    async def stream():
        for task in tasks:
            yield task
            await asyncio.sleep(0)

    unit = TaskFetchingUnit(ToolRegistry([Tool.from_function(step)]), on_event=on_event)
    out = asyncio.run(asyncio.wait_for(unit.run(stream() if streamed else tasks), 10))
    assert set(out) == {t.id for t in tasks}
    for task in sorted(tasks, key=lambda t: t.id):
        dep_ok = all(out[d].ok for d in task.deps)
        assert out[task.id].ok == (dep_ok and task.id not in failing), out[task.id]
        if dep_ok:  # it ran, and only after every dependency had ended
            assert all(started[task.id] > ended[d] for d in task.deps)
            assert out[task.id].args["after"] == sorted(task.deps)
        else:
            assert task.id not in started and out[task.id].error.startswith("dependency $")
