"""REAPER: one planning call, dependent retrieval steps, cited answers, failures reported."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from _window_llm import SmallWindowLLM

from ragloom.agent import PlanRound
from ragloom.errors import ConfigError, ContextWindowError
from ragloom.planners.reaper import CitingAnswerer, Reaper, source_report
from ragloom.retrievers._types import Chunk, Hit
from ragloom.retrievers.sources import RetrievalSource
from ragloom.runtime import FakeLLM
from ragloom.tfu import Observation


@dataclass
class TableRetriever:
    """A retriever over a fixed table: the first key found in the query selects the hits."""

    table: dict[str, list[tuple[str, str]]]
    broken: bool = False
    queries: list[str] = field(default_factory=list)

    def retrieve(self, query: str, k: int = 5, where: dict[str, Any] | None = None) -> list[Hit]:
        self.queries.append(query)
        if self.broken:
            raise ConnectionError("the reviews service is down")
        found = next((rows for key, rows in self.table.items() if key in query.lower()), [])
        return [Hit(Chunk(cid, text), 1.0 - i / 10, i) for i, (cid, text) in enumerate(found)][:k]


def sources() -> list[RetrievalSource]:
    orders = {"ada": [("orders.csv#7", "Order 7 by Ada: product Lumo desk lamp, shipped")]}
    products = {"lumo": [("lumo.md#2", "The Lumo desk lamp is dimmable in 5 steps.")]}
    return [
        RetrievalSource(
            "orders",
            "customer orders by customer name or order number",
            TableRetriever(orders),
            examples=["orders of customer Bo"],
        ),
        RetrievalSource("products", "product manuals and specifications", TableRetriever(products)),
        RetrievalSource("reviews", "customer reviews of products", TableRetriever({}, True)),
        RetrievalSource("faq", "frequently asked questions about shipping", TableRetriever({})),
    ]


PLAN = (
    "Thought: find the order first, then the product it names\n"
    '1. orders("orders of customer Ada")\n'
    '2. products("manual of the product in $1")\n'
    '3. reviews("Lumo lamp reviews")\n'
    '4. faq("dimmer shipping")\n'
    "5. join()<END_OF_PLAN>"
)


def test_one_plan_call_dependent_steps_citations_and_reported_failures() -> None:
    srcs = sources()
    llm = FakeLLM([PLAN, "Yes, the lamp Ada ordered is dimmable [lumo.md#2]."])
    result = Reaper(llm, srcs).invoke("Is the lamp I ordered dimmable? I am Ada.")
    assert len(llm.prompts) == 2, "one planning call and one answering call"
    plan_prompt, answer_prompt = llm.prompts
    assert "orders" in plan_prompt and "customer reviews" in plan_prompt
    assert "orders of customer Bo" in plan_prompt  # a source's example queries reach the prompt
    # step 2 ran with step 1's result, rendered as text, inside its query
    query = srcs[1].retriever.queries[0]
    assert query.startswith("manual of the product in [orders.csv#7] Order 7 by Ada")
    assert "[lumo.md#2] The Lumo desk lamp is dimmable" in answer_prompt
    assert "source 'reviews' failed" in answer_prompt and "is down" in answer_prompt
    assert result.answer.startswith("Yes, the lamp Ada ordered is dimmable [lumo.md#2].")
    assert "source 'reviews' failed" in result.answer  # reported, not hidden
    assert "source 'faq' found nothing" in result.answer
    assert result.sources == ["lumo.md#2"]
    assert sorted(result.observations) == [1, 2, 3, 4]


def test_failures_the_answer_already_mentions_are_not_repeated() -> None:
    llm = FakeLLM([PLAN, "Dimmable [lumo.md#2]; reviews and faq had nothing usable."])
    result = Reaper(llm, sources()).invoke("Is the lamp I ordered dimmable? I am Ada.")
    assert "Note:" not in result.answer


def test_source_report_lists_failed_and_empty_steps_only() -> None:
    from ragloom.tfu import Observation

    ok = Observation(task_id=1, tool="a", args={}, value=[1], error=None, ok=True)
    empty = Observation(task_id=2, tool="b", args={"query": "q"}, value=[], error=None, ok=True)
    failed = Observation(task_id=3, tool="c", args={}, value=None, error="boom", ok=False)
    assert source_report([ok, empty, failed]) == [
        "source 'b' found nothing for {'query': 'q'} (step 2)",
        "source 'c' failed (step 3): boom",
    ]


def test_sources_need_unique_names() -> None:
    with pytest.raises(ConfigError, match="unique"):
        Reaper(FakeLLM(), [sources()[0], sources()[0]])


def test_conversation_history_reaches_the_planner() -> None:
    llm = FakeLLM([PLAN, "It is dimmable [lumo.md#2]; reviews and faq had nothing."])
    history = [
        {"role": "user", "content": "Hi, I am Ada and I ordered a lamp last week."},
        {"role": "assistant", "content": "Thanks Ada, how can I help?"},
    ]
    Reaper(llm, sources()).invoke("Is it dimmable?", history=history)
    assert "I am Ada and I ordered a lamp" in llm.prompts[0]


def test_a_plan_that_breaks_off_is_reported_in_the_answer() -> None:
    broken = '1. orders("orders of customer Ada", n=2)\n2. join()<END_OF_PLAN>'
    llm = FakeLLM([broken, "Ada ordered something."])
    result = Reaper(llm, sources()).invoke("What did Ada order?")
    assert "retrieval plan broke off" in result.answer
    assert "n" in result.answer.split("broke off:", 1)[1]


async def test_invoke_works_inside_a_running_event_loop() -> None:
    llm = FakeLLM([PLAN, "The Lumo lamp [lumo.md#2] is dimmable."])
    # inside a running loop asyncio.run would refuse; invoke runs in a worker thread instead
    result = Reaper(llm, sources()).invoke("Is the lamp Ada ordered dimmable?")
    assert "lumo.md#2" in result.sources


def long_sources() -> list[RetrievalSource]:
    manual = "The Lumo desk lamp is dimmable in 5 steps. " + "It has a warm light. " * 150
    products = {"lumo": [("lumo.md#2", manual)]}
    orders = {"ada": [("orders.csv#7", "Order 7 by Ada: product Lumo desk lamp, shipped")]}
    return [
        RetrievalSource("orders", "customer orders", TableRetriever(orders)),
        RetrievalSource("products", "product manuals", TableRetriever(products)),
    ]


LONG_PLAN = '1. orders("orders of customer Ada")\n2. products("manual of the Lumo lamp")\n3. join()'


def test_evidence_too_long_for_the_window_is_cut_until_the_answer_prompt_fits() -> None:
    # the plan prompt (~1,000 characters) fits; the answer prompt at 1,500 characters of
    # evidence a step (~1,800) does not, at 750 it does
    llm = SmallWindowLLM([LONG_PLAN + "<END_OF_PLAN>", "Dimmable [lumo.md#2]."], window=1500)
    result = Reaper(llm, long_sources()).invoke("Is the lamp Ada ordered dimmable?")
    assert len(llm.too_long) == 1, "the first answer prompt must not fit, the second must"
    answer_prompt = llm.prompts[-1]
    assert len(answer_prompt) <= 1500
    assert "[lumo.md#2] The Lumo desk lamp is dimmable" in answer_prompt  # the head survives
    assert result.answer == "Dimmable [lumo.md#2]."
    assert result.sources == ["lumo.md#2"]


def test_a_window_too_small_even_for_cut_evidence_is_a_clear_error() -> None:
    manual = Observation(2, "products", {}, value=[Hit(Chunk("lumo.md#2", "lamp " * 600), 1.0, 0)])
    rounds = [PlanRound("1. products('lamp')", observations={2: manual})]
    llm = SmallWindowLLM(["unused"], window=300)
    answerer = CitingAnswerer(llm, min_chars=100)
    with pytest.raises(ContextWindowError, match="exceeds 300"):
        asyncio.run(answerer.ajoin("Is the lamp dimmable?", rounds))
    # 1,500 -> 750 -> 375 -> 187 -> 100 characters of evidence were tried before giving up
    assert len(llm.too_long) == 5 and llm.too_long == sorted(llm.too_long, reverse=True)
