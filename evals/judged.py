"""The judged-metric machinery and the three context metrics (RAGAS-style definitions).

Each metric is written for one (example, prediction) as a small generator program that
*yields* lists of :class:`~ragloom.evals.judge.Ask` and receives the judge's replies;
:func:`run_programs` drives many programs in lockstep so that every round of judge calls,
across examples and metrics, is one batched ``generate``. ``metric(example, prediction)``
runs a single program; ``metric.batch(examples, predictions)`` runs many.

Statements are extracted with one shared prompt, so the answer's claims extracted for
faithfulness are a cache hit for answer correctness (and the reference's for context recall).

The answer metrics (relevancy, similarity, correctness) live in
:mod:`ragloom.evals.answer_metrics`. This module does not run retrieval or generation, and
loads no model itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np

from ragloom.errors import ConfigError
from ragloom.evals._prompts import (
    Relevance,
    Statements,
    Verdicts,
    extract_prompt,
    relevance_prompt,
    verdicts_for,
    verify_prompt,
)
from ragloom.evals._types import Example, MetricResult, Prediction
from ragloom.evals.classic import gold_matches
from ragloom.evals.judge import Ask, Judge, Reply
from ragloom.retrievers._types import Embedder

__all__ = [
    "ContextPrecision",
    "ContextRecall",
    "Faithfulness",
    "JudgedMetric",
    "precision_weighted",
    "run_programs",
]

_NAN = float("nan")
Program = Generator[list[Ask[Any]], list[Reply[Any]], MetricResult]


def run_programs(programs: Sequence[Program], judge: Judge | None) -> list[MetricResult]:
    """Drive metric programs together: each round's asks go to the judge as one batch."""
    results: list[MetricResult | None] = [None] * len(programs)
    pending: dict[int, list[Ask[Any]]] = {}

    def step(i: int, replies: list[Reply[Any]] | None) -> None:
        try:
            pending[i] = programs[i].send(replies)  # type: ignore[arg-type]
        except StopIteration as stop:
            results[i] = stop.value
            pending.pop(i, None)

    for i in range(len(programs)):
        step(i, None)
    while pending:
        if judge is None:
            raise ConfigError("this metric needs a judge LLM; pass judge=Judge(llm)")
        order = sorted(pending)
        asks = [a for i in order for a in pending[i]]
        replies = judge.ask(asks)
        at = 0
        for i in order:
            n = len(pending[i])
            step(i, replies[at : at + n])
            at += n
    return [r if r is not None else MetricResult(_NAN, "metric returned nothing") for r in results]


class JudgedMetric(ABC):
    """Base of the judged metrics: ``metric(example, prediction) -> MetricResult``.

    Args:
        judge: the judge (not needed by :class:`AnswerSimilarity`, nor by
            :class:`ContextPrecision` on examples with gold).
        embedder: the embedder (needed by answer relevancy, similarity and correctness).
    """

    name = "judged"

    def __init__(self, judge: Judge | None = None, embedder: Embedder | None = None) -> None:
        self.judge, self.embedder = judge, embedder

    @property
    def __name__(self) -> str:  # noqa: D105 - reads like a function in reports
        return self.name

    @abstractmethod
    def program(self, example: Example, prediction: Prediction) -> Program:
        """The metric for one example, as a generator yielding judge asks."""

    def __call__(self, example: Example, prediction: Prediction) -> MetricResult:
        return run_programs([self.program(example, prediction)], self.judge)[0]

    def batch(self, examples: Sequence[Example], predictions: Sequence[Prediction]
              ) -> list[MetricResult]:
        """Score many predictions with batched judge calls."""
        pairs = zip(examples, predictions, strict=True)
        return run_programs([self.program(e, p) for e, p in pairs], self.judge)

    def _embedder(self) -> Embedder:
        if self.embedder is None:
            raise ConfigError(f"{self.name} needs an embedder; pass embedder=...")
        return self.embedder

    def _cosines(self, text: str, others: Sequence[str]) -> np.ndarray:
        vectors = np.asarray(self._embedder().embed([text, *others]), dtype=np.float64)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return np.clip(vectors[1:] @ vectors[0], -1.0, 1.0)


def _context(prediction: Prediction) -> str:
    return "\n\n".join(c.text for c in prediction.contexts if c.text.strip())


def statements_ask(question: str, text: str) -> Ask[Statements]:
    return Ask(extract_prompt(question, text), Statements)


def verdicts_of(reply: Reply[Verdicts], n: int) -> list[int] | str:
    """The 0/1 verdicts, or why they are unusable."""
    if reply.value is None:
        return f"malformed judge verdict: {reply.error}"
    verdicts = [v.verdict for v in reply.value.verdicts]
    if len(verdicts) != n:
        return f"malformed judge verdict: {len(verdicts)} verdicts for {n} statements"
    return verdicts


