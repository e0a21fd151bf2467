"""The judged answer metrics: answer relevancy, answer similarity and answer correctness.

Same signature and machinery as :mod:`ragloom.evals.judged` (generator programs that yield
judge asks, batched by :func:`~ragloom.evals.judged.run_programs`). Relevancy and
correctness need a judge and an embedder; similarity only an embedder. This module loads no
model itself.
"""

from __future__ import annotations

import numpy as np

from ragloom.errors import ConfigError
from ragloom.evals._prompts import Questions, questions_prompt, verdicts_for, verify_prompt
from ragloom.evals._types import Example, MetricResult, Prediction
from ragloom.evals.classic import is_abstention
from ragloom.evals.judge import Ask, Judge
from ragloom.evals.judged import JudgedMetric, Program, statements_ask, verdicts_of
from ragloom.retrievers._types import Embedder

__all__ = ["AnswerCorrectness", "AnswerRelevancy", "AnswerSimilarity"]

_NAN = float("nan")


class AnswerRelevancy(JudgedMetric):
    """Mean cosine similarity between the question and questions generated from the answer.

    The judge writes ``n`` questions the answer would answer and flags noncommittal answers;
    score = mean cos(embed(question), embed(q_i)), and 0 if noncommittal. An empty answer
    or an abstention scores 0 without a judge call.
    """

    name = "answer_relevancy"

    def __init__(self, judge: Judge | None = None, embedder: Embedder | None = None,
                 n: int = 3) -> None:
        super().__init__(judge, embedder)
        if not 1 <= n <= 5:
            raise ConfigError(f"answer relevancy generates 1..5 questions, got n={n}")
        self.n = n

    def program(self, example: Example, prediction: Prediction) -> Program:
        if is_abstention(prediction.answer):
            return MetricResult(0.0, "empty or noncommittal answer")
        (reply,) = yield [Ask(questions_prompt(prediction.answer, self.n), Questions)]
        if reply.value is None:
            return MetricResult(_NAN, f"malformed judge reply: {reply.error}")
        if reply.value.noncommittal:
            return MetricResult(0.0, "the judge found the answer noncommittal")
        questions = [q for q in reply.value.questions if q.strip()]
        if not questions:
            return MetricResult(_NAN, "the judge generated no questions")
        score = float(np.mean(self._cosines(example.question, questions)))
        return MetricResult(max(score, 0.0), f"mean cosine over {len(questions)} questions")


class AnswerSimilarity(JudgedMetric):
    """Cosine similarity of the embeddings of answer and reference (best reference).

    No reference or an unanswerable question: NaN. Empty answer: 0.0. Negative cosines
    are clipped to 0.
    """

    name = "answer_similarity"

    def program(self, example: Example, prediction: Prediction) -> Program:
        if not example.answerable or not example.answers:
            return MetricResult(_NAN, "no reference answer")
        if not prediction.answer.strip():
            return MetricResult(0.0, "empty answer")
        best = float(np.max(self._cosines(prediction.answer, example.answers)))
        return MetricResult(max(best, 0.0), "cosine to the closest reference")
        yield []  # pragma: no cover - makes this a generator; it never asks the judge


class AnswerCorrectness(JudgedMetric):
    """0.75 x F1(answer statements vs reference statements) + 0.25 x answer similarity.

    TP = answer statements the reference supports, FP = the others, FN = reference
    statements the answer does not cover; F1 = TP / (TP + (FP + FN) / 2). Unanswerable
    question: 1.0 if the answer abstains, else 0.0. No reference: NaN. Empty answer: 0.0.

    Example: 2 answer statements, verdicts [1, 0]; 2 reference statements, covered [1, 0];
    similarity 0.8 -> F1 = 1 / (1 + 1) = 0.5 -> 0.75 * 0.5 + 0.25 * 0.8 = 0.575.
    """

    name = "answer_correctness"

    def program(self, example: Example, prediction: Prediction) -> Program:
        if not example.answerable:
            ok = is_abstention(prediction.answer)
            return MetricResult(float(ok), "unanswerable: " + ("abstained" if ok else "answered"))
        if not example.answers:
            return MetricResult(_NAN, "no reference answer")
        if not prediction.answer.strip():
            return MetricResult(0.0, "empty answer")
        reference = example.answers[0]
        mine, ref = yield [statements_ask(example.question, prediction.answer),
                           statements_ask(example.question, reference)]
        if mine.value is None or ref.value is None:
            return MetricResult(_NAN, f"malformed statements: {mine.error or ref.error}")
        a, r = mine.value.statements, ref.value.statements
        f1 = 0.0
        if a and r:
            va, vr = yield [Ask(verify_prompt(a, reference), verdicts_for(len(a))),
                            Ask(verify_prompt(r, prediction.answer), verdicts_for(len(r)))]
            supported, covered = verdicts_of(va, len(a)), verdicts_of(vr, len(r))
            if isinstance(supported, str) or isinstance(covered, str):
                return MetricResult(_NAN, str(supported if isinstance(supported, str) else covered))
            tp, fp, fn = sum(supported), len(a) - sum(supported), len(r) - sum(covered)
            f1 = tp / (tp + 0.5 * (fp + fn)) if tp else 0.0
        similarity = max(float(np.max(self._cosines(prediction.answer, example.answers))), 0.0)
        score = 0.75 * f1 + 0.25 * similarity
        return MetricResult(score, f"F1 {f1:.3f}, similarity {similarity:.3f}")
