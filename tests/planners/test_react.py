"""ReAct baseline: create_agent over ragloom tools, driven by a scripted fake chat model."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from ragloom.errors import ConfigError
from ragloom.planners.react import ReactAgent

CALLS: list[str] = []


def search(query: str) -> str:
    """Search the encyclopedia."""
    CALLS.append(query)
    return {"Dune author": "Frank Herbert wrote Dune.", "Frank Herbert birth": "born 1920"}.get(
        query, "nothing"
    )


class ToolCallingFake(GenericFakeChatModel):
    """A fake chat model that accepts bind_tools (create_agent needs it)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ToolCallingFake:
        return self


def scripted(*messages: AIMessage) -> ToolCallingFake:
    return ToolCallingFake(messages=iter(messages))


def call(name: str, args: dict[str, Any], call_id: str) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id}])


def test_react_reasons_before_each_tool_call_and_records_observations() -> None:
    CALLS.clear()
    model = scripted(
        call("search", {"query": "Dune author"}, "c1"),
        call("search", {"query": "Frank Herbert birth"}, "c2"),
        AIMessage(content="1920"),
    )
    result = ReactAgent(model, [search]).invoke("When was the author of Dune born?")
    assert result.answer == "1920"
    assert CALLS == ["Dune author", "Frank Herbert birth"]  # one call per model turn, in order
    assert [o.tool for o in result.observations.values()] == ["search", "search"]
    assert result.observations[2].value == "born 1920" and result.plans == []


def test_react_reports_a_step_limit_instead_of_crashing() -> None:
    model = scripted(*[call("search", {"query": "loop"}, f"c{i}") for i in range(20)])
    result = ReactAgent(model, [search], max_steps=2).invoke("loop forever")
    assert "No answer within 2 steps" in result.answer


def test_react_rejects_a_bad_step_limit() -> None:
    with pytest.raises(ConfigError, match="max_steps"):
        ReactAgent(scripted(AIMessage(content="x")), [search], max_steps=0)


def test_react_on_a_ragloom_llm_through_the_runtime_chat_adapter() -> None:
    from ragloom.runtime import FakeLLM

    CALLS.clear()
    llm = FakeLLM(
        [
            '{"tool_calls": [{"name": "search", "arguments": {"query": "Dune author"}}]}',
            "Frank Herbert",
        ]
    )
    result = ReactAgent(llm, [search]).invoke("Who wrote Dune?")
    assert result.answer == "Frank Herbert" and CALLS == ["Dune author"]
    assert '"name": "search", "arguments": {"query": "..."}' in llm.prompts[0]  # call example
    assert "Frank Herbert wrote Dune." in llm.prompts[1]  # the observation went back
