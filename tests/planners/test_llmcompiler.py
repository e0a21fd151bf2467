"""LLMCompiler planner: prompt, streaming execution (tools start mid-plan), replanning."""

from __future__ import annotations

import re
import time

from ragloom.agent import Agent, PlanRound
from ragloom.planners.llmcompiler import LLMCompilerPlanner
from ragloom.planners.prompts import END_OF_PLAN
from ragloom.runtime import FakeLLM
from ragloom.tools import Tool, ToolRegistry

STARTS: list[tuple[str, float]] = []


def search(query: str) -> str:
    """Search the web for a query."""
    STARTS.append((query, time.perf_counter()))
    return {"capital of France": "Paris", "population of Paris": "2.1 million"}.get(query, "")


def lookup(term: str) -> str:
    """Look a term up in an encyclopedia."""
    return {"Paris": "Paris has 2.1 million inhabitants (2023)."}.get(term, "nothing")


def registry() -> ToolRegistry:
    return ToolRegistry([Tool.from_function(search), Tool.from_function(lookup)])


def test_prompt_lists_tools_rules_examples_and_join_last() -> None:
    example = 'Question: Who?\n1. search("who")\n2. join()'
    planner = LLMCompilerPlanner(FakeLLM(), examples=[example])
    system = planner.messages("What is the capital?", registry())[0]["content"]
    assert "- search(query: str): Search the web" in system and "- lookup(term: str)" in system
    assert system.index("- lookup(") < system.index("- join()")  # join() listed last
    assert '1. search(query="...")\n2. join()' in system  # an example in the plan format
    assert "$N" in system and "parallel" in system.lower() and END_OF_PLAN in system
    assert example in system


def test_replan_prompt_carries_plan_results_reason_and_continues_numbering() -> None:
    planner = LLMCompilerPlanner(FakeLLM())
    rounds = [PlanRound(plan='1. search("x")\n2. join()', reason="x was not found")]
    user = planner.messages("Q?", registry(), rounds)[-1]["content"]
    assert '1. search("x")' in user and "x was not found" in user
    assert "Continue the numbering at 3" in user


def test_constrained_planner_asks_for_the_plan_grammar() -> None:
    planner = LLMCompilerPlanner(FakeLLM(), constrained=True)
    params = planner.params(registry())
    assert params.grammar is not None and params.grammar.kind == "lark"
    assert params.stop == (END_OF_PLAN,)
    assert planner.params(registry(), first_id=4).grammar is None  # the grammar numbers from 1


async def test_first_tool_starts_before_the_plan_ends() -> None:
    STARTS.clear()
    plan = (
        'Thought: two lookups in parallel\n1. search("capital of France")\n'
        '2. search("population of Paris")\n3. lookup("Paris")\n4. join()' + END_OF_PLAN
    )
    llm = FakeLLM([plan, '{"action": "finish", "answer": "Paris, 2.1 million"}'], delay=0.04)
    agent = Agent(llm, registry())
    arrivals: list[tuple[str, float, object]] = []
    async for event in agent.astream("What is France's capital and its population?"):
        arrivals.append((event.kind, time.perf_counter(), event.data))
    kinds = [k for k, _, _ in arrivals]
    last_token = max(i for i, k in enumerate(kinds) if k == "token")
    first_started = kinds.index("started")
    assert first_started < last_token, "the first task must start while the plan still streams"
    assert STARTS[0][1] < arrivals[last_token][1]
    result = arrivals[-1][2]
    assert result.answer == "Paris, 2.1 million"  # type: ignore[attr-defined]
    assert result.trace is not None  # type: ignore[attr-defined]


def test_insufficient_first_plan_leads_to_a_second_plan_that_succeeds() -> None:
    def reply(prompt: str) -> str:
        if "You read the results" in prompt:
            if "2.1 million inhabitants" in prompt:
                return '{"action": "finish", "answer": "2.1 million (2023)"}'
            return '{"action": "replan", "reason": "the population is missing"}'
        match = re.search(r"Continue the numbering at (\d+)", prompt)
        if match is None:
            return '1. search("capital of France")\n2. join()<END_OF_PLAN>'
        n = int(match.group(1))
        return f'{n}. lookup("$1")\n{n + 1}. join()<END_OF_PLAN>'

    llm = FakeLLM(reply)
    result = Agent(llm, registry(), max_replans=2).invoke(
        "How many people live in France's capital?"
    )
    assert result.answer == "2.1 million (2023)"
    assert len(result.rounds) == 2 and result.rounds[0].reason == "the population is missing"
    assert sorted(result.observations) == [1, 3], "numbering continues after the first join()"
    assert result.observations[3].value.startswith("Paris has")
    replan_prompt = llm.prompts[2]
    assert "the population is missing" in replan_prompt and "Paris" in replan_prompt


def test_malformed_plan_line_is_reported_to_the_joiner() -> None:
    llm = FakeLLM(
        [
            '1. search("capital of France")\n2. this is not a task\n3. join()<END_OF_PLAN>',
            '{"action": "finish", "answer": "Paris"}',
        ]
    )
    result = Agent(llm, registry(), max_replans=0).invoke("Capital?")
    assert result.answer == "Paris"
    assert result.rounds[0].error and "line 2" in result.rounds[0].error
    assert "the plan broke off" in llm.prompts[1]
    assert result.observations[1].value == "Paris"


def long_rounds() -> list[PlanRound]:
    from ragloom.tfu import Observation

    results = {i: Observation(i, "search", {}, value=f"page {i}: " + "text " * 400) for i in (1, 2)}
    return [PlanRound(plan='1. search("a")\n2. search("b")\n3. join()', observations=results)]


async def collect(planner: LLMCompilerPlanner, rounds: list[PlanRound]) -> str:
    return "".join([d async for d in planner.astream("Q?", registry(), rounds)])


async def test_replan_results_too_long_for_the_window_are_cut_until_the_prompt_fits() -> None:
    from _window_llm import SmallWindowLLM

    rounds = long_rounds()
    llm = SmallWindowLLM(['4. search("c")\n5. join()' + END_OF_PLAN])
    planner = LLMCompilerPlanner(llm)
    fits = llm.render(planner.messages("Q?", registry(), rounds, max_chars=150))
    assert len(llm.render(planner.messages("Q?", registry(), rounds, max_chars=300))) > len(fits)
    llm.window = len(fits)
    assert await collect(planner, rounds) == '4. search("c")\n5. join()'  # (stop string cut)
    assert len(llm.too_long) == 2  # 600 and 300 characters a result did not fit, 150 did
    assert "page 1: text" in llm.prompts[-1] and "page 2: text" in llm.prompts[-1]


async def test_a_first_plan_prompt_too_long_is_a_clear_error_at_once() -> None:
    import pytest
    from _window_llm import SmallWindowLLM

    from ragloom.errors import ContextWindowError

    llm = SmallWindowLLM(["unused"], window=100)
    with pytest.raises(ContextWindowError, match="exceeds 100"):
        await collect(LLMCompilerPlanner(llm), [])
    assert len(llm.too_long) == 1  # nothing to cut: no retry
