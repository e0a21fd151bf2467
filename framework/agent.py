"""The agent loop: plan → execute → join, with replanning, on a LangGraph ``StateGraph``.

:class:`Agent` is the runnable users call (``invoke``/``ainvoke``/``stream``/``astream``). Under
it, :meth:`Agent.compile` builds a LangGraph graph with three nodes — ``plan`` (the planner LLM
streams a plan; each task starts on the task-fetching unit the moment its line is parsed),
``execute`` (waits for the plan's tasks) and ``join`` (the joiner answers ``Finish`` or asks to
``Replan``) — and a conditional edge back to ``plan`` bounded by ``max_replans``.

With a SQLite ``checkpointer`` a run killed mid-way resumes from its ``thread_id``: the graph
state is checkpointed after every node, and each task's observation is journalled in the
LangGraph store (same SQLite file) the moment it finishes, so a resumed run re-runs only the
tasks that had not finished.

This module defines the planner/joiner protocols the agent calls; the LLMCompiler planner and
the joiner themselves live in :mod:`ragloom.planners`. The graph machinery is in
``_agent_graph``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ragloom._sync import run_sync
from ragloom.errors import ConfigError

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.graph.state import CompiledStateGraph
    from langgraph.store.base import BaseStore

    from ragloom.runtime.llm import LLM, Message
    from ragloom.tfu import Observation
    from ragloom.tools import Tool, ToolRegistry
    from ragloom.trace import Trace

__all__ = [
    "Agent",
    "AgentEvent",
    "AgentResult",
    "Finish",
    "Joiner",
    "PlanRound",
    "Planner",
    "Replan",
    "next_task_id",
]


@dataclass(frozen=True, slots=True)
class Finish:
    """The joiner's verdict: the observations answer the question.

    Attributes:
        answer: the final answer text.
        sources: ids of the evidence the answer cites (chunk ids), if any.
    """

    answer: str
    sources: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Replan:
    """The joiner's verdict: more tool calls are needed, and why."""

    reason: str


@dataclass(frozen=True, slots=True)
class PlanRound:
    """One plan → execute → join cycle.

    Attributes:
        plan: the plan text as the planner wrote it.
        first_id: the id of its first task (numbering continues across rounds).
        observations: task id -> observation, for this round's tasks.
        error: the plan parse error, if the plan broke off at a malformed line.
        reason: the joiner's reason to replan after this round ("" if it finished).
    """

    plan: str
    first_id: int = 1
    observations: dict[int, Observation] = field(default_factory=dict)
    error: str = ""
    reason: str = ""


class Planner(Protocol):
    """Writes a plan, streamed as text deltas, in the LLMCompiler plan format."""

    def astream(
        self,
        question: str,
        registry: ToolRegistry,
        rounds: Sequence[PlanRound],
        history: Sequence[Message] = (),
    ) -> AsyncIterator[str]:
        """Yield the plan text; after a replan, ids continue at ``next_task_id(rounds)``."""
        ...


class Joiner(Protocol):
    """Reads a round's observations and answers or asks for another plan."""

    async def ajoin(
        self,
        question: str,
        rounds: Sequence[PlanRound],
        *,
        can_replan: bool,
        history: Sequence[Message] = (),
    ) -> Finish | Replan:
        """Decide; with ``can_replan=False`` it must return :class:`Finish`."""
        ...


@dataclass(frozen=True, slots=True)
class AgentEvent:
    """One streamed event.

    Attributes:
        kind: ``"token"`` (a planner text delta), ``"task"`` (a task parsed from the plan),
            ``"started"``/``"finished"`` (task-fetching-unit events), ``"plan_error"``,
            ``"replan"``, ``"finish"``, ``"node"`` (a graph node finished) or ``"result"``.
        data: the payload: text, the Task, the TaskEvent, the AgentResult, ...
    """

    kind: str
    data: Any = None


@dataclass(slots=True)
class AgentResult:
    """What an agent run produced.

    Attributes:
        answer: the final answer.
        sources: ids of the evidence (chunk ids) behind the answer.
        plans: the plan text of every round.
        observations: task id -> observation, over all rounds.
        trace: per-task timings of the tasks this process ran.
        rounds: the rounds themselves (plans, observations, replan reasons).
    """

    answer: str
    sources: list[str]
    plans: list[str]
    observations: dict[int, Observation]
    trace: Trace | None = None
    rounds: list[PlanRound] = field(default_factory=list)