def _supported_share(statements: list[str], context: str, what: str) -> Program:
    """Sub-program: the share of ``statements`` the judge finds supported by ``context``."""
    (reply,) = yield [Ask(verify_prompt(statements, context), verdicts_for(len(statements)))]
    verdicts = verdicts_of(reply, len(statements))
    if isinstance(verdicts, str):
        return MetricResult(_NAN, verdicts)
    return MetricResult(sum(verdicts) / len(verdicts), f"{sum(verdicts)} of {len(verdicts)} {what}")


class Faithfulness(JudgedMetric):
    """Share of the answer's claims that the retrieved context supports.

    The judge breaks the answer into atomic claims, then gives each a 0/1 verdict against the
    joined contexts: score = supported claims / claims. Empty answer or an answer without
    claims: NaN (nothing to verify). Claims but no context: 0.0.

    Example: claims ["Paris is in France", "Paris has 9M people"], verdicts [1, 0] -> 0.5.
    """

    name = "faithfulness"

    def program(self, example: Example, prediction: Prediction) -> Program:
        if not prediction.answer.strip():
            return MetricResult(_NAN, "empty answer: no claims to verify")
        (claims,) = yield [statements_ask(example.question, prediction.answer)]
        if claims.value is None:
            return MetricResult(_NAN, f"malformed claim list: {claims.error}")
        statements = [s for s in claims.value.statements if s.strip()]
        if not statements:
            return MetricResult(_NAN, "the answer makes no claims")
        context = _context(prediction)
        if not context:
            return MetricResult(0.0, f"no context: none of {len(statements)} claims supported")
        return (yield from _supported_share(statements, context, "claims supported"))


class ContextPrecision(JudgedMetric):
    """Precision@K weighted by relevance: sum_k(P@k * v_k) / sum_k(v_k) over the top K.

    v_k is 1 if the k-th context is relevant. With gold spans/ids/contexts the verdicts come
    from the gold (no judge); otherwise the judge decides whether each context was useful to
    reach the reference answer (or, without one, the predicted answer). No relevant context
    in the top K: 0.0; nothing retrieved: 0.0.

    Example: verdicts [1, 0, 1] -> (1/1 + 2/3) / 2 = 0.8333.
    """

    name = "context_precision"

    def __init__(self, judge: Judge | None = None, embedder: Embedder | None = None,
                 k: int | None = None) -> None:
        super().__init__(judge, embedder)
        self.k = k

    def program(self, example: Example, prediction: Prediction) -> Program:
        chunks = prediction.contexts[: self.k]
        if not chunks:
            return MetricResult(0.0, "nothing retrieved")
        if example.has_gold:
            verdicts, source = [int(bool(m)) for m in gold_matches(example, chunks)], "gold"
        else:
            target = example.answers[0] if example.answers else prediction.answer
            if not target.strip():
                return MetricResult(_NAN, "no gold, no reference and no answer to judge against")
            asks = [Ask(relevance_prompt(example.question, target, c.text), Relevance)
                    for c in chunks]
            replies = yield asks
            bad = [r.error for r in replies if r.value is None]
            if bad:
                return MetricResult(_NAN, f"malformed judge verdict: {bad[0]}")
            verdicts, source = [r.value.verdict for r in replies if r.value], "judge"
        return MetricResult(precision_weighted(verdicts),
                            f"{source} verdicts {''.join(map(str, verdicts))}")


def precision_weighted(verdicts: Sequence[int]) -> float:
    """sum_k(precision@k * v_k) / sum_k(v_k); 0.0 when no verdict is 1.

    >>> round(precision_weighted([1, 0, 1]), 4)
    0.8333
    """
    hits, total = 0, 0.0
    for k, v in enumerate(verdicts, start=1):
        hits += v
        total += v * hits / k
    return total / hits if hits else 0.0


class ContextRecall(JudgedMetric):
    """Share of the reference answer's statements attributable to the retrieved context.

    The judge extracts the reference's statements and gives each a 0/1 verdict against the
    joined contexts. No reference or an unanswerable question: NaN. Empty context: 0.0.
    """

    name = "context_recall"

    def program(self, example: Example, prediction: Prediction) -> Program:
        if not example.answerable or not example.answers:
            return MetricResult(_NAN, "no reference answer to recall")
        context = _context(prediction)
        if not context:
            return MetricResult(0.0, "no context retrieved")
        (ref,) = yield [statements_ask(example.question, example.answers[0])]
        if ref.value is None or not ref.value.statements:
            return MetricResult(_NAN, f"no reference statements: {ref.error or 'empty list'}")
        statements = ref.value.statements
        return (yield from _supported_share(statements, context, "reference statements found"))
