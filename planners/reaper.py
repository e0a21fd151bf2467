"""REAPER: one LLM call plans all retrieval for conversational RAG over several sources.

Instead of reasoning before every retrieval (ReAct) or sending the query to one source (a
router), the REAPER planner writes the whole retrieval plan in one call: which sources, with
which arguments (rewritten queries, filters, ids), and which steps depend on earlier ones
(``2. products("$1")`` searches with what step 1 found). The plan runs on the same
task-fetching unit as every other plan; :class:`CitingAnswerer` then writes the answer from
the gathered evidence, citing chunk ids, and states plainly which sources failed or found
nothing — they are reported, never hidden.

Adding a source takes a ``RetrievalSource`` with a description and a few examples; nothing is
retrained. This module does not retrieve by itself (sources do) and does not replan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragloom.agent import Agent, AgentEvent, AgentResult, Finish, PlanRound, Replan
from ragloom.errors import ConfigError
from ragloom.planners._render import evidence_ids, generate_fitting, render_value
from ragloom.planners.llmcompiler import LLMCompilerPlanner
from ragloom.planners.prompts import ANSWER_SYSTEM, REAPER_SYSTEM
from ragloom.runtime.llm import LLM, SamplingParams

if TYPE_CHECKING:
    from ragloom.retrievers import RetrievalSource
    from ragloom.runtime.llm import Message
    from ragloom.tfu import Observation
    from ragloom.tools import Tool

__all__ = ["CitingAnswerer", "Evidence", "Reaper", "reaper_planner", "source_report", "source_tool"]


class Evidence(list):  # type: ignore[type-arg]
    """The hits a source returned: still a list of hits, but ``str()`` gives ``[id] text``
    lines, so a dependent step's ``"... $1 ..."`` argument reads as text, not as reprs."""

    def __str__(self) -> str:
        return render_value(list(self), max_chars=2000)


def source_tool(source: RetrievalSource) -> Tool:
    """A source as a tool that returns :class:`Evidence` (hits kept for citations)."""
    from ragloom.tools import Tool

    raw = source.as_tool(render=False)
    assert raw.func is not None

    def call(**kwargs: Any) -> Evidence:
        return Evidence(raw.func(**kwargs))  # type: ignore[misc]

    return Tool(raw.name, raw.description, raw.args_schema, func=call, timeout=raw.timeout)


def reaper_planner(
    llm: LLM,
    sources: Sequence[RetrievalSource],
    *,
    examples: Sequence[str] = (),
    constrained: bool = False,
    max_tokens: int = 300,
) -> LLMCompilerPlanner:
    """The REAPER retrieval planner: the plan prompt lists the sources and their examples.

    Each source's own ``examples`` (strings such as ``'Question: where is my order 7?\\n
    1. orders("order 7")\\n2. join()'``) are added to the application's ``examples``.
    """
    shots = [*examples, *(e for s in sources for e in getattr(s, "examples", ()) or ())]
    return LLMCompilerPlanner(
        llm, examples=shots, constrained=constrained, max_tokens=max_tokens, system=REAPER_SYSTEM
    )


def source_report(observations: Sequence[Observation]) -> list[str]:
    """One line per retrieval step that failed or found nothing.

    >>> from types import SimpleNamespace as O
    >>> source_report([O(task_id=2, tool="orders", args={"query": "x"}, value=[], ok=True,
    ...                  error=None)])
    ["source 'orders' found nothing for {'query': 'x'} (step 2)"]
    """
    return [line for _, line in _problems(observations)]


def _problems(observations: Sequence[Observation]) -> list[tuple[str, str]]:
    found = []
    for obs in observations:
        if not obs.ok:
            line = f"source {obs.tool!r} failed (step {obs.task_id}): {obs.error}"
        elif obs.value is None or (isinstance(obs.value, list | tuple) and not obs.value):
            line = f"source {obs.tool!r} found nothing for {obs.args} (step {obs.task_id})"
        else:
            continue
        found.append((obs.tool, line))
    return found