class Agent:
    """A planner agent: plan in parallel, execute on the task-fetching unit, join, replan.

    Args:
        llm: the language model for the default planner and joiner.
        tools: functions or :class:`~ragloom.tools.Tool` objects, or a ``ToolRegistry``.
        planner: writes the plans (default: ``LLMCompilerPlanner(llm)``).
        joiner: decides Finish / Replan (default: ``LLMJoiner(llm)``).
        max_replans: how many times the joiner may ask for a new plan (>= 0).
        checkpointer: a SQLite file path (graph checkpoints plus a per-task journal, so a
            killed run resumes without re-running finished tasks), a LangGraph checkpointer
            object, or None (no persistence).
        store: with a checkpointer object, the LangGraph store for the per-task journal
            (default: in memory, so only finished nodes survive a crash).
        executor: ``"local"`` (asyncio + threads) or ``"ray"``.
        task_timeout: default per-task timeout in seconds (None: the tools' own).

    Example:
        >>> from ragloom.runtime import FakeLLM
        >>> def add(a: int, b: int) -> int:
        ...     "Add two integers."
        ...     return a + b
        >>> llm = FakeLLM(["1. add(2, 3)\\n2. join()<END_OF_PLAN>",
        ...                '{"action": "finish", "answer": "5"}'])
        >>> Agent(llm, [add]).invoke("2+3?").answer
        '5'
    """

    def __init__(
        self,
        llm: LLM,
        tools: Sequence[Tool | Callable[..., Any]] | ToolRegistry,
        *,
        planner: Planner | None = None,
        joiner: Joiner | None = None,
        max_replans: int = 2,
        checkpointer: str | Path | BaseCheckpointSaver | None = None,
        store: BaseStore | None = None,
        executor: Literal["local", "ray"] = "local",
        task_timeout: float | None = None,
    ) -> None:
        if max_replans < 0:
            raise ConfigError(f"max_replans must be >= 0, got {max_replans}")
        if executor not in ("local", "ray"):
            raise ConfigError(f"executor must be 'local' or 'ray', got {executor!r}")
        from ragloom.planners.joiner import LLMJoiner
        from ragloom.planners.llmcompiler import LLMCompilerPlanner

        self.llm = llm
        self.registry = _as_registry(tools)
        self.planner: Planner = planner or LLMCompilerPlanner(llm)
        self.joiner: Joiner = joiner or LLMJoiner(llm)
        self.max_replans = max_replans
        self.checkpointer = checkpointer
        self.store = store
        self.executor = executor
        self.task_timeout = task_timeout

    def compile(
        self, checkpointer: BaseCheckpointSaver | None = None, store: Any = None
    ) -> CompiledStateGraph[Any, Any, Any, Any]:
        """Build the LangGraph graph (plan → execute → join ↺) with this checkpointer/store."""
        from ragloom._agent_graph import build_graph

        return build_graph(self, checkpointer=checkpointer, store=store)

    async def astream(
        self,
        question: str,
        *,
        thread_id: str | None = None,
        history: Sequence[Message] = (),
        resume: bool = True,
    ) -> AsyncIterator[AgentEvent]:
        """Run the agent, yielding events as they happen; the last event is the result.

        With a checkpointer, an unfinished run of the same question on ``thread_id`` is
        resumed (``resume=False`` starts over).
        """
        from ragloom._agent_graph import run_graph

        thread = thread_id or uuid.uuid4().hex
        async for event in run_graph(self, question, thread, list(history), resume=resume):
            yield event

    async def ainvoke(
        self,
        question: str,
        *,
        thread_id: str | None = None,
        history: Sequence[Message] = (),
        resume: bool = True,
    ) -> AgentResult:
        """Run the agent to its answer (async)."""
        result: AgentResult | None = None
        async for event in self.astream(
            question, thread_id=thread_id, history=history, resume=resume
        ):
            if event.kind == "result":
                result = event.data
        assert result is not None, "the graph ended without a result"
        return result

    def invoke(
        self,
        question: str,
        *,
        thread_id: str | None = None,
        history: Sequence[Message] = (),
        resume: bool = True,
    ) -> AgentResult:
        """Run the agent to its answer (blocking; inside a running loop, in a worker thread)."""
        coro = self.ainvoke(question, thread_id=thread_id, history=history, resume=resume)
        return run_sync(coro)

    def stream(
        self,
        question: str,
        *,
        thread_id: str | None = None,
        history: Sequence[Message] = (),
        resume: bool = True,
    ) -> Iterator[AgentEvent]:
        """Blocking twin of :meth:`astream`: the run goes on in a worker thread."""
        import queue
        import threading

        box: queue.Queue[AgentEvent | BaseException | None] = queue.Queue()

        async def pump() -> None:
            async for event in self.astream(
                question, thread_id=thread_id, history=history, resume=resume
            ):
                box.put(event)

        def work() -> None:
            try:
                run_sync(pump())
                box.put(None)
            except BaseException as exc:  # re-raised in the caller's thread
                box.put(exc)

        threading.Thread(target=work, daemon=True).start()
        while (item := box.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item


def next_task_id(rounds: Sequence[PlanRound]) -> int:
    """The id the next plan starts at: one past every id used so far.

    >>> next_task_id([])
    1
    >>> next_task_id([PlanRound(plan="1. a()\\n2. b()\\n3. join()", first_id=1)])
    4
    """
    ids = [int(m) for r in rounds for m in _TASK_ID.findall(r.plan)]
    ids += [i for r in rounds for i in r.observations]
    return max(ids, default=0) + 1


_TASK_ID = re.compile(r"(?m)^\s*(\d+)\s*\.")


def _as_registry(tools: Sequence[Tool | Callable[..., Any]] | ToolRegistry) -> ToolRegistry:
    from ragloom.tools import ToolRegistry

    return tools if isinstance(tools, ToolRegistry) else ToolRegistry(tools)
