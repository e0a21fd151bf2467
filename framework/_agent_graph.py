"""The LangGraph graph behind :class:`ragloom.agent.Agent`: nodes, journal, resume.

``plan`` streams the planner's text; every task parsed from it goes at once onto an asyncio
queue that a task-fetching unit (started in the background) consumes, so tools run while the
plan is still being written. ``execute`` waits for that run — or, after a resume in a new
process, re-parses the checkpointed plan and runs only the tasks the journal has no
observation for. ``join`` asks the joiner and either ends or loops back to ``plan``.

The journal is the LangGraph store (``AsyncSqliteStore`` on the checkpoint file): one entry
per finished task, written the moment it finishes, keyed by thread, run and round, and
checked against the task's plan line before it is reused. This module does not build prompts
or parse joiner output (that is :mod:`ragloom.planners`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from ragloom._agent_journal import journal_load, journal_put, journalled, persistence
from ragloom.agent import AgentEvent, AgentResult, Finish, PlanRound, next_task_id
from ragloom.errors import PlanError
from ragloom.planners._render import evidence_ids
from ragloom.runtime.llm import Message

if TYPE_CHECKING:
    from langgraph.graph.state import CompiledStateGraph

    from ragloom.agent import Agent
    from ragloom.plan import Task
    from ragloom.tfu import Observation, TaskEvent
    from ragloom.tools import ToolRegistry
    from ragloom.trace import Trace

__all__ = ["build_graph", "parse_plan_text", "run_graph"]

_JOURNAL = "ragloom_journal"


class AgentState(TypedDict, total=False):
    """The checkpointed graph state."""

    question: str
    history: list[Message]
    run_id: str
    rounds: list[PlanRound]
    answer: str | None
    sources: list[str]


@dataclass(slots=True)
class RunContext:
    """Per-run objects the nodes share (LangGraph ``context``; never checkpointed)."""

    agent: Agent
    thread_id: str
    trace: Trace
    live: dict[int, asyncio.Task[dict[int, Observation]]] = field(default_factory=dict)
    sink: _Sink | None = None


class _Sink:
    """Task-fetching-unit event callback: forwards events to the stream, journals results."""

    def __init__(self, writer: Any, store: Any, namespace: tuple[str, ...], raws: dict[int, str]):
        self.writer = writer
        self.store = store
        self.namespace = namespace
        self.raws = raws
        self.pending: set[asyncio.Task[None]] = set()

    def __call__(self, event: TaskEvent) -> None:
        self.writer({"kind": event.kind, "data": event})
        obs = event.observation
        if obs is not None and self.store is not None:
            put = asyncio.ensure_future(journal_put(self.store, self.namespace, obs, self.raws))
            self.pending.add(put)
            put.add_done_callback(self.pending.discard)

    async def flush(self) -> None:
        if self.pending:
            await asyncio.gather(*self.pending)


def parse_plan_text(text: str, registry: ToolRegistry) -> tuple[list[Task], str]:
    """Parse plan text the way the streaming parser saw it: tasks up to the first bad line.

    Returns the tasks (``join()`` left out) and the error message ("" if none).
    """
    from ragloom.plan_parser import StreamingPlanParser

    parser = StreamingPlanParser(registry)
    tasks: list[Task] = []
    try:
        for line in text.splitlines(keepends=True):  # line by line: keep tasks before an error
            tasks += parser.feed(line)
        tasks += parser.close()
    except PlanError as exc:
        return [t for t in tasks if not t.is_join], str(exc)
    return [t for t in tasks if not t.is_join], ""


def _namespace(ctx: RunContext, state: AgentState, index: int) -> tuple[str, ...]:
    return (_JOURNAL, ctx.thread_id, state.get("run_id", ""), str(index))


# --- nodes ---------------------------------------------------------------------------------


def _prior(rounds: Sequence[PlanRound]) -> dict[int, Observation]:
    return {k: v for r in rounds for k, v in r.observations.items()}


def _tfu(ctx: RunContext, sink: _Sink) -> Any:
    from ragloom.tfu import TaskFetchingUnit

    agent = ctx.agent
    return TaskFetchingUnit(
        agent.registry,
        executor=agent.executor,
        default_timeout=agent.task_timeout,
        on_event=sink,
    )


async def _plan(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, write = runtime.context, runtime.stream_writer
    rounds = list(state.get("rounds", []))
    index, first_id = len(rounds), next_task_id(rounds)
    namespace = _namespace(ctx, state, index)
    entries = await journal_load(runtime.store, namespace)
    if "plan" in entries:  # resumed: the plan was complete before the process died
        text = entries["plan"]["text"]
        write({"kind": "token", "data": text})
        _, error = parse_plan_text(text, ctx.agent.registry)
        return {"rounds": [*rounds, PlanRound(plan=text, first_id=first_id, error=error)]}
    raws: dict[int, str] = {}
    sink = ctx.sink = _Sink(write, runtime.store, namespace, raws)
    queue: asyncio.Queue[Task | None] = asyncio.Queue()
    ctx.live[index] = asyncio.ensure_future(
        _tfu(ctx, sink).run(_drain(queue), trace=ctx.trace, results=_prior(rounds))
    )
    try:
        text, error = await _stream_plan(ctx, state, rounds, queue, raws, write)
    except BaseException:
        ctx.live.pop(index).cancel()
        raise
    if runtime.store is not None:
        await runtime.store.aput(namespace, "plan", {"text": text})
    return {"rounds": [*rounds, PlanRound(plan=text, first_id=first_id, error=error)]}


async def _stream_plan(
    ctx: RunContext,
    state: AgentState,
    rounds: list[PlanRound],
    queue: asyncio.Queue[Task | None],
    raws: dict[int, str],
    write: Any,
) -> tuple[str, str]:
    """Stream the planner into the queue; returns (plan text, parse error or "")."""
    from ragloom.plan_parser import StreamingPlanParser

    agent = ctx.agent
    parser = StreamingPlanParser(agent.registry)
    pieces: list[str] = []
    error = ""
    stream = agent.planner.astream(
        state["question"], agent.registry, rounds, state.get("history", [])
    )
    async for delta in stream:
        pieces.append(delta)
        write({"kind": "token", "data": delta})
        if not error:
            error = _feed(parser, delta, queue, raws, write)
    if not error:
        error = _feed(parser, None, queue, raws, write)
    queue.put_nowait(None)
    return "".join(pieces), error


def _feed(
    parser: Any,
    delta: str | None,
    queue: asyncio.Queue[Task | None],
    raws: dict[int, str],
    write: Any,
) -> str:
    # line by line, so the tasks before a bad line in the same delta still run
    pieces = delta.splitlines(keepends=True) if delta is not None else [None]
    for piece in pieces:
        try:
            tasks = parser.feed(piece) if piece is not None else parser.close()
        except PlanError as exc:
            write({"kind": "plan_error", "data": str(exc)})
            return str(exc)
        for task in tasks:
            write({"kind": "task", "data": task})
            if not task.is_join:
                raws[task.id] = task.raw
                queue.put_nowait(task)
    return ""


async def _drain(queue: asyncio.Queue[Task | None]) -> AsyncIterator[Task]:
    while (task := await queue.get()) is not None:
        yield task


async def _execute(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx = runtime.context
    rounds = list(state["rounds"])
    index, current = len(rounds) - 1, rounds[-1]
    live = ctx.live.pop(index, None)
    if live is not None:  # tasks started while the plan streamed
        assert ctx.sink is not None
        ctx.sink.writer = runtime.stream_writer
        observations = dict(await live)
        await ctx.sink.flush()
    else:  # resumed in a new process: run what the journal lacks
        observations = await _run_rest(ctx, state, runtime, index, current)
    prior = _prior(rounds[:-1])
    mine = {k: v for k, v in observations.items() if k not in prior}
    rounds[-1] = dataclasses.replace(current, observations=mine)
    return {"rounds": rounds}


async def _run_rest(
    ctx: RunContext,
    state: AgentState,
    runtime: Runtime[RunContext],
    index: int,
    current: PlanRound,
) -> dict[int, Observation]:
    tasks, _ = parse_plan_text(current.plan, ctx.agent.registry)
    namespace = _namespace(ctx, state, index)
    done = journalled(await journal_load(runtime.store, namespace), tasks)
    for obs in done.values():
        runtime.stream_writer({"kind": "resumed", "data": obs})
    raws = {t.id: t.raw for t in tasks}
    sink = _Sink(runtime.stream_writer, runtime.store, namespace, raws)
    todo = [t for t in tasks if t.id not in done]
    results = {**_prior(state["rounds"][:-1]), **done}
    out = await _tfu(ctx, sink).run(todo, trace=ctx.trace, results=results) if todo else {}
    await sink.flush()
    return {**done, **out}


async def _join(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx, write = runtime.context, runtime.stream_writer
    rounds = list(state["rounds"])
    can_replan = len(rounds) <= ctx.agent.max_replans
    decision = await ctx.agent.joiner.ajoin(
        state["question"], rounds, can_replan=can_replan, history=state.get("history", [])
    )
    if isinstance(decision, Finish):
        write({"kind": "finish", "data": decision})
        sources = list(decision.sources) or evidence_ids(_prior(rounds).values())
        return {"answer": decision.answer, "sources": sources}
    write({"kind": "replan", "data": decision})
    if not can_replan:  # the joiner ignored the instruction: report, do not loop
        return {"answer": f"No answer found: {decision.reason}", "sources": []}
    rounds[-1] = dataclasses.replace(rounds[-1], reason=decision.reason)
    return {"rounds": rounds}


def _after_join(state: AgentState) -> str:
    return END if state.get("answer") is not None else "plan"


def build_graph(
    agent: Agent, *, checkpointer: Any = None, store: Any = None
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """plan → execute → join, and join → plan while the joiner asks to replan."""
    builder = StateGraph(AgentState, context_schema=RunContext)
    builder.add_node("plan", _plan)
    builder.add_node("execute", _execute)
    builder.add_node("join", _join)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "execute")
    builder.add_edge("execute", "join")
    builder.add_conditional_edges("join", _after_join, ["plan", END])
    return builder.compile(checkpointer=checkpointer, store=store)


async def run_graph(
    agent: Agent, question: str, thread_id: str, history: list[Message], *, resume: bool
) -> AsyncIterator[AgentEvent]:
    """Run (or resume) the graph on ``thread_id``, yielding events, then the result."""
    from ragloom.trace import Trace

    config: Any = {"configurable": {"thread_id": thread_id}, "recursion_limit": 100}
    ctx = RunContext(agent=agent, thread_id=thread_id, trace=Trace())
    async with persistence(agent.checkpointer, agent.store) as (saver, store):
        graph: Any = build_graph(agent, checkpointer=saver, store=store)
        inputs: AgentState | None = {
            "question": question,
            "history": history,
            "run_id": uuid.uuid4().hex,
            "rounds": [],
            "answer": None,
            "sources": [],
        }
        if saver is not None and resume:
            snapshot = await graph.aget_state(config)
            if snapshot.next and snapshot.values.get("question") == question:
                inputs = None  # continue the unfinished run from its last checkpoint
        final: dict[str, Any] = {}
        try:
            async for mode, chunk in graph.astream(
                inputs, config, context=ctx, stream_mode=["custom", "updates", "values"]
            ):
                if mode == "custom":
                    yield AgentEvent(chunk["kind"], chunk["data"])
                elif mode == "updates":
                    for node in chunk:
                        yield AgentEvent("node", node)
                else:
                    final = chunk
        finally:
            for live in ctx.live.values():
                live.cancel()
    yield AgentEvent("result", _result(final, ctx))


def _result(state: dict[str, Any], ctx: RunContext) -> AgentResult:
    rounds: list[PlanRound] = list(state.get("rounds", []))
    return AgentResult(
        answer=state.get("answer") or "",
        sources=list(state.get("sources", [])),
        plans=[r.plan for r in rounds],
        observations=_prior(rounds),
        trace=ctx.trace,
        rounds=rounds,
    )