@dataclass(slots=True)
class CitingAnswerer:
    """A joiner that always finishes: it answers from the evidence, citing chunk ids.

    Sources that failed or returned nothing are named in the prompt and, if the model's answer
    does not mention them, appended to the answer. Evidence that does not fit the model's
    context window is cut: each step's share is halved until the prompt fits (a plan of many
    searches on a small model), down to ``min_chars``; only then does the backend's
    ``ContextWindowError`` reach the caller.

    Args:
        llm: the language model.
        max_tokens: the longest answer.
        max_chars: the most characters of one step's evidence shown to the model.
        min_chars: the least a step's evidence is cut to when the prompt is too long.
    """

    llm: LLM
    max_tokens: int = 200
    max_chars: int = 1500
    min_chars: int = 100

    def messages(
        self,
        question: str,
        observations: Sequence[Observation],
        history: Sequence[Message] = (),
        max_chars: int | None = None,
    ) -> list[Message]:
        """The answer prompt: evidence as ``[chunk id] text`` (at most ``max_chars``, default
        ``self.max_chars``, per step), failures listed."""
        limit = self.max_chars if max_chars is None else max_chars
        evidence = "\n".join(render_value(o.value, limit) for o in observations if o.ok and o.value)
        report = source_report(observations)
        failures = ("Problems while searching:\n" + "\n".join(report) + "\n") if report else ""
        system = ANSWER_SYSTEM.format(failures=failures, evidence=evidence or "(none)")
        return [
            {"role": "system", "content": system},
            *history,
            {"role": "user", "content": question},
        ]

    async def ajoin(
        self,
        question: str,
        rounds: Sequence[PlanRound],
        *,
        can_replan: bool = False,
        history: Sequence[Message] = (),
    ) -> Finish | Replan:
        """Answer from every round's evidence; sources are the cited (else all) chunk ids."""
        observations = [o for r in rounds for _, o in sorted(r.observations.items())]
        params = SamplingParams(max_tokens=self.max_tokens)
        answer = await generate_fitting(
            self.llm,
            lambda limit: self.messages(question, observations, history, limit),
            params,
            self.max_chars,
            self.min_chars,
        )
        answer = answer.strip()
        unmentioned = [line for name, line in _problems(observations) if name not in answer]
        # a plan that broke off is a failure too: the steps after the bad line never ran
        unmentioned += [f"the retrieval plan broke off: {r.error}" for r in rounds if r.error]
        if unmentioned:
            answer += "\n\nNote: " + "; ".join(unmentioned) + "."
        known = evidence_ids(observations)
        cited = tuple(i for i in known if i in answer)
        return Finish(answer, cited or tuple(known))


class Reaper:
    """Conversational RAG over several retrieval sources with one planning call per turn.

    Args:
        llm: the language model (planner and answerer).
        sources: the ``RetrievalSource`` objects to plan over (unique names).
        examples: extra few-shot plans for the planner.
        constrained: decode the plan under the plan grammar.
        checkpointer: as for :class:`~ragloom.agent.Agent`.

    Example:
        >>> reaper = Reaper(llm, [orders, products])            # doctest: +SKIP
        >>> result = reaper.invoke("Is the lamp I ordered dimmable?")  # doctest: +SKIP
        >>> result.answer, result.sources                        # doctest: +SKIP
    """

    def __init__(
        self,
        llm: LLM,
        sources: Sequence[RetrievalSource],
        *,
        examples: Sequence[str] = (),
        constrained: bool = False,
        checkpointer: str | Path | Any = None,
    ) -> None:
        names = [s.name for s in sources]
        if not sources or len(set(names)) != len(names):
            raise ConfigError(f"Reaper needs at least one source and unique names, got {names}")
        self.sources = list(sources)
        self.planner = reaper_planner(llm, sources, examples=examples, constrained=constrained)
        self.agent = Agent(
            llm,
            [source_tool(s) for s in sources],
            planner=self.planner,
            joiner=CitingAnswerer(llm),
            max_replans=0,
            checkpointer=checkpointer,
        )

    def astream(
        self, question: str, *, history: Sequence[Message] = (), thread_id: str | None = None
    ) -> AsyncIterator[AgentEvent]:
        """Stream the plan, the retrievals and the answer (see :meth:`Agent.astream`)."""
        return self.agent.astream(question, history=history, thread_id=thread_id)

    async def ainvoke(
        self, question: str, *, history: Sequence[Message] = (), thread_id: str | None = None
    ) -> AgentResult:
        """Plan, retrieve and answer one turn."""
        return await self.agent.ainvoke(question, history=history, thread_id=thread_id)

    def invoke(
        self, question: str, *, history: Sequence[Message] = (), thread_id: str | None = None
    ) -> AgentResult:
        """Blocking twin of :meth:`ainvoke`."""
        return self.agent.invoke(question, history=history, thread_id=thread_id)
