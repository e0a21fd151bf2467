"""Corrective RAG as a LangGraph workflow: retrieve, grade, rewrite and retry, then answer.

::

    START -> retrieve -> grade --enough relevant or out of retries--> answer -> END
                 ^          |
                 +- rewrite <- too few relevant chunks

The grader asks the LLM, for each retrieved chunk in one batched call, whether it helps to
answer the question (a JSON ``{"relevant": true|false}``; an unparsable grade counts as not
relevant and is counted in ``grade_errors``). Relevant chunks are kept across attempts; when
fewer than ``min_relevant`` are found, the LLM rewrites the query and the graph retrieves
again, at most ``max_rewrites`` times. The answer uses the relevant chunks, or the last
retrieval's chunks when none was judged relevant.

This module builds the graph; it does not choose retrievers (the caller passes a function).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypedDict

from pydantic import BaseModel

from ragloom.errors import ConfigError
from ragloom.evals.judge import parse_json_reply
from ragloom.retrievers._types import Chunk, Hit
from ragloom.runtime.llm import LLM, SamplingParams

__all__ = ["CragState", "build_crag", "corrective_contexts"]

RetrieveFn = Callable[[str], Sequence[Hit]]
_GRADE = SamplingParams(max_tokens=16, temperature=0.0, stop=("}",))
_REWRITE = SamplingParams(max_tokens=32, temperature=0.0, stop=("\n",))


class _Grade(BaseModel):
    relevant: bool


class CragState(TypedDict, total=False):
    """The graph's state: what was asked, searched, kept and answered."""

    question: str
    query: str
    attempts: int
    retrieved: list[Chunk]
    relevant: list[Chunk]
    grade_errors: int
    queries: list[str]
    answer: str


def grade_prompt(question: str, chunk: Chunk) -> str:
    """Ask whether one chunk helps to answer the question."""
    return ("Does the DOCUMENT contain information that helps to answer the QUESTION?\n"
            'Reply with JSON only: {"relevant": true} or {"relevant": false}\n\n'
            f"QUESTION: {question}\nDOCUMENT: {chunk.text.strip()}\nJSON:")


def rewrite_prompt(question: str, query: str) -> str:
    """Ask for a better search query."""
    return ("The search query below found no useful documents for the question. Write a "
            "better search query (keywords, synonyms). Reply with the query only.\n"
            f"QUESTION: {question}\nPREVIOUS QUERY: {query}\nNEW QUERY:")


def build_crag(retrieve: RetrieveFn, llm: LLM, *, k: int = 4, max_rewrites: int = 1,
               min_relevant: int = 1, answer: Callable[[str, list[Chunk]], str] | None = None
               ) -> Any:
    """Compile the corrective-RAG graph.

    Args:
        retrieve: query -> hits (already cut to ``k``).
        llm: grades chunks and rewrites queries.
        k: most chunks kept for the answer.
        max_rewrites: bound on query rewrites (0 only grades and filters).
        min_relevant: relevant chunks needed to stop retrying.
        answer: optional (question, chunks) -> answer, run as the last node.

    Returns:
        A compiled LangGraph runnable: ``invoke({"question": q})`` -> :class:`CragState`.
    """
    if max_rewrites < 0 or min_relevant < 1 or k < 1:
        raise ConfigError(f"CRAG needs max_rewrites >= 0, min_relevant >= 1 and k >= 1, got "
                          f"{max_rewrites}, {min_relevant}, {k}")
    from langgraph.graph import END, START, StateGraph

    def do_retrieve(state: CragState) -> CragState:
        query = state.get("query") or state["question"]
        return {"query": query, "retrieved": [h.chunk for h in retrieve(query)],
                "queries": [*state.get("queries", []), query]}

    def do_grade(state: CragState) -> CragState:
        kept = list(state.get("relevant", []))
        fresh = [c for c in state["retrieved"] if c.id not in {k.id for k in kept}]
        replies = llm.generate([grade_prompt(state["question"], c) for c in fresh], _GRADE)
        errors = state.get("grade_errors", 0)
        for chunk, reply in zip(fresh, replies, strict=True):
            text = reply.text if reply.text.rstrip().endswith("}") else reply.text + "}"
            grade = parse_json_reply(text, _Grade)
            errors += grade.value is None
            if grade.value is not None and grade.value.relevant:
                kept.append(chunk)
        return {"relevant": kept[:k], "grade_errors": errors}

    def do_rewrite(state: CragState) -> CragState:
        reply = llm.generate([rewrite_prompt(state["question"], state["query"])], _REWRITE)[0]
        query = reply.text.strip().strip('"') or state["question"]
        return {"query": query, "attempts": state.get("attempts", 0) + 1}

    def route(state: CragState) -> str:
        enough = len(state.get("relevant", [])) >= min_relevant
        return "done" if enough or state.get("attempts", 0) >= max_rewrites else "rewrite"

    def do_answer(state: CragState) -> CragState:
        chunks = state.get("relevant") or state["retrieved"]
        return {"answer": answer(state["question"], chunks) if answer else ""}

    graph = StateGraph(CragState)
    graph.add_node("retrieve", do_retrieve)
    graph.add_node("grade", do_grade)
    graph.add_node("rewrite", do_rewrite)
    graph.add_node("answer", do_answer)
    graph.add_edge(START, "retrieve")
    graph.add_edge("retrieve", "grade")
    graph.add_conditional_edges("grade", route, {"done": "answer", "rewrite": "rewrite"})
    graph.add_edge("rewrite", "retrieve")
    graph.add_edge("answer", END)
    return graph.compile()


def corrective_contexts(question: str, retrieve: RetrieveFn, llm: LLM, *, k: int = 4,
                        max_rewrites: int = 1) -> list[Chunk]:
    """The chunks corrective RAG would answer from (relevant ones, else the last retrieval).

    >>> from ragloom.runtime import FakeLLM
    >>> chunk = Chunk("a", "Paris is the capital of France.")
    >>> corrective_contexts("Capital of France?", lambda q: [Hit(chunk, 1.0)],
    ...                     FakeLLM(['{"relevant": true}']))[0].id
    'a'
    """
    state = build_crag(retrieve, llm, k=k, max_rewrites=max_rewrites).invoke(
        {"question": question})
    return list(state.get("relevant") or state["retrieved"])[:k]
