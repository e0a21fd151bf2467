"""Corrective RAG: grade, rewrite and retry (bounded), then answer."""

from __future__ import annotations

import json

import pytest

from ragloom.errors import ConfigError
from ragloom.evals.crag import build_crag, corrective_contexts
from ragloom.retrievers._types import Chunk, Hit
from ragloom.runtime import FakeLLM

GOOD = Chunk("good", "Paris is the capital of France.")
BAD = [Chunk("b1", "Bananas are yellow."), Chunk("b2", "The sea is salty.")]


def retrieve(query):
    chunks = [GOOD, BAD[0]] if "capital" in query else BAD
    return [Hit(c, 1.0 - i / 10, i) for i, c in enumerate(chunks)]


def judge(reply_for_grade=None):
    def respond(prompt):
        if prompt.startswith("Does the DOCUMENT"):
            if reply_for_grade:
                return reply_for_grade
            doc = prompt.split("DOCUMENT: ", 1)[1]
            return json.dumps({"relevant": "Paris" in doc})
        if prompt.startswith("The search query"):
            return "capital of France"
        raise AssertionError(prompt)
    return FakeLLM(respond)


def test_rewrites_when_nothing_relevant_then_keeps_only_relevant_chunks():
    llm = judge()
    graph = build_crag(retrieve, llm, k=2, max_rewrites=2,
                       answer=lambda q, chunks: " | ".join(c.id for c in chunks))
    state = graph.invoke({"question": "Which city governs the French?"})
    assert state["queries"] == ["Which city governs the French?", "capital of France"]
    assert [c.id for c in state["relevant"]] == ["good"]
    assert state["answer"] == "good" and state["attempts"] == 1
    # attempt 1 grades b1, b2; attempt 2 grades good, b1 (only relevant chunks are remembered)
    assert sum(p.startswith("Does the DOCUMENT") for p in llm.prompts) == 4


def test_retries_are_bounded_and_fall_back_to_the_last_retrieval():
    llm = judge()
    chunks = corrective_contexts("Which fruit is yellow?", lambda q: retrieve("x"), llm,
                                 max_rewrites=2)
    assert [c.id for c in chunks] == ["b1", "b2"]
    assert sum(p.startswith("The search query") for p in llm.prompts) == 2


def test_no_rewrite_needed_and_malformed_grades_count_as_irrelevant():
    assert [c.id for c in corrective_contexts("capital?", retrieve, judge())] == ["good"]
    graph = build_crag(retrieve, judge(reply_for_grade="maybe?"), max_rewrites=0)
    state = graph.invoke({"question": "capital?"})
    assert state["grade_errors"] == 2 and state["relevant"] == []


def test_bad_bounds_are_refused():
    with pytest.raises(ConfigError, match="max_rewrites"):
        build_crag(retrieve, judge(), max_rewrites=-1)
