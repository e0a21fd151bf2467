"""The LLMCompiler planner: one LLM call writes a DAG of tool calls, streamed line by line.

The prompt lists the registry's tools (numbered, ``join()`` last), the rules (increasing ids,
``$N`` for an earlier task's output, maximise parallelism) and any few-shot examples the
application supplies. :meth:`LLMCompilerPlanner.astream` yields the plan as text deltas; the
agent parses them with the streaming plan parser and starts each task as soon as its line is
complete. After a replan the prompt carries the previous plans, their results and the joiner's
reason, and asks the model to continue the numbering; results that do not fit the model's context
window are cut (each result's share halved, down to ``min_chars``) before the replan fails.

With ``constrained=True`` the first plan is decoded under the runtime's plan grammar, which
keeps small models on the format (the grammar numbers from 1, so replans are unconstrained).
This module does not parse or execute plans.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ragloom.agent import PlanRound, next_task_id
from ragloom.planners._render import render_rounds, stream_fitting
from ragloom.planners.prompts import END_OF_PLAN, PLANNER_SYSTEM, planner_messages
from ragloom.runtime.llm import LLM, Grammar, SamplingParams

if TYPE_CHECKING:
    from ragloom.runtime.llm import Message
    from ragloom.tools import ToolRegistry

__all__ = ["LLMCompilerPlanner", "example_plan", "render_tools"]


@dataclass(slots=True)
class LLMCompilerPlanner:
    """Writes LLMCompiler plans with an LLM.

    Args:
        llm: the language model.
        examples: few-shot examples, each ``"Question: ...\\n1. tool(...)\\n2. join()"``.
        constrained: decode the first plan under the plan grammar.
        max_tokens: the longest plan.
        system: the system prompt template (see :data:`~ragloom.planners.prompts.PLANNER_SYSTEM`).
        max_chars: the most characters of one task's result shown in a replan prompt.
        min_chars: the least a result is cut to when a replan prompt does not fit the model's
            context window (below it, the backend's ``ContextWindowError`` reaches the caller).

    >>> from ragloom.runtime import FakeLLM
    >>> planner = LLMCompilerPlanner(FakeLLM(["1. search(\\"x\\")\\n2. join()<END_OF_PLAN>"]))
    """

    llm: LLM
    examples: Sequence[str] = ()
    constrained: bool = False
    max_tokens: int = 400
    system: str = PLANNER_SYSTEM
    max_chars: int = 600
    min_chars: int = 100

    def messages(
        self,
        question: str,
        registry: ToolRegistry,
        rounds: Sequence[PlanRound] = (),
        history: Sequence[Message] = (),
        max_chars: int | None = None,
    ) -> list[Message]:
        """The prompt for the next plan (a replan prompt when ``rounds`` is not empty, with at
        most ``max_chars``, default ``self.max_chars``, of each earlier task's result)."""
        limit = self.max_chars if max_chars is None else max_chars
        reason = rounds[-1].reason if rounds else ""
        return planner_messages(
            system=self.system,
            tools=render_tools(registry),
            example=example_plan(registry, next_task_id(rounds)),
            question=question,
            examples=self.examples,
            first_id=next_task_id(rounds),
            replan_context=_replan_context(rounds, limit),
            reason=reason,
            history=history,
        )

    def params(self, registry: ToolRegistry, first_id: int = 1) -> SamplingParams:
        """Sampling parameters: stop at ``<END_OF_PLAN>``, the plan grammar when asked."""
        grammar: Grammar | None = None
        if self.constrained and first_id == 1:
            from ragloom.runtime.constrained import plan_grammar

            grammar = plan_grammar(registry.names)
        return SamplingParams(max_tokens=self.max_tokens, stop=(END_OF_PLAN,), grammar=grammar)

    async def astream(
        self,
        question: str,
        registry: ToolRegistry,
        rounds: Sequence[PlanRound] = (),
        history: Sequence[Message] = (),
    ) -> AsyncIterator[str]:
        """Yield the plan text as the LLM writes it."""
        params = self.params(registry, next_task_id(rounds))
        if not rounds:  # (nothing to cut in a first plan's prompt)
            deltas = self.llm.astream(self.messages(question, registry, (), history), params)
        else:
            deltas = stream_fitting(
                self.llm,
                lambda limit: self.messages(question, registry, rounds, history, limit),
                params,
                self.max_chars,
                self.min_chars,
            )
        async for delta in deltas:
            yield delta


def render_tools(registry: ToolRegistry) -> str:
    """One ``- name(params): description`` line per tool.

    Bullets, not numbers: small models copy numbered tool lists into their plans.

    >>> from ragloom.tools import ToolRegistry
    >>> def search(query: str) -> str:
    ...     "Search the web."
    ...     return ""
    >>> render_tools(ToolRegistry([search]))
    '- search(query: str): Search the web.'
    """
    lines = []
    for tool in registry:
        text = " ".join(tool.description.split())
        lines.append(f"- {tool.signature()}: {text}" if text else f"- {tool.signature()}")
    return "\n".join(lines)


def example_plan(registry: ToolRegistry, first_id: int = 1) -> str:
    """A one-call example in the plan format, built from the first tool.

    >>> from ragloom.tools import ToolRegistry
    >>> def search(query: str) -> str:
    ...     return ""
    >>> print(example_plan(ToolRegistry([search])))
    1. search(query="...")
    2. join()<END_OF_PLAN>
    """
    tool = next(iter(registry))
    args = f'{tool.parameters[0]}="..."' if tool.parameters else ""
    return f"{first_id}. {tool.name}({args})\n{first_id + 1}. join(){END_OF_PLAN}"


def _replan_context(rounds: Sequence[PlanRound], max_chars: int) -> str:
    if not rounds:
        return ""
    plans = "\n".join(r.plan.strip() for r in rounds)
    return f"{plans}\nResults:\n{render_rounds(rounds, max_chars)}"
