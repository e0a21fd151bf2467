"""Test doubles for the evals tests: a scripted judge responder and a lookup embedder."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

import numpy as np


class TableEmbedder:
    """An Embedder whose vectors come from a dict (unknown texts get a hashed vector)."""

    model_name = "table"

    def __init__(self, table: dict[str, Sequence[float]], dim: int = 3) -> None:
        self.table, self.dim = table, dim

    def _one(self, text: str) -> np.ndarray:
        if text in self.table:
            v = np.asarray(self.table[text], dtype=np.float32)
        else:
            v = np.random.default_rng(abs(hash(text)) % 2**32).normal(size=self.dim)
        return (v / np.linalg.norm(v)).astype(np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._one(t) for t in texts]) if texts else np.zeros((0, self.dim))

    def embed_query(self, text: str) -> np.ndarray:
        return self._one(text)


def scripted_judge(statements: dict[str, list[str]], supported: dict[str, set[str]] | None = None,
                   questions: dict[str, list[str]] | None = None,
                   relevant: set[str] | None = None) -> Callable[[str], str]:
    """A FakeLLM responder that answers each judge prompt kind from small tables.

    statements: text -> its statements (extraction).
    supported: context text fragment -> statements it supports (verification: a statement
        is supported if any fragment in the prompt's CONTEXT supports it).
    questions: answer -> generated questions (answer relevancy).
    relevant: context fragments the relevance judge calls useful.
    """
    supported, questions, relevant = supported or {}, questions or {}, relevant or set()

    def respond(prompt: str) -> str:
        if prompt.startswith("Break the ANSWER"):
            text = prompt.split("\nANSWER: ", 1)[1].rsplit("\nJSON:", 1)[0]
            return json.dumps({"statements": statements.get(text, [])})
        if prompt.startswith("For each STATEMENT"):
            context = prompt.split("CONTEXT:\n", 1)[1].split("\n\nSTATEMENTS: ", 1)[0]
            listed = json.loads(prompt.split("STATEMENTS: ", 1)[1].rsplit("\nJSON:", 1)[0])
            ok = set().union(*(v for k, v in supported.items() if k in context))
            return json.dumps({"verdicts": [{"statement": s, "verdict": int(s in ok)}
                                            for s in listed]})
        if prompt.startswith("Write "):
            answer = prompt.split("ANSWER: ", 1)[1].rsplit("\nJSON:", 1)[0]
            qs = questions.get(answer)
            return json.dumps({"questions": qs or [], "noncommittal": qs is None})
        if prompt.startswith("Decide whether the CONTEXT"):
            context = prompt.split("CONTEXT:\n", 1)[1]
            return json.dumps({"verdict": int(any(r in context for r in relevant))})
        raise AssertionError(f"unexpected prompt: {prompt[:60]!r}")

    return respond


def count_kind(prompts: Sequence[str], prefix: str) -> int:
    return sum(bool(re.match(re.escape(prefix), p)) for p in prompts)
