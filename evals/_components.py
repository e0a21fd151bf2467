"""Builds the retrieval pieces a sweep cell needs from :mod:`ragloom.retrievers` (private).

One place that maps sweep axis values ("faiss", "bm25", "hybrid", a chunking spec) to the
retrievers package's classes, so :mod:`ragloom.evals.pipeline` stays free of their
constructors. Heavy imports happen inside the functions.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Sequence
from typing import Any

from ragloom.evals._types import Passage
from ragloom.retrievers._types import Chunk, Embedder

__all__ = ["bm25_retriever", "chunk_corpus", "dense_retriever", "hybrid_retriever", "reranker"]


_HOMES = {
    "BM25Retriever": "ragloom.retrievers.bm25",
    "ChromaStore": "ragloom.retrievers.stores.chroma_store",
    "DenseRetriever": "ragloom.retrievers.dense",
    "FaissStore": "ragloom.retrievers.stores.faiss_store",
    "HybridRetriever": "ragloom.retrievers.hybrid",
    "LLMReranker": "ragloom.retrievers.rerank",
}


def _retrievers(name: str) -> Any:
    """A class of :mod:`ragloom.retrievers`, imported from its module on first use."""
    return getattr(importlib.import_module(_HOMES[name]), name)


def chunk_corpus(corpus: Sequence[Passage], spec: str, embedder: Embedder) -> list[Chunk]:
    """Split every passage with the chunker named by ``spec``."""
    from ragloom.retrievers.chunking import chunk_documents, make_chunker
    from ragloom.retrievers.loaders import Document

    docs = [Document(p.id, p.text, {"source": p.id, **({"title": p.title} if p.title else {})})
            for p in corpus]
    return chunk_documents(docs, make_chunker(spec, embedder=embedder))


def dense_retriever(store: str, chunks: list[Chunk], vectors: Any, embedder: Embedder) -> Any:
    """A dense retriever over a freshly built, in-memory ``"faiss"`` or ``"chroma"`` store."""
    ids = [c.id for c in chunks]
    metas = [c.metadata for c in chunks]
    docs = [c.text for c in chunks]
    if store == "faiss":
        built = _retrievers("FaissStore")(embedder.dim, embedder=embedder)
    else:
        # subtle: in-memory Chroma collections live as long as the process; a fresh name
        # per build keeps naive (unshared) rebuilds from reopening an earlier one
        built = _retrievers("ChromaStore")(None, f"sweep-{uuid.uuid4().hex}", embedder=embedder)
    built.add(ids, vectors, metas, docs)
    return _retrievers("DenseRetriever")(built, embedder)


def bm25_retriever(chunks: list[Chunk]) -> Any:
    """A BM25 retriever over the chunks."""
    return _retrievers("BM25Retriever")(chunks)


def hybrid_retriever(parts: list[Any]) -> Any:
    """Dense and BM25 fused."""
    return _retrievers("HybridRetriever")(parts)


def reranker(llm: Any) -> Any:
    """The LLM reranker."""
    return _retrievers("LLMReranker")(llm)
