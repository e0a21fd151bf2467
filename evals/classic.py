"""Metrics that need no judge: answer string overlap and rank-based retrieval quality.

Answer metrics follow the official SQuAD evaluation script (lower-case, drop punctuation and
the articles a/an/the, collapse whitespace; the best score over all reference answers; an
unanswerable question is matched by an empty answer). Retrieval metrics read relevance from
the example's gold (spans, passage ids or context texts) through :func:`gold_matches`.

Every metric has the signature ``metric(example, prediction) -> MetricResult``; the retrieval
ones accept ``k`` (default: all retrieved contexts). This module calls no model.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence

from ragloom.evals._types import Example, MetricResult, Prediction
from ragloom.retrievers._types import Chunk

__all__ = [
    "exact_match",
    "gold_matches",
    "is_abstention",
    "mrr",
    "ndcg",
    "normalize_answer",
    "recall_at_k",
    "token_f1",
]

_NAN = float("nan")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation.

    >>> normalize_answer("The  Eiffel-Tower!")
    'eiffeltower'
    """
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


_ABSTAIN = re.compile(
    r"^\W*(i (do not|don't|cannot|can't) (know|answer|tell|say)"
    r"|(unknown|no answer|unanswerable)\W*$"
    r"|(the )?(context|text|passage)s? (does|do) not (say|mention|contain|provide|state)"
    r"|(there is )?(not enough|no|insufficient) (information|context)|cannot be answered)",
    re.IGNORECASE,
)


def is_abstention(answer: str) -> bool:
    """Whether an answer declines to answer (empty, "I don't know", "no answer", ...).

    >>> is_abstention("I don't know."), is_abstention("Paris")
    (True, False)
    """
    return not answer.strip() or bool(_ABSTAIN.match(answer.strip()))


def _answer(prediction: Prediction) -> str:
    """The answer as scored: an abstention counts as the empty (no-answer) string."""
    return "" if is_abstention(prediction.answer) else prediction.answer


def _references(example: Example) -> tuple[str, ...] | None:
    """The answers to compare against; ``("",)`` for unanswerable, None when unknown."""
    if not example.answerable:
        return ("",)
    return example.answers or None


def exact_match(example: Example, prediction: Prediction) -> MetricResult:
    """1.0 if the normalised answer equals a normalised reference, else 0.0.

    Unanswerable questions are matched by an empty answer or an abstention
    (:func:`is_abstention`); NaN without references.

    >>> exact_match(Example(id="1", question="?", answers=("the Cat",)), Prediction(answer="cat"))
    MetricResult(score=1.0, explanation='matches reference 0')
    """
    refs = _references(example)
    if refs is None:
        return MetricResult(_NAN, "no reference answer")
    pred = normalize_answer(_answer(prediction))
    for i, ref in enumerate(refs):
        if pred == normalize_answer(ref):
            return MetricResult(1.0, f"matches reference {i}")
    return MetricResult(0.0, f"no reference matches {pred!r}")


def _f1(pred: list[str], ref: list[str]) -> float:
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def token_f1(example: Example, prediction: Prediction) -> MetricResult:
    """Harmonic mean of token precision and recall against the best reference (SQuAD F1).

    If either side has no tokens, F1 is 1.0 when both are empty and 0.0 otherwise (an
    abstention counts as empty).

    >>> ex = Example(id="1", question="?", answers=("red apple pie",))
    >>> round(token_f1(ex, Prediction(answer="an apple pie")).score, 3)
    0.8
    """
    refs = _references(example)
    if refs is None:
        return MetricResult(_NAN, "no reference answer")
    pred = normalize_answer(_answer(prediction)).split()
    scores = [_f1(pred, normalize_answer(r).split()) for r in refs]
    best = max(range(len(scores)), key=scores.__getitem__)
    return MetricResult(scores[best], f"best against reference {best}")


def _source(chunk: Chunk) -> str:
    meta = chunk.metadata
    return str(meta.get("doc_id", meta.get("source", chunk.id)))


