"""Joiner: structured decisions parsed robustly, answers never truncated."""

from __future__ import annotations

import pytest

from ragloom.agent import Finish, PlanRound, Replan
from ragloom.planners.joiner import LLMJoiner, parse_decision
from ragloom.runtime import FakeLLM


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"action": "finish", "answer": "Paris (France)"}', Finish("Paris (France)")),
        (
            '{"action": "finish", "answer": "He said \\"hi\\" (twice)"}',
            Finish('He said "hi" (twice)'),
        ),
        ('Sure! {"action": "finish", "answer": "f(g(x))"} done', Finish("f(g(x))")),
        (
            '{"action": "replan", "reason": "need the (missing) year"}',
            Replan("need the (missing) year"),
        ),
        (
            '{"action": "finish", "answer": "an unterminated (answer',
            Finish("an unterminated (answer"),
        ),
        ("Thought: fine\nAction: Finish(Paris (the capital))", Finish("Paris (the capital)")),
        ("Action: Replan(no data)", Replan("no data")),
        ("just the answer (42)", Finish("just the answer (42)")),
        ('{"answer": "x", "sources": ["a#1"]}', Finish("x", ("a#1",))),
        ('{"reason": "more"}', Replan("more")),
    ],
)
def test_parse_decision(reply: str, expected: Finish | Replan) -> None:
    assert parse_decision(reply) == expected


async def test_llm_joiner_sees_results_and_cites_known_chunk_ids() -> None:
    from ragloom.retrievers._types import Chunk, Hit
    from ragloom.tfu import Observation

    hits = [Hit(chunk=Chunk(id="paris.md#0", text="Paris is the capital."), score=1.0)]
    obs = Observation(
        task_id=1, tool="search", args={"query": "capital"}, value=hits, error=None, ok=True
    )
    llm = FakeLLM(['{"action": "finish", "answer": "Paris [paris.md#0] [made-up#9]"}'])
    decision = await LLMJoiner(llm).ajoin(
        "Capital?", [PlanRound(plan="", observations={1: obs})], can_replan=True
    )
    assert decision == Finish("Paris [paris.md#0] [made-up#9]", ("paris.md#0",))
    assert "[paris.md#0] Paris is the capital." in llm.prompts[0]
    assert '"replan"' in llm.prompts[0]


async def test_joiner_without_replans_is_told_to_finish() -> None:
    llm = FakeLLM(['{"action": "finish", "answer": "?"}'])
    await LLMJoiner(llm).ajoin("Q?", [], can_replan=False)
    assert 'you must use "finish"' in llm.prompts[0]
