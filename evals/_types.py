"""The shared vocabulary of ragloom.evals: examples, predictions and metric results.

An :class:`Example` is one question with what a perfect system would find and say; an
:class:`EvalSet` bundles examples with the corpus they are asked over; a :class:`Prediction`
is what a RAG pipeline produced for one example; a :class:`MetricResult` is one metric's
score for one (example, prediction) pair, always with an explanation.

This module defines data only; the metrics live in :mod:`ragloom.evals.classic` and
:mod:`ragloom.evals.judged`. It imports nothing heavy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from ragloom.errors import EvalError
from ragloom.retrievers._types import Chunk

__all__ = ["EvalSet", "Example", "GoldSpan", "Metric", "MetricResult", "Passage", "Prediction"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GoldSpan:
    """A character span of a corpus passage that holds the answer.

    Attributes:
        doc_id: id of the :class:`Passage` the span lies in.
        start: first character (0-based).
        end: one past the last character.
    """

    doc_id: str
    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise EvalError(f"gold span of {self.doc_id!r} is empty or reversed: "
                            f"[{self.start}, {self.end})")


@dataclass(frozen=True, slots=True, kw_only=True)
class Passage:
    """One document of a corpus: id, text and an optional title."""

    id: str
    text: str
    title: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Example:
    """One evaluation question and its gold standard.

    Attributes:
        id: unique within its data set.
        question: the question text.
        answers: accepted reference answers (empty when unanswerable or unknown).
        gold_ids: ids of the corpus passages that support the answer.
        gold_spans: exact answer spans in corpus passages (extractive data sets).
        gold_contexts: texts of the supporting contexts, when known.
        answerable: False for questions the corpus cannot answer (SQuAD 2.0).
        dataset: the data set's name.
    """

    id: str
    question: str
    answers: tuple[str, ...] = ()
    gold_ids: tuple[str, ...] = ()
    gold_spans: tuple[GoldSpan, ...] = ()
    gold_contexts: tuple[str, ...] = ()
    answerable: bool = True
    dataset: str = ""

    @property
    def has_gold(self) -> bool:
        """Whether retrieval relevance can be read from the gold (no judge needed)."""
        return bool(self.gold_ids or self.gold_spans or self.gold_contexts)


@dataclass(frozen=True, slots=True)
class EvalSet:
    """Examples plus the corpus they are asked over."""

    name: str
    examples: tuple[Example, ...]
    corpus: tuple[Passage, ...]

    def head(self, n: int) -> EvalSet:
        """The first ``n`` examples over the same corpus."""
        return EvalSet(self.name, self.examples[:n], self.corpus)


@dataclass(frozen=True, slots=True, kw_only=True)
class Prediction:
    """What a pipeline produced for one example.

    Attributes:
        answer: the generated answer ("" when the pipeline abstained or did not generate).
        contexts: the retrieved chunks, best first, as handed to the generator.
    """

    answer: str = ""
    contexts: tuple[Chunk, ...] = field(default_factory=tuple)

    @staticmethod
    def of(answer: str, contexts: list[str] | tuple[str, ...] = ()) -> Prediction:
        """A prediction from plain context strings (ids ``c0``, ``c1``, ...).

        >>> Prediction.of("Paris", ["Paris is in France."]).contexts[0].id
        'c0'
        """
        chunks = tuple(Chunk(id=f"c{i}", text=t) for i, t in enumerate(contexts))
        return Prediction(answer=answer, contexts=chunks)


@dataclass(frozen=True, slots=True)
class MetricResult:
    """One metric's score for one example, and why.

    ``score`` is in [0, 1], or NaN when the metric is undefined for this example (the
    explanation says why: no reference, a malformed judge verdict, ...). NaN is never
    silently turned into a number.
    """

    score: float
    explanation: str = ""

    @property
    def is_defined(self) -> bool:
        """False when the score is NaN."""
        return not math.isnan(self.score)


class Metric(Protocol):
    """``metric(example, prediction) -> MetricResult``; its ``__name__`` labels its column."""

    def __call__(self, example: Example, prediction: Prediction) -> MetricResult:
        """Score one prediction."""
        ...
