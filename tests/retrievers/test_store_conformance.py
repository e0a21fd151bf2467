"""One conformance suite that every store runs through a parametrized fixture.

Backends: Faiss flat / HNSW / IVF, Chroma, and BM25 (for the operations that apply to a
lexical index: everything except embedding dimensions). Vector stores are fed by the
deterministic :class:`HashEmbedder`, so the suite is fast and exact; approximate search quality
on real embeddings is tested in ``test_ann_recall.py``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragloom.errors import ConfigError, IndexCorruptError, RetrievalError
from ragloom.retrievers import BM25Retriever, HashEmbedder
from ragloom.retrievers._types import Chunk, Hit
from ragloom.retrievers.stores import _snapshot

DIM = 64
EMBEDDER = HashEmbedder(DIM)
TEXTS = {
    "a1": "masks reduce the spread of respiratory droplets note",
    "a2": "hand washing with soap removes the virus note",
    "a3": "the spike protein binds the ACE2 receptor note",
    "b1": "vaccines train the immune system to make antibodies note",
    "b2": "incubation period of coronavirus is about five days note",
    "b3": "bats are a likely reservoir of coronaviruses note",
    "c1": "ventilators support patients with severe pneumonia note",
    "c2": "social distancing flattens the epidemic curve note",
    "c3": "remdesivir is an antiviral drug tested in trials note",
}
CORPUS = [
    Chunk(i, t, {"source": f"{i[0]}.md", "year": 2019 + n % 3, "peer_reviewed": n % 2 == 0})
    for n, (i, t) in enumerate(TEXTS.items())
]


@dataclass
class Backend:
    """Uniform operations over one store kind, so every test runs against every store."""

    name: str
    make: Callable[[], Any]
    load: Callable[[Path], Any]
    index_file: str  # a file inside the snapshot generation, corrupted by the corruption tests
    is_vector: bool = True

    def add(self, store: Any, chunks: list[Chunk]) -> None:
        if self.is_vector:
            embeddings = EMBEDDER.embed([c.text for c in chunks])
            metas = [c.metadata for c in chunks]
            store.add([c.id for c in chunks], embeddings, metas, [c.text for c in chunks])
        else:
            store.add(chunks)

    def search(self, store: Any, text: str, k: int = 5, where: Any = None) -> list[Hit]:
        if self.is_vector:
            return store.query(EMBEDDER.embed_query(text), k, where)[0]
        return store.retrieve(text, k, where)


def _faiss(kind: str) -> Callable[[], Any]:
    def make() -> Any:
        from ragloom.retrievers import FaissStore

        if kind != "ivf":
            return FaissStore(DIM, index=kind, embedder=EMBEDDER)
        store = FaissStore(DIM, index="ivf", nlist=2, nprobe=2, embedder=EMBEDDER)
        store.train(EMBEDDER.embed([f"training sample {n} {t}" for n, t in enumerate(TEXTS)]))
        return store

    return make


def _faiss_load(path: Path) -> Any:
    from ragloom.retrievers import FaissStore

    return FaissStore.load(path, embedder=EMBEDDER)


def _chroma_make() -> Any:
    from ragloom.retrievers import ChromaStore

    return ChromaStore(None, f"conf-{np.random.randint(1 << 30)}", embedder=EMBEDDER)


def _chroma_load(path: Path) -> Any:
    from ragloom.retrievers import ChromaStore

    return ChromaStore.load(path)  # the one collection in the folder, embedder rebuilt


BACKENDS = {
    "faiss-flat": Backend("faiss-flat", _faiss("flat"), _faiss_load, "index.faiss"),
    "faiss-hnsw": Backend("faiss-hnsw", _faiss("hnsw"), _faiss_load, "index.faiss"),
    "faiss-ivf": Backend("faiss-ivf", _faiss("ivf"), _faiss_load, "index.faiss"),
    "chroma": Backend("chroma", _chroma_make, _chroma_load, "chroma.sqlite3"),
    "bm25": Backend(
        "bm25", BM25Retriever, BM25Retriever.load, "bm25/data.csc.index.npy", is_vector=False
    ),
}


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[request.param]


@pytest.fixture(params=[n for n, b in BACKENDS.items() if b.is_vector])
def vector_backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[request.param]


@pytest.fixture
def filled(backend: Backend) -> Any:
    store = backend.make()
    backend.add(store, CORPUS)
    return store


def _current(path: Path) -> Path:
    return path / (path / "CURRENT").read_text().strip()


def _ids(hits: list[Hit]) -> list[str]:
    return [h.chunk.id for h in hits]


def _scored(hits: list[Hit]) -> list[tuple[float, str]]:
    """Hits as (score, id) sorted best first, so ties may come back in any order."""
    return sorted((-round(h.score, 4), h.chunk.id) for h in hits)


def _tree_digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


# -- add / query ----------------------------------------------------------------------------


def test_add_then_query_ranks_the_matching_chunk_first(backend: Backend, filled: Any) -> None:
    assert len(filled) == len(CORPUS)
    hits = backend.search(filled, "spike protein ACE2 receptor", k=3)
    assert _ids(hits)[0] == "a3"
    assert [h.rank for h in hits] == list(range(len(hits)))
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert hits[0].chunk.text == TEXTS["a3"]
    assert hits[0].chunk.metadata == CORPUS[2].metadata


def test_k_larger_than_the_store_returns_each_chunk_once(backend: Backend, filled: Any) -> None:
    hits = backend.search(filled, "note", k=50)
    assert sorted(_ids(hits)) == sorted(TEXTS)


def test_an_empty_batch_is_a_no_op(backend: Backend, filled: Any) -> None:
    if backend.is_vector:
        filled.add([], [])
        assert filled.query_texts([], k=3) == []
    else:
        filled.add([])
    assert len(filled) == len(CORPUS)


def test_get_returns_chunks_in_the_order_asked(filled: Any) -> None:
    got = filled.get(["c2", "missing", "a1"])
    assert [(c.id, c.text) for c in got] == [("c2", TEXTS["c2"]), ("a1", TEXTS["a1"])]
    assert got[1].metadata == CORPUS[0].metadata


def test_empty_store_returns_no_hits(backend: Backend) -> None:
    store = backend.make()
    assert len(store) == 0
    assert backend.search(store, "masks", k=5) == []
    assert backend.search(store, "masks", k=5, where={"source": "a.md"}) == []
    if backend.is_vector:
        assert store.query(EMBEDDER.embed(["x", "y", "z"]), k=4) == [[], [], []]


# -- filters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    [
        {"source": "b.md"},
        {"source": {"$in": ["a.md", "c.md"]}},
        {"source": {"$ne": "a.md"}},
        {"source": {"$nin": ["a.md"]}, "year": 2020},
        {"peer_reviewed": True, "year": {"$in": [2019, 2021]}},
        {"source": "nowhere.md"},
    ],
)
def test_where_filters_return_exactly_the_matching_chunks(
    backend: Backend, filled: Any, where: dict[str, Any]
) -> None:
    from ragloom.retrievers import matches_where

    expected = sorted(c.id for c in CORPUS if matches_where(c.metadata, where))
    hits = backend.search(filled, "note virus", k=50, where=where)
    assert sorted(_ids(hits)) == expected
    top = backend.search(filled, "note virus", k=2, where=where)
    assert set(_ids(top)) <= set(expected) and len(top) == min(2, len(expected))


@pytest.mark.parametrize("where", [{"year": {"$gt": 3}}, {"$or": []}, {"year": [2019]}, "year"])
def test_malformed_where_is_a_config_error(backend: Backend, filled: Any, where: Any) -> None:
    with pytest.raises(ConfigError, match="where"):
        backend.search(filled, "note", where=where)


# -- delete / duplicates --------------------------------------------------------------------


def test_delete_removes_rows_and_ignores_unknown_ids(backend: Backend, filled: Any) -> None:
    filled.delete(["a3", "b1", "not-there"])
    assert len(filled) == len(CORPUS) - 2
    hits = backend.search(filled, "spike protein ACE2 receptor vaccines", k=50)
    assert not {"a3", "b1"} & set(_ids(hits))
    assert filled.get(["a3", "a2"])[0].id == "a2"
    filled.delete([])
    backend.add(filled, [CORPUS[2]])  # a deleted id can be added again
    assert _ids(backend.search(filled, "spike protein ACE2 receptor", k=1)) == ["a3"]


def test_duplicate_ids_are_refused_and_nothing_is_added(backend: Backend, filled: Any) -> None:
    with pytest.raises(ConfigError, match=r"duplicate ids: \['a1'\].*already stored"):
        backend.add(filled, [Chunk("new", "fresh text"), Chunk("a1", "again")])
    with pytest.raises(ConfigError, match=r"duplicate ids: \['z'\].*repeated"):
        backend.add(filled, [Chunk("z", "one"), Chunk("z", "two")])
    assert len(filled) == len(CORPUS)
    assert filled.get(["new", "z"]) == []


def test_upsert_replaces_a_row(vector_backend: Backend) -> None:
    store = vector_backend.make()
    vector_backend.add(store, CORPUS)
    store.upsert(["a1"], EMBEDDER.embed(["quarantine rules"]), [{"source": "q.md"}], ["q"])
    assert len(store) == len(CORPUS)
    assert store.get(["a1"])[0].metadata == {"source": "q.md"}
    assert _ids(vector_backend.search(store, "quarantine rules", k=1)) == ["a1"]


# -- dimensions -----------------------------------------------------------------------------


def test_wrong_embedding_dimension_is_a_clear_error(vector_backend: Backend) -> None:
    store = vector_backend.make()
    vector_backend.add(store, CORPUS[:3])
    wrong = np.ones((1, DIM + 1), np.float32)
    with pytest.raises(ConfigError, match=rf"{DIM}-dim.*got {DIM + 1}"):
        store.add(["x"], wrong)
    with pytest.raises(ConfigError, match=rf"{DIM}-dim.*got {DIM + 1}"):
        store.query(wrong, k=2)
    assert len(store) == 3


def test_mismatched_embedder_is_refused(vector_backend: Backend, tmp_path: Path) -> None:
    store = vector_backend.make()
    vector_backend.add(store, CORPUS[:2])
    store.save(tmp_path / "idx")
    loader = type(store).load
    with pytest.raises(ConfigError, match=rf"{DIM}.*{DIM * 2}|{DIM * 2}.*{DIM}"):
        loader(tmp_path / "idx", embedder=HashEmbedder(DIM * 2))


# -- persistence ----------------------------------------------------------------------------


def test_save_and_reload_round_trip(backend: Backend, filled: Any, tmp_path: Path) -> None:
    filled.delete(["c3"])
    queries = ["masks droplets", "immune antibodies", "epidemic curve"]
    before = [_scored(backend.search(filled, q, k=50)) for q in queries]
    filled.save(tmp_path / "idx")
    again = backend.load(tmp_path / "idx")
    assert len(again) == len(CORPUS) - 1
    assert [_scored(backend.search(again, q, k=50)) for q in queries] == before
    assert again.get(["b2"])[0].metadata == CORPUS[4].metadata
    backend.add(again, [CORPUS[-1]])  # the reloaded store keeps working and saves again
    again.save(tmp_path / "idx")
    assert len(backend.load(tmp_path / "idx")) == len(CORPUS)
    assert [p.name for p in (tmp_path / "idx").iterdir() if p.name.startswith("gen-")]


def test_loading_a_missing_path_is_a_retrieval_error(backend: Backend, tmp_path: Path) -> None:
    with pytest.raises(RetrievalError, match="no saved index"):
        backend.load(tmp_path / "nothing-here")


def test_save_refuses_a_folder_holding_other_files(filled: Any, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds other files"):
        filled.save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_index_file_is_a_clear_error_and_nothing_is_overwritten(
    backend: Backend, filled: Any, tmp_path: Path, damage: str
) -> None:
    root = tmp_path / "idx"
    filled.save(root)
    target = _current(root) / backend.index_file
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    else:
        target.write_bytes(b"\x00garbage" * 8 + data[64:])
    snapshot = _tree_digest(root)
    with pytest.raises(IndexCorruptError, match=backend.index_file.split("/")[-1]):
        backend.load(root)
    assert _tree_digest(root) == snapshot


def test_missing_current_pointer_is_a_clear_error(filled: Any, backend: Backend, tmp_path: Path):
    filled.save(tmp_path / "idx")
    (tmp_path / "idx" / "CURRENT").unlink()
    with pytest.raises((IndexCorruptError, RetrievalError), match="CURRENT|no saved index"):
        backend.load(tmp_path / "idx")


@pytest.mark.parametrize("crash_at", ["manifest", "commit"])
def test_a_crash_during_save_leaves_the_previous_index_readable(
    backend: Backend, filled: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: str
) -> None:
    root = tmp_path / "idx"
    filled.save(root)
    backend.add(filled, [Chunk("late", "a late chunk about masks note", {"source": "z.md"})])

    def crash(*args: Any, **kwargs: Any) -> None:
        raise OSError("simulated crash: disk full")

    # manifest: the store's files are written, the snapshot is not sealed yet;
    # commit: the new generation folder is in place, CURRENT is not switched yet.
    name = "_write_manifest" if crash_at == "manifest" else "_atomic_write_text"
    monkeypatch.setattr(_snapshot, name, crash)
    with pytest.raises(OSError, match="simulated crash"):
        filled.save(root)
    monkeypatch.undo()

    previous = backend.load(root)
    assert len(previous) == len(CORPUS)
    assert previous.get(["late"]) == []
    filled.save(root)  # the next save succeeds and cleans up the half-written generation
    assert len(backend.load(root)) == len(CORPUS) + 1
    assert len([p for p in root.iterdir() if p.name.startswith(("gen-", ".tmp"))]) == 1


def test_a_killed_process_mid_save_leaves_the_previous_index_readable(tmp_path: Path) -> None:
    """A real crash: the saving process dies (os._exit) after writing half its files."""
    from ragloom.retrievers import FaissStore

    store = BACKENDS["faiss-flat"].make()
    BACKENDS["faiss-flat"].add(store, CORPUS[:4])
    store.save(tmp_path / "idx")
    script = textwrap.dedent(
        f"""
        import os, numpy as np
        from ragloom.retrievers.stores import _snapshot
        from ragloom.retrievers import FaissStore
        store = FaissStore.load({str(tmp_path / "idx")!r})
        store.add(["x"], np.ones((1, {DIM}), np.float32))
        def die(*a, **k):
            os._exit(17)
        _snapshot._write_manifest = die
        store.save({str(tmp_path / "idx")!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 17, result.stderr
    assert any(p.name.startswith(".tmp-gen-") for p in (tmp_path / "idx").iterdir())
    assert len(FaissStore.load(tmp_path / "idx")) == 4


# -- store-specific behaviour ---------------------------------------------------------------


@pytest.fixture
def no_chroma_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if Chroma ever reaches for its default ONNX embedding model."""
    from chromadb.utils.embedding_functions import onnx_mini_lm_l6_v2 as onnx

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Chroma tried to use its default ONNX model")

    monkeypatch.setattr(onnx.ONNXMiniLM_L6_V2, "_download", refuse)
    monkeypatch.setattr(onnx.ONNXMiniLM_L6_V2, "__call__", refuse)


def test_chroma_collection_reopens_in_a_new_process(tmp_path: Path, no_chroma_download) -> None:
    from ragloom.retrievers import ChromaStore

    store = ChromaStore(tmp_path / "db", "reopen-test", embedder=EMBEDDER)
    BACKENDS["chroma"].add(store, CORPUS)
    expected = _ids(store.query_texts(["spike protein receptor"], k=2)[0])
    store.close()
    script = textwrap.dedent(
        f"""
        import chromadb
        from chromadb.config import Settings
        from chromadb.utils.embedding_functions import onnx_mini_lm_l6_v2 as onnx
        def refuse(*a, **k):
            raise SystemExit("default ONNX model used")
        onnx.ONNXMiniLM_L6_V2._download = refuse
        onnx.ONNXMiniLM_L6_V2.__call__ = refuse
        import ragloom.retrievers.stores.chroma_embedding  # registers the embedding function
        client = chromadb.PersistentClient({str(tmp_path / "db")!r},
                                           settings=Settings(anonymized_telemetry=False))
        col = client.get_collection("reopen-test")  # no embedding function passed
        print(col.query(query_texts=["spike protein receptor"], n_results=2)["ids"][0])
        from ragloom.retrievers import ChromaStore
        store = ChromaStore.load({str(tmp_path / "db")!r})
        print(type(store.embedder).__name__, store.embedder.dim)
        print([h.chunk.id for h in store.query_texts(["spike protein receptor"], k=2)[0]])
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines == [str(expected), f"HashEmbedder {DIM}", str(expected)]


def test_chroma_never_uses_its_default_model(tmp_path: Path, no_chroma_download) -> None:
    from ragloom.retrievers import ChromaStore

    store = ChromaStore(None, "vectors-only", dim=DIM)  # no embedder at all
    BACKENDS["chroma"].add(store, CORPUS)
    assert _ids(BACKENDS["chroma"].search(store, "spike protein ACE2", k=1)) == ["a3"]
    with pytest.raises(ConfigError, match="no embedder"):
        store.query_texts(["spike"])
    store.save(tmp_path / "snap")
    assert ChromaStore.load(tmp_path / "snap").embedder is None


def test_chroma_refuses_to_rebuild_an_embedder_from_outside_ragloom() -> None:
    from ragloom.retrievers.embeddings import rebuild_embedder

    with pytest.raises(ConfigError, match="only ragloom classes"):
        rebuild_embedder({"class": "os:system", "model_name": "x", "dim": 3, "config": {}})
    config = {"class": "ragloom.retrievers.base:HashEmbedder", "config": {"dim": 8}}
    assert rebuild_embedder({**config, "model_name": "ragloom-hash", "dim": 8}).dim == 8
    with pytest.raises(ConfigError, match="built with"):
        rebuild_embedder({**config, "model_name": "another-model", "dim": 8})


def test_chroma_load_asks_which_collection_when_several(tmp_path: Path) -> None:
    from ragloom.retrievers import ChromaStore

    for name in ("first", "second"):
        ChromaStore(tmp_path / "db", name, embedder=EMBEDDER).close()
    with pytest.raises(ConfigError, match="pass collection="):
        ChromaStore.load(tmp_path / "db")
    assert len(ChromaStore.load(tmp_path / "db", collection="second")) == 0


def test_ivf_trains_once_enough_vectors_arrive_and_searches_exactly_before() -> None:
    from ragloom.retrievers import FaissStore

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((100, 8)).astype(np.float32)
    store = FaissStore(8, index="ivf", nlist=2, nprobe=2)
    store.add([f"v{i}" for i in range(50)], vectors[:50])
    assert not store.is_trained  # 39 * nlist = 78 vectors needed
    assert _ids(store.query(vectors[7], k=1)[0]) == ["v7"]
    store.add([f"v{i}" for i in range(50, 100)], vectors[50:])
    assert store.is_trained and len(store) == 100
    assert _ids(store.query(vectors[77], k=1)[0]) == ["v77"]


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_faiss_metrics_score_best_first(metric: str) -> None:
    from ragloom.retrievers import FaissStore

    store = FaissStore(2, metric=metric)  # type: ignore[arg-type]
    store.add(["near", "far"], [[3.0, 0.1], [0.0, 5.0]])
    hits = store.query([1.0, 0.0], k=2)[0]
    assert _ids(hits) == ["near", "far"] and hits[0].score > hits[1].score
    if metric == "cosine":
        assert hits[0].score == pytest.approx(3.0 / np.hypot(3.0, 0.1), abs=1e-6)
    else:
        assert hits[0].score == pytest.approx(-(2.0**2 + 0.1**2), abs=1e-5)


@pytest.mark.parametrize(
    "kwargs", [{"index": "lsh"}, {"metric": "dot"}, {"dim": 0}, {"hnsw_m": 0}, {"nprobe": -1}]
)
def test_faiss_bad_settings_are_config_errors(kwargs: dict[str, Any]) -> None:
    from ragloom.retrievers import FaissStore

    with pytest.raises(ConfigError):
        FaissStore(**{"dim": 4, **kwargs})


def test_a_snapshot_of_another_kind_is_refused(filled: Any, backend: Backend, tmp_path: Path):
    filled.save(tmp_path / "idx")
    other = BACKENDS["bm25" if backend.is_vector else "faiss-flat"]
    with pytest.raises((IndexCorruptError, ConfigError), match="index, not|holds"):
        other.load(tmp_path / "idx")


def test_chroma_rebuilds_an_embedder_config_once(monkeypatch) -> None:
    """Chroma rebuilds the function from config on every collection; the model loads once."""
    from ragloom.retrievers.stores import chroma_embedding

    calls = []

    def counting(config):
        calls.append(config)
        return HashEmbedder(32)

    monkeypatch.setattr(chroma_embedding, "rebuild_embedder", counting)
    monkeypatch.setattr(chroma_embedding, "_REBUILT", {})
    config = {"class": "ragloom.retrievers.base:HashEmbedder", "config": {"dim": 32}}
    first = chroma_embedding.RagloomEmbeddingFunction.build_from_config(config)
    second = chroma_embedding.RagloomEmbeddingFunction.build_from_config(dict(config))
    assert len(calls) == 1
    assert first.embedder is second.embedder
