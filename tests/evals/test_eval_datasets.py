"""The data set loaders read the shared originals into one schema."""

from __future__ import annotations

import pytest

from ragloom._config import data_dir
from ragloom.errors import EvalError
from ragloom.evals import DATASETS, load_dataset

pytestmark = pytest.mark.skipif(not (data_dir() / "covid_qa_deepset").is_dir(),
                                reason="shared data sets not present")

EXPECTED = {"covid_qa": (1380, 98), "pubmedqa": (1000, 1000), "squad2": (500, 411),
            "hotpotqa": (100, 994), "musique": (100, 1890)}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_counts_and_gold_resolve_into_the_corpus(name):
    data = load_dataset(name)
    assert (len(data.examples), len(data.corpus)) == EXPECTED[name]
    ids = {p.id for p in data.corpus}
    assert len(ids) == len(data.corpus)
    for ex in data.examples:
        assert ex.question and set(ex.gold_ids) <= ids
        assert ex.answerable == bool(ex.answers)


def test_covid_spans_point_at_the_answer_text():
    data = load_dataset("covid_qa")
    texts = {p.id: p.text for p in data.corpus}
    for ex in data.examples:
        (span,) = ex.gold_spans
        assert texts[span.doc_id][span.start:span.end] == ex.answers[0]


def test_squad2_unanswerable_have_no_gold():
    data = load_dataset("squad2")
    unanswerable = [e for e in data.examples if not e.answerable]
    assert len(unanswerable) == 258 and all(not e.gold_ids for e in unanswerable)


def test_unknown_or_missing_data_set_names_the_problem(tmp_path):
    with pytest.raises(EvalError, match="unknown data set 'nope'"):
        load_dataset("nope")
    with pytest.raises(EvalError, match="RAGLOOM_DATA_DIR"):
        load_dataset("squad2", root=tmp_path)
