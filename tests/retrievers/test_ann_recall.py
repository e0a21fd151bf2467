"""Approximate indexes against exact search on real text embeddings (COVID-QA, MiniLM).

About 2,000 chunks of the COVID-QA articles and 200 of its questions are embedded once and
cached as .npy under ragloom's cache dir (keyed by the model and the texts), so later runs
skip the model. Recall@10 of HNSW, IVF and Chroma is measured against Faiss flat.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pytest

from ragloom._config import cache_dir, data_dir
from ragloom.retrievers import FaissStore

pytestmark = pytest.mark.model

NUM_CHUNKS = 2000
NUM_QUERIES = 200
CHUNK_CHARS = 300
K = 10


def _covid_texts() -> tuple[list[str], list[str]]:
    path = data_dir() / "covid_qa_deepset" / "200423_covidQA.json"
    if not path.exists():
        pytest.skip(f"COVID-QA data set not found at {path} (set RAGLOOM_DATA_DIR)")
    articles = [p for doc in json.loads(path.read_text())["data"] for p in doc["paragraphs"]]
    windows = [
        a["context"][i : i + CHUNK_CHARS]
        for a in articles
        for i in range(0, len(a["context"]), CHUNK_CHARS)
    ]
    picks = np.linspace(0, len(windows) - 1, NUM_CHUNKS).astype(int)  # spread over all articles
    questions = [qa["question"] for a in articles for qa in a["qas"]]
    ask = np.linspace(0, len(questions) - 1, NUM_QUERIES).astype(int)
    return [windows[i] for i in picks], [questions[i] for i in ask]


def _cached_embed(request: pytest.FixtureRequest, texts: list[str], tag: str) -> np.ndarray:
    """Embeddings of ``texts`` from the .npy cache; the model is loaded only on a miss."""
    from ragloom.retrievers.embeddings import DEFAULT_MODEL_NAME

    key = hashlib.sha256("\x00".join([DEFAULT_MODEL_NAME, *texts]).encode()).hexdigest()[:16]
    path = cache_dir("test-embeddings") / f"{tag}-{key}.npy"
    if path.exists():
        return np.load(path)
    embedder = request.getfixturevalue("minilm")
    assert embedder.model_name == DEFAULT_MODEL_NAME
    vectors = np.asarray(embedder.embed(texts), dtype=np.float32)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)
    return vectors


@pytest.fixture(scope="module")
def covid(request: pytest.FixtureRequest) -> dict[str, Any]:
    chunks, questions = _covid_texts()
    docs = _cached_embed(request, chunks, "covid-chunks")
    queries = _cached_embed(request, questions, "covid-questions")
    ids = [f"c{i}" for i in range(len(chunks))]
    flat = FaissStore(docs.shape[1])
    flat.add(ids, docs)
    return {"ids": ids, "docs": docs, "queries": queries, "exact": _top_ids(flat, queries)}


def _top_ids(store: Any, queries: np.ndarray) -> list[list[str]]:
    return [[h.chunk.id for h in hits] for hits in store.query(queries, k=K)]


def _recall(found: list[list[str]], exact: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact, strict=True)]))


def _store(covid: dict[str, Any], **kwargs: Any) -> FaissStore:
    store = FaissStore(covid["docs"].shape[1], **kwargs)
    store.add(covid["ids"], covid["docs"])
    return store


def test_flat_is_exact_brute_force(covid: dict[str, Any]) -> None:
    scores = covid["queries"] @ covid["docs"].T
    brute = [[covid["ids"][j] for j in np.argsort(-row)[:K]] for row in scores]
    assert _recall(covid["exact"], brute) >= 0.999  # float ties may swap the 10th place


def test_hnsw_recall_at_10_against_flat(covid: dict[str, Any]) -> None:
    recall = _recall(_top_ids(_store(covid, index="hnsw"), covid["queries"]), covid["exact"])
    assert recall >= 0.95, f"HNSW recall@10 = {recall:.3f}"


def test_ivf_recall_at_10_against_flat(covid: dict[str, Any]) -> None:
    store = _store(covid, index="ivf")  # nlist and nprobe chosen automatically
    assert store.is_trained
    recall = _recall(_top_ids(store, covid["queries"]), covid["exact"])
    assert recall >= 0.95, f"IVF recall@10 = {recall:.3f}"


def test_a_starved_ivf_misses_the_bar(covid: dict[str, Any]) -> None:
    """The threshold discriminates: probing one cell of ~44 loses many true neighbours."""
    recall = _recall(
        _top_ids(_store(covid, index="ivf", nprobe=1), covid["queries"]), covid["exact"]
    )
    assert recall < 0.9, f"IVF nprobe=1 recall@10 = {recall:.3f}"


def test_chroma_recall_at_10_against_flat(covid: dict[str, Any]) -> None:
    from ragloom.retrievers import ChromaStore

    store = ChromaStore(None, "ann-recall", dim=covid["docs"].shape[1])
    store.add(covid["ids"], covid["docs"])
    recall = _recall(_top_ids(store, covid["queries"]), covid["exact"])
    assert recall >= 0.95, f"Chroma recall@10 = {recall:.3f}"