def _matches_item(chunk: Chunk, example: Example, item: int) -> bool:
    if example.gold_spans:
        span = example.gold_spans[item]
        start, end = chunk.metadata.get("start"), chunk.metadata.get("end")
        if _source(chunk) != span.doc_id or start is None or end is None:
            return False
        return int(start) < span.end and span.start < int(end)
    if example.gold_ids:
        return example.gold_ids[item] in (_source(chunk), chunk.id)
    gold, text = " ".join(example.gold_contexts[item].split()), " ".join(chunk.text.split())
    return bool(gold and text) and (gold in text or text in gold)


def gold_matches(example: Example, chunks: Sequence[Chunk]) -> list[set[int]]:
    """For each chunk, the gold items (indices) it covers; empty sets for irrelevant chunks.

    Gold items are, by priority, the example's answer spans (a chunk covers a span when its
    ``start``/``end`` metadata overlap it in the same document), gold passage ids (the
    chunk's ``doc_id``/``source`` metadata or id equals it) or gold context texts (one
    contains the other, whitespace-normalised).

    >>> ex = Example(id="1", question="?", gold_ids=("d1", "d2"))
    >>> gold_matches(ex, [Chunk("x", "..", {"source": "d2"}), Chunk("y", "..", {"source": "d9"})])
    [{1}, set()]
    """
    n_items = len(example.gold_spans or example.gold_ids or example.gold_contexts)
    return [{i for i in range(n_items) if _matches_item(c, example, i)} for c in chunks]


def _n_gold(example: Example) -> int:
    return len(example.gold_spans or example.gold_ids or example.gold_contexts)


def recall_at_k(example: Example, prediction: Prediction, k: int | None = None) -> MetricResult:
    """Share of gold items covered by at least one of the top-``k`` retrieved chunks.

    NaN when the example has no gold (e.g. an unanswerable question).

    >>> ex = Example(id="1", question="?", gold_ids=("a", "b"))
    >>> recall_at_k(ex, Prediction(contexts=(Chunk("a", "text"),))).score
    0.5
    """
    n_gold = _n_gold(example)
    if n_gold == 0:
        return MetricResult(_NAN, "no gold passages or spans to recall")
    covered = set().union(*gold_matches(example, prediction.contexts[:k]))
    return MetricResult(len(covered) / n_gold, f"{len(covered)} of {n_gold} gold items retrieved")


def mrr(example: Example, prediction: Prediction, k: int | None = None) -> MetricResult:
    """Reciprocal rank (1-based) of the first relevant chunk in the top ``k``; 0 if none.

    >>> ex = Example(id="1", question="?", gold_ids=("b",))
    >>> mrr(ex, Prediction(contexts=(Chunk("a", ""), Chunk("b", "")))).score
    0.5
    """
    if _n_gold(example) == 0:
        return MetricResult(_NAN, "no gold passages or spans")
    for rank, items in enumerate(gold_matches(example, prediction.contexts[:k]), start=1):
        if items:
            return MetricResult(1.0 / rank, f"first relevant chunk at rank {rank}")
    return MetricResult(0.0, "no relevant chunk retrieved")


def ndcg(example: Example, prediction: Prediction, k: int | None = None) -> MetricResult:
    """Normalised discounted cumulative gain with binary gains, over the top ``k``.

    A chunk gains 1 if it covers a gold item no earlier chunk covered (so duplicates of one
    gold passage do not count twice); DCG = sum(gain_i / log2(i + 1)) for 1-based rank i;
    the ideal DCG puts min(k, number of gold items) gains at the top.

    >>> ex = Example(id="1", question="?", gold_ids=("b",))
    >>> round(ndcg(ex, Prediction(contexts=(Chunk("a", ""), Chunk("b", "")))).score, 4)
    0.6309
    """
    n_gold = _n_gold(example)
    if n_gold == 0:
        return MetricResult(_NAN, "no gold passages or spans")
    chunks = prediction.contexts[:k]
    seen: set[int] = set()
    dcg = 0.0
    for rank, items in enumerate(gold_matches(example, chunks), start=1):
        if items - seen:
            dcg += 1.0 / math.log2(rank + 1)
        seen |= items
    n_ideal = min(len(chunks) if k is None else k, n_gold)
    ideal = sum(1.0 / math.log2(r + 1) for r in range(1, n_ideal + 1))
    if ideal == 0:
        return MetricResult(0.0, "nothing retrieved")
    return MetricResult(dcg / ideal, f"DCG {dcg:.3f} of ideal {ideal:.3f}")
