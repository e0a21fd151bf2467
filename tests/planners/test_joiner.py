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


def long_rounds() -> list[PlanRound]:
    from ragloom.tfu import Observation

    observations = {
        i: Observation(i, "search", {"query": f"q{i}"}, value=f"fact {i}: " + "detail " * 300)
        for i in range(1, 7)
    }
    return [PlanRound(plan="", observations=observations)]


async def test_results_too_long_for_the_window_are_cut_until_the_prompt_fits() -> None:
    from _window_llm import SmallWindowLLM

    rounds = long_rounds()
    llm = SmallWindowLLM(['{"action": "finish", "answer": "6 facts"}'])
    joiner = LLMJoiner(llm)  # 700 characters a result; halved once, 350 fit
    fits = len(llm.render(joiner.messages("Q?", rounds, can_replan=True, max_chars=350)))
    assert len(llm.render(joiner.messages("Q?", rounds, can_replan=True))) > fits
    llm.window = fits
    decision = await joiner.ajoin("Q?", rounds, can_replan=True)
    assert decision == Finish("6 facts")
    assert len(llm.too_long) == 1 and len(llm.prompts[-1]) <= fits
    assert all(f"fact {i}: detail" in llm.prompts[-1] for i in range(1, 7))  # every head kept


async def test_a_window_too_small_for_cut_results_is_a_clear_error() -> None:
    from _window_llm import SmallWindowLLM

    from ragloom.errors import ContextWindowError

    llm = SmallWindowLLM(["unused"], window=200)
    with pytest.raises(ContextWindowError, match="exceeds 200"):
        await LLMJoiner(llm).ajoin("Q?", long_rounds(), can_replan=True)
    assert len(llm.too_long) == 4  # 700 -> 350 -> 175 -> 100 characters a result, then the error
