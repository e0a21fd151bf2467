"""Score many predictions with many metrics at once, batching every round of judge calls.

``evaluate(examples, predictions, metrics)`` returns an :class:`EvalResult`: one
:class:`~ragloom.evals.MetricResult` per (example, metric) and the mean of each metric over
the examples where it is defined (NaN scores are counted, not averaged in). This module does
not run the pipeline that made the predictions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from ragloom.errors import EvalError
from ragloom.evals._types import Example, MetricResult, Prediction
from ragloom.evals.judge import Judge
from ragloom.evals.judged import JudgedMetric, run_programs

__all__ = ["EvalResult", "evaluate", "metric_name"]

AnyMetric: TypeAlias = Callable[[Example, Prediction], MetricResult] | JudgedMetric


def metric_name(metric: Any) -> str:
    """The column name of a metric: its ``name`` or its function name.

    >>> from ragloom.evals.classic import token_f1
    >>> metric_name(token_f1)
    'token_f1'
    """
    return str(getattr(metric, "name", None) or metric.__name__)


@dataclass(frozen=True, slots=True)
class EvalResult:
    """Per-example results and per-metric summaries.

    Attributes:
        rows: for each example, metric name -> result.
        means: metric name -> mean over defined scores (NaN if none is defined).
        num_undefined: metric name -> how many scores were NaN.
    """

    rows: tuple[dict[str, MetricResult], ...]
    means: dict[str, float]
    num_undefined: dict[str, int]


def evaluate(examples: Sequence[Example], predictions: Sequence[Prediction],
             metrics: Sequence[AnyMetric], judge: Judge | None = None) -> EvalResult:
    """Score every prediction with every metric; judged metrics share batched judge rounds.

    Args:
        examples: the questions with their gold.
        predictions: one per example, in the same order.
        metrics: classic metric functions and/or :class:`JudgedMetric` instances.
        judge: the judge for judged metrics (default: the first metric's own judge).

    >>> from ragloom.evals.classic import exact_match
    >>> ex = Example(id="1", question="?", answers=("Paris",))
    >>> evaluate([ex], [Prediction(answer="paris")], [exact_match]).means
    {'exact_match': 1.0}
    """
    if len(examples) != len(predictions):
        raise EvalError(f"{len(examples)} examples but {len(predictions)} predictions")
    names = [metric_name(m) for m in metrics]
    if len(set(names)) != len(names):
        raise EvalError(f"metric names must be distinct, got {names}")
    rows: list[dict[str, MetricResult]] = [{} for _ in examples]
    judged = [(n, m) for n, m in zip(names, metrics, strict=True) if isinstance(m, JudgedMetric)]
    judge = judge or next((m.judge for _, m in judged if m.judge is not None), None)
    programs = [m.program(e, p) for _, m in judged for e, p in zip(examples, predictions,
                                                                     strict=True)]
    results = iter(run_programs(programs, judge))
    for name, _ in judged:
        for row in rows:
            row[name] = next(results)
    for name, metric in zip(names, metrics, strict=True):
        if not isinstance(metric, JudgedMetric):
            for row, e, p in zip(rows, examples, predictions, strict=True):
                row[name] = metric(e, p)
    means, undefined = {}, {}
    for name in names:
        scores = [row[name].score for row in rows]
        defined = [s for s in scores if not math.isnan(s)]
        means[name] = sum(defined) / len(defined) if defined else float("nan")
        undefined[name] = len(scores) - len(defined)
    return EvalResult(tuple(rows), means, undefined)
