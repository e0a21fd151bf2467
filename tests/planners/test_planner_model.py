"""The LLMCompiler planner on the real embedded model (Qwen2.5-Coder-0.5B via load_llm)."""

from __future__ import annotations

import asyncio

import pytest

from ragloom.plan_parser import parse_plan
from ragloom.planners.llmcompiler import LLMCompilerPlanner
from ragloom.planners.prompts import MULTIHOP_EXAMPLES
from ragloom.tools import Tool, ToolRegistry


def search(query: str) -> str:
    """Search Wikipedia paragraphs; returns the best matching passages."""
    return ""


@pytest.mark.model
def test_embedded_model_writes_a_valid_parallel_plan() -> None:
    from ragloom.runtime import load_llm

    llm = load_llm()
    registry = ToolRegistry([Tool.from_function(search)])
    planner = LLMCompilerPlanner(llm, examples=MULTIHOP_EXAMPLES, max_tokens=60)

    async def plan() -> str:
        question = "Which band was formed first, The Exies or Circus Diablo?"
        return "".join([d async for d in planner.astream(question, registry)])

    tasks = [t for t in parse_plan(asyncio.run(plan()), registry) if not t.is_join]
    assert len(tasks) >= 2, "one search per band"
    assert all(not t.deps for t in tasks), "the two look-ups are independent (parallel)"
    queries = " ".join(t.args["query"].lower() for t in tasks)
    assert "exies" in queries and "circus diablo" in queries
