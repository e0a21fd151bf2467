"""Metric names as sweeps and the CLI spell them, and how to build them (private).

``CLASSIC`` needs no judge (context precision reads its verdicts from the gold when the
data set has gold). ``JUDGED`` needs a judge LLM and/or an embedder. ``NEEDS_ANSWER`` lists
the metrics that are skipped when a sweep does not generate answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ragloom.errors import ConfigError
from ragloom.evals import answer_metrics, classic, judged

__all__ = ["ALL", "CLASSIC", "JUDGED", "NEEDS_ANSWER", "build_metrics"]

CLASSIC = ("exact_match", "token_f1", "recall_at_k", "mrr", "ndcg", "context_precision")
JUDGED = ("faithfulness", "answer_relevancy", "context_recall", "answer_correctness",
          "answer_similarity")
ALL = CLASSIC + JUDGED
NEEDS_ANSWER = frozenset({"exact_match", "token_f1", "faithfulness", "answer_relevancy",
                          "answer_correctness", "answer_similarity"})
_JUDGED_CLASSES: dict[str, type[judged.JudgedMetric]] = {
    "answer_correctness": answer_metrics.AnswerCorrectness,
    "answer_relevancy": answer_metrics.AnswerRelevancy,
    "answer_similarity": answer_metrics.AnswerSimilarity,
    "context_precision": judged.ContextPrecision,
    "context_recall": judged.ContextRecall,
    "faithfulness": judged.Faithfulness,
}


def build_metrics(names: Sequence[str], *, judge: Any = None, embedder: Any = None,
                  judge_model: str | None = None, generate: bool = True) -> list[Any]:
    """Metric callables for ``names`` (answer metrics dropped when not generating).

    A judge is created (from ``judge_model``, loaded on its first call) only if a judged
    metric is asked for and none is given.
    """
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise ConfigError(f"unknown metrics {unknown}; choose from {list(ALL)}")
    wanted = [n for n in names if generate or n not in NEEDS_ANSWER]
    if judge is None and any(n in JUDGED for n in wanted):
        from ragloom.evals.judge import Judge

        llm = None
        if judge_model is not None:
            from ragloom.evals.runner import load_model

            llm = load_model(judge_model)
        judge = Judge(llm)
    out: list[Any] = []
    for name in wanted:
        if name in _JUDGED_CLASSES:
            out.append(_JUDGED_CLASSES[name](judge, embedder))
        else:
            out.append(getattr(classic, name))
    return out
