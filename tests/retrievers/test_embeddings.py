"""Embedders: the real MiniLM model, and the on-disk cache (a second run computes nothing)."""

from __future__ import annotations

import numpy as np
import pytest

from ragloom.errors import ConfigError, ModelError
from ragloom.retrievers._types import Embedder
from ragloom.retrievers.embeddings import CachedEmbedder, SentenceTransformerEmbedder


class CountingEmbedder:
    """Wraps an embedder and records every batch it is asked to compute."""

    def __init__(self, inner):
        self.inner = inner
        self.model_name = inner.model_name
        self.dim = inner.dim
        self.batches = []

    def embed(self, texts):
        self.batches.append(list(texts))
        return self.inner.embed(texts)

    def embed_query(self, text):
        self.batches.append([text])
        return self.inner.embed_query(text)


def test_minilm_embeds_normalised_and_ranks_sensibly(minilm):
    assert isinstance(minilm, Embedder)
    assert minilm.dim == 384 and minilm.model_name == "sentence-transformers/all-MiniLM-L6-v2"
    docs = ["Masks reduce virus transmission.", "Bananas are rich in potassium."]
    m = minilm.embed(docs)
    assert m.shape == (2, 384) and m.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-5)
    q = minilm.embed_query("do face coverings stop infections")
    assert q.shape == (384,) and float(m[0] @ q) > float(m[1] @ q)
    assert minilm.embed([]).shape == (0, 384)


def test_cache_second_run_computes_nothing(minilm, tmp_path):
    texts = ["alpha beta", "gamma delta", "alpha beta", "epsilon"]
    counting = CountingEmbedder(minilm)
    first = CachedEmbedder(counting, tmp_path / "cache.sqlite")
    a = first.embed(texts)
    assert counting.batches == [["alpha beta", "gamma delta", "epsilon"]]  # duplicates once
    assert (first.hits, first.misses) == (0, 4)
    first.close()

    again = CountingEmbedder(minilm)
    second = CachedEmbedder(again, tmp_path / "cache.sqlite")  # a new process would do this
    b = second.embed(texts)
    assert again.batches == [] and (second.hits, second.misses) == (4, 0)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, minilm.embed(texts), atol=1e-6)

    second.embed(["epsilon", "zeta"])  # only the miss is computed
    assert again.batches == [["zeta"]]
    q1 = second.embed_query("a question")
    q2 = second.embed_query("a question")
    assert again.batches[-1] == ["a question"] and len(again.batches) == 2
    np.testing.assert_array_equal(q1, q2)


def test_cache_is_keyed_by_model_name(minilm, tmp_path):
    counting = CountingEmbedder(minilm)
    CachedEmbedder(counting, tmp_path / "c.sqlite").embed(["same text"])
    counting.model_name = "another-model"
    CachedEmbedder(counting, tmp_path / "c.sqlite").embed(["same text"])
    assert counting.batches == [["same text"], ["same text"]]


def test_bad_configuration_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="backend"):
        SentenceTransformerEmbedder(backend="tensorflow")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="quantize"):
        SentenceTransformerEmbedder(quantize="int8")
    with pytest.raises(ModelError, match="no sentence-transformers model"):
        SentenceTransformerEmbedder(tmp_path / "missing")


def test_max_seq_length_changes_the_cache_name():
    emb = SentenceTransformerEmbedder(max_seq_length=128)
    assert emb.max_seq_length == 128 and emb.model_name.endswith("+seq128")


@pytest.fixture(scope="module")
def onnx_minilm():
    return SentenceTransformerEmbedder(backend="onnx")


LONG = " ".join(f"word{i} about masks and viruses" for i in range(120))  # > 256 tokens


def test_onnx_backend_matches_torch(minilm, onnx_minilm):
    texts = ["Masks reduce virus transmission.", LONG, "x"]
    np.testing.assert_allclose(onnx_minilm.embed(texts), minilm.embed(texts), atol=1e-5)
    assert onnx_minilm.model_name == minilm.model_name  # same vectors, same cache entries
    assert (onnx_minilm.dim, onnx_minilm.max_seq_length) == (384, 256)


def test_onnx_int8_is_close_and_named_apart(minilm):
    int8 = SentenceTransformerEmbedder(backend="onnx", quantize="int8")
    texts = ["Masks reduce virus transmission.", LONG]
    cosine = np.sum(int8.embed(texts) * minilm.embed(texts), axis=1)
    assert cosine.min() > 0.9
    assert int8.model_name.endswith("+int8")


def test_onnx_embedder_does_not_import_torch(onnx_minilm):
    import subprocess
    import sys

    code = (
        "import sys; from ragloom.retrievers.embeddings import SentenceTransformerEmbedder as E;"
        "e = E(backend='onnx'); e.embed(['hi']);"
        "print(sorted(m for m in ('torch', 'sentence_transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
