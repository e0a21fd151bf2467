"""BM25 against hand-computed scores, reciprocal-rank fusion, and the dense retriever.

Store-level behaviour shared with the vector stores (filters, persistence, corruption) is in
``test_store_conformance.py``; this file checks what only these retrievers do.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from ragloom.errors import ConfigError
from ragloom.retrievers import (
    BM25Retriever,
    DenseRetriever,
    FaissStore,
    HashEmbedder,
    HybridRetriever,
    Retriever,
    reciprocal_rank_fusion,
)
from ragloom.retrievers._types import Chunk, Hit

DOCS = [
    Chunk("d0", "masks masks filter droplets", {"kind": "ppe"}),
    Chunk("d1", "vaccines train antibodies", {"kind": "vaccine"}),
    Chunk("d2", "cloth masks and surgical masks compared in a trial", {"kind": "ppe"}),
    Chunk("d3", "antibodies fade months after infection", {"kind": "immunity"}),
]


def _ids(hits: list[Hit]) -> list[str]:
    return [h.chunk.id for h in hits]


def _bm25(tf: int, dl: int, avgdl: float, df: int, n: int, k1: float = 1.5, b: float = 0.75):
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    return idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))


def test_bm25_scores_match_the_formula_by_hand() -> None:
    bm25 = BM25Retriever(DOCS)
    # tokens after English stopwords (and one-letter words): d0 4, d1 3, d2 6, d3 5
    lengths = {"d0": 4, "d1": 3, "d2": 6, "d3": 5}
    avgdl = sum(lengths.values()) / 4
    hits = bm25.retrieve("masks", k=4)
    assert _ids(hits) == ["d0", "d2"]  # chunks without the term are not returned
    assert hits[0].score == pytest.approx(_bm25(2, lengths["d0"], avgdl, df=2, n=4), rel=1e-5)
    assert hits[1].score == pytest.approx(_bm25(2, lengths["d2"], avgdl, df=2, n=4), rel=1e-5)
    both = bm25.retrieve("antibodies vaccines", k=1)[0]
    expected = _bm25(1, 3, avgdl, df=2, n=4) + _bm25(1, 3, avgdl, df=1, n=4)
    assert both.chunk.id == "d1" and both.score == pytest.approx(expected, rel=1e-5)


def test_bm25_stopword_only_and_unknown_queries_return_nothing() -> None:
    bm25 = BM25Retriever(DOCS)
    assert bm25.retrieve("the and of", k=3) == []
    assert bm25.retrieve("zebra", k=3) == []
    assert bm25.retrieve("masks", k=0) == []


def test_bm25_stemmer_is_applied_and_required_on_load(tmp_path: Path) -> None:
    def strip_plural(words: list[str]) -> list[str]:
        return [w[:-1] if w.endswith("s") else w for w in words]

    assert BM25Retriever(DOCS).retrieve("mask", k=2) == []
    stemmed = BM25Retriever(DOCS, stemmer=strip_plural)
    assert _ids(stemmed.retrieve("mask", k=2)) == ["d0", "d2"]
    stemmed.save(tmp_path / "bm25")
    with pytest.raises(ConfigError, match="stemmer"):
        BM25Retriever.load(tmp_path / "bm25")
    loaded = BM25Retriever.load(tmp_path / "bm25", stemmer=strip_plural)
    assert _ids(loaded.retrieve("mask", k=2)) == ["d0", "d2"]


def test_bm25_bad_parameters_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="k1"):
        BM25Retriever(k1=-1)
    with pytest.raises(ConfigError, match="b="):
        BM25Retriever(b=1.5)


# -- reciprocal-rank fusion -------------------------------------------------------------------


def test_rrf_matches_hand_computation() -> None:
    a, b, c = (Chunk(i, i) for i in "abc")
    first = [Hit(a, 9.0), Hit(b, 5.0), Hit(c, 1.0)]
    second = [Hit(c, 0.9), Hit(a, 0.8)]
    fused = reciprocal_rank_fusion([first, second], weights=[1.0, 2.0], rrf_k=60)
    expected = {"a": 1 / 61 + 2 / 62, "b": 1 / 62, "c": 1 / 63 + 2 / 61}
    assert _ids(fused) == ["c", "a", "b"]
    assert {h.chunk.id: h.score for h in fused} == pytest.approx(expected)
    assert [h.rank for h in fused] == [0, 1, 2]
    assert fused[2].extra["ranks"] == [2, None]


def test_rrf_counts_a_repeated_id_once_per_list() -> None:
    a = Chunk("a", "")
    fused = reciprocal_rank_fusion([[Hit(a, 1.0), Hit(a, 0.5)]], weights=[1.0], rrf_k=0)
    assert len(fused) == 1 and fused[0].score == pytest.approx(1.0)


class _Recorder:
    """A scripted retriever that records what it was asked."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self.calls: list[tuple[str, int, Any]] = []

    def retrieve(self, query: str, k: int = 5, where: dict[str, Any] | None = None) -> list[Hit]:
        self.calls.append((query, k, where))
        return [Hit(Chunk(i, i), 1.0, n) for n, i in enumerate(self.ids[:k])]


def test_hybrid_fetches_fetch_k_passes_filters_and_truncates() -> None:
    left, right = _Recorder(["a", "b", "c"]), _Recorder(["c", "d"])
    hybrid = HybridRetriever([left, right], fetch_k=7)
    assert isinstance(hybrid, Retriever)
    hits = hybrid.retrieve("q", k=2, where={"kind": "x"})
    assert _ids(hits) == ["c", "a"]  # c is in both lists
    assert left.calls == right.calls == [("q", 7, {"kind": "x"})]
    hybrid.retrieve("q", k=12)
    assert left.calls[-1][1] == 12  # never asks for fewer than k


@pytest.mark.parametrize(
    "kwargs",
    [{"weights": [1.0]}, {"weights": [1.0, -1.0]}, {"weights": [0.0, 0.0]}, {"fetch_k": 0}],
)
def test_hybrid_bad_settings_are_config_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        HybridRetriever([_Recorder([]), _Recorder([])], **kwargs)
    with pytest.raises(ConfigError, match="two or more"):
        HybridRetriever([_Recorder([])])


def test_hybrid_of_dense_and_bm25_finds_what_either_finds() -> None:
    embedder = HashEmbedder(64)
    store = FaissStore(64, embedder=embedder)
    store.add(
        [c.id for c in DOCS],
        embedder.embed([c.text for c in DOCS]),
        [c.metadata for c in DOCS],
        [c.text for c in DOCS],
    )
    dense, bm25 = DenseRetriever(store), BM25Retriever(DOCS)
    hybrid = HybridRetriever([dense, bm25])
    hits = hybrid.retrieve("surgical masks trial", k=4)
    assert _ids(hits)[0] == "d2"
    assert hits[0].extra["ranks"][0] is not None and hits[0].extra["ranks"][1] is not None
    filtered = hybrid.retrieve("antibodies", k=4, where={"kind": "immunity"})
    assert _ids(filtered) == ["d3"]


# -- dense ----------------------------------------------------------------------------------


def test_dense_retriever_checks_its_embedder() -> None:
    store = FaissStore(8)
    with pytest.raises(ConfigError, match="needs an embedder"):
        DenseRetriever(store)
    with pytest.raises(ConfigError, match="16 dims.*8"):
        DenseRetriever(store, HashEmbedder(16))
    assert DenseRetriever(store, HashEmbedder(8)).retrieve("anything") == []
