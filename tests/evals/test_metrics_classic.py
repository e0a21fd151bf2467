"""Classic metrics against hand-computed values, including the edge cases."""

from __future__ import annotations

import math

import pytest

from ragloom.evals import Example, GoldSpan, Prediction
from ragloom.evals.classic import (
    exact_match,
    gold_matches,
    is_abstention,
    mrr,
    ndcg,
    normalize_answer,
    recall_at_k,
    token_f1,
)
from ragloom.retrievers._types import Chunk

EX = Example(id="q", question="Who wrote it?", answers=("The Beatles", "Lennon and McCartney"))
UNANSWERABLE = Example(id="u", question="?", answerable=False)
NO_REF = Example(id="n", question="?")


def test_normalize_answer_follows_squad():
    assert normalize_answer("  The Cat, a HAT!  ") == "cat hat"


@pytest.mark.parametrize(("answer", "score"), [
    ("the beatles", 1.0), ("Lennon and McCartney.", 1.0), ("Beatles!", 1.0), ("Lennon", 0.0),
    ("", 0.0),
])
def test_exact_match(answer, score):
    assert exact_match(EX, Prediction(answer=answer)).score == score


def test_token_f1_hand_computed():
    # "lennon" vs "lennon and mccartney": P = 1/1, R = 1/3 -> F1 = 2 * (1/3) / (4/3) = 0.5
    assert token_f1(EX, Prediction(answer="Lennon")).score == pytest.approx(0.5)
    # "paul mccartney and john lennon" vs ref 2: common {mccartney, and, lennon} = 3;
    # P = 3/5, R = 3/3 -> F1 = 2 * 0.6 * 1 / 1.6 = 0.75
    both = Prediction(answer="Paul McCartney and John Lennon")
    assert token_f1(EX, both).score == pytest.approx(0.75)
    assert token_f1(EX, Prediction(answer="")).score == 0.0


def test_unanswerable_is_matched_by_empty_or_abstaining_answer():
    for answer in ("", "I don't know.", "The context does not mention it"):
        assert exact_match(UNANSWERABLE, Prediction(answer=answer)).score == 1.0
        assert token_f1(UNANSWERABLE, Prediction(answer=answer)).score == 1.0
    assert exact_match(UNANSWERABLE, Prediction(answer="Paris")).score == 0.0
    assert token_f1(UNANSWERABLE, Prediction(answer="Paris")).score == 0.0


def test_no_reference_is_nan_with_explanation():
    for metric in (exact_match, token_f1):
        result = metric(NO_REF, Prediction(answer="x"))
        assert math.isnan(result.score) and "no reference" in result.explanation


def test_is_abstention():
    assert is_abstention("  ") and is_abstention("Unanswerable.")
    assert not is_abstention("Unknown soldiers were buried there")
    assert not is_abstention("It is in Paris")


def _chunks(*sources):
    return tuple(Chunk(id=f"c{i}", text="t", metadata={"source": s}) for i, s in enumerate(sources))


def test_retrieval_metrics_hand_computed():
    ex = Example(id="q", question="?", gold_ids=("a", "b"))
    pred = Prediction(contexts=_chunks("x", "a", "y", "a", "b"))
    assert recall_at_k(ex, pred, k=2).score == 0.5
    assert recall_at_k(ex, pred).score == 1.0
    assert mrr(ex, pred).score == 0.5
    # gains at ranks 2 and 5 (the repeat of "a" at rank 4 gains nothing)
    dcg = 1 / math.log2(3) + 1 / math.log2(6)
    assert ndcg(ex, pred).score == pytest.approx(dcg / (1 + 1 / math.log2(3)))
    assert ndcg(ex, pred, k=1).score == 0.0


def test_retrieval_metrics_edge_cases():
    ex = Example(id="q", question="?", gold_ids=("a",))
    empty = Prediction()
    assert recall_at_k(ex, empty).score == 0.0
    assert mrr(ex, empty).score == 0.0
    assert ndcg(ex, empty).score == 0.0
    for metric in (recall_at_k, mrr, ndcg):
        assert math.isnan(metric(UNANSWERABLE, Prediction(contexts=_chunks("a"))).score)


def test_gold_spans_match_by_character_overlap():
    ex = Example(id="q", question="?", gold_spans=(GoldSpan(doc_id="d", start=100, end=120),))
    chunks = [Chunk("1", "", {"source": "d", "start": 0, "end": 100}),
              Chunk("2", "", {"source": "d", "start": 90, "end": 110}),
              Chunk("3", "", {"source": "e", "start": 100, "end": 120}),
              Chunk("4", "", {"doc_id": "d", "start": 119, "end": 300})]
    assert gold_matches(ex, chunks) == [set(), {0}, set(), {0}]


def test_gold_contexts_match_by_containment():
    ex = Example(id="q", question="?", gold_contexts=("Paris is  the capital.",))
    chunks = [Chunk("1", "Intro. Paris is the capital. More."), Chunk("2", "Lyon")]
    assert gold_matches(ex, chunks) == [{0}, set()]
