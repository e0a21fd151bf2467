"""The joiner: reads the task results and answers ``Finish(answer)`` or ``Replan(reason)``.

The decision is structured output — a JSON object ``{"action": "finish", "answer": ...}`` or
``{"action": "replan", "reason": ...}`` — optionally enforced by constrained decoding. The
parser is forgiving, because small models are: it takes the first JSON object in the reply,
repairs an unterminated one, accepts the classic ``Action: Finish(...)`` form (everything up
to the LAST closing parenthesis, so ``Finish(Paris (France))`` keeps its parentheses) and
falls back to the plain reply as the answer. It never truncates an answer.

This module does not run tools or plans.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ragloom.agent import Finish, PlanRound, Replan
from ragloom.planners._render import evidence_ids, generate_fitting, render_rounds
from ragloom.planners.prompts import joiner_messages
from ragloom.runtime.llm import LLM, SamplingParams

if TYPE_CHECKING:
    from ragloom.runtime.llm import Message

__all__ = ["DECISION_SCHEMA", "LLMJoiner", "parse_decision"]

DECISION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "action": {"enum": ["finish", "replan"]},
        "answer": {"type": "string"},
        "reason": {"type": "string"},
    },
    "required": ["action"],
}

_CLASSIC = re.compile(r"\b(Finish|Replan)\s*\((.*)\)", re.DOTALL)
_FIELD = re.compile(r'"(answer|reason)"\s*:\s*"((?:[^"\\]|\\.)*)', re.DOTALL)
_ACTION = re.compile(r'"action"\s*:\s*"(\w+)"')


def _json_objects(text: str) -> list[dict[str, Any]]:
    decoder = json.JSONDecoder()
    found = []
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


def _from_dict(obj: dict[str, Any]) -> Finish | Replan | None:
    action = str(obj.get("action", "")).lower()
    if action == "replan" or ("reason" in obj and "answer" not in obj):
        return Replan(str(obj.get("reason", "")))
    if action == "finish" or "answer" in obj:
        sources = obj.get("sources") or ()
        return Finish(str(obj.get("answer", "")), tuple(str(s) for s in sources))
    return None


def _repair(text: str) -> Finish | Replan | None:
    """An unterminated JSON object (the model ran out of tokens): read its fields."""
    fields = dict(_FIELD.findall(text))
    action = _ACTION.search(text)
    if not fields and not action:
        return None
    kind = action.group(1).lower() if action else ("replan" if "reason" in fields else "finish")
    unescape = lambda s: s.replace('\\"', '"').replace("\\n", "\n")  # noqa: E731
    if kind == "replan":
        return Replan(unescape(fields.get("reason", "")))
    return Finish(unescape(fields.get("answer", "")))


def parse_decision(text: str) -> Finish | Replan:
    """Read a joiner reply into :class:`Finish` or :class:`Replan`.

    >>> parse_decision('{"action": "finish", "answer": "Paris (France)"}')
    Finish(answer='Paris (France)', sources=())
    >>> parse_decision('Thought: ok\\nAction: Finish(f(x) = "2")')
    Finish(answer='f(x) = "2"', sources=())
    >>> parse_decision('{"action": "replan", "reason": "no population"}')
    Replan(reason='no population')
    """
    for obj in _json_objects(text):
        decision = _from_dict(obj)
        if decision is not None:
            return decision
    repaired = _repair(text)
    if repaired is not None:
        return repaired
    classic = _CLASSIC.search(text)
    if classic:
        kind, body = classic.group(1), classic.group(2).strip()
        return Finish(body) if kind == "Finish" else Replan(body)
    return Finish(text.strip())


@dataclass(slots=True)
class LLMJoiner:
    """A joiner driven by an LLM.

    Args:
        llm: the language model.
        constrained: enforce the decision JSON schema with constrained decoding.
        max_tokens: the longest reply.
        max_chars: the most characters of one task's result shown to the model.
        min_chars: the least a result is cut to when the prompt does not fit the model's
            context window (each result's share is halved from ``max_chars`` until it fits;
            below ``min_chars`` the backend's ``ContextWindowError`` reaches the caller).

    >>> from ragloom.runtime import FakeLLM
    >>> import asyncio
    >>> joiner = LLMJoiner(FakeLLM(['{"action": "finish", "answer": "42"}']))
    >>> asyncio.run(joiner.ajoin("Q?", [], can_replan=False))
    Finish(answer='42', sources=())
    """

    llm: LLM
    constrained: bool = False
    max_tokens: int = 200
    max_chars: int = 700
    min_chars: int = 100

    def messages(
        self,
        question: str,
        rounds: Sequence[PlanRound],
        *,
        can_replan: bool,
        history: Sequence[Message] = (),
        max_chars: int | None = None,
    ) -> list[Message]:
        """The prompt this joiner sends (at most ``max_chars``, default ``self.max_chars``, of
        each task's result)."""
        results = render_rounds(rounds, self.max_chars if max_chars is None else max_chars)
        return joiner_messages(question, results, can_replan=can_replan, history=history)

    async def ajoin(
        self,
        question: str,
        rounds: Sequence[PlanRound],
        *,
        can_replan: bool,
        history: Sequence[Message] = (),
    ) -> Finish | Replan:
        """Ask the LLM; cited chunk ids (``[id]``) that occur in the results become sources."""
        grammar = None
        if self.constrained:
            from ragloom.runtime.constrained import json_grammar

            grammar = json_grammar(DECISION_SCHEMA)
        params = SamplingParams(max_tokens=self.max_tokens, grammar=grammar)
        text = await generate_fitting(
            self.llm,
            lambda limit: self.messages(
                question, rounds, can_replan=can_replan, history=history, max_chars=limit
            ),
            params,
            self.max_chars,
            self.min_chars,
        )
        decision = parse_decision(text)
        if isinstance(decision, Finish) and not decision.sources:
            known = evidence_ids(o for r in rounds for o in r.observations.values())
            cited = tuple(i for i in known if f"[{i}]" in decision.answer)
            decision = Finish(decision.answer, cited)
        return decision
