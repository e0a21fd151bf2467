"""Dense retrieval: embed the query, search a :class:`VectorStore`.

:class:`DenseRetriever` is the thin :class:`Retriever` over any store (Faiss, Chroma). It does
not index documents; fill the store with ``store.add`` (or the index builder) first.
"""

from __future__ import annotations

from typing import Any

from ragloom.errors import ConfigError
from ragloom.retrievers._types import Embedder, Hit
from ragloom.retrievers.base import VectorStore

__all__ = ["DenseRetriever"]


class DenseRetriever:
    """A :class:`Retriever` that embeds the query with ``embedder`` and searches ``store``.

    Args:
        store: any vector store holding vectors from the same embedding model.
        embedder: embeds queries; defaults to the store's own embedder.

    Example:
        >>> from ragloom.retrievers import FaissStore, HashEmbedder
        >>> embedder = HashEmbedder(64)
        >>> store = FaissStore(64)
        >>> texts = ["masks reduce spread", "vaccines train immunity"]
        >>> store.add(["a", "b"], embedder.embed(texts), documents=texts)
        >>> DenseRetriever(store, embedder).retrieve("masks", k=1)[0].chunk.id
        'a'
    """

    def __init__(self, store: VectorStore, embedder: Embedder | None = None) -> None:
        embedder = embedder or store.embedder
        if embedder is None:
            raise ConfigError("DenseRetriever needs an embedder (the store has none)")
        if embedder.dim != store.dim:
            raise ConfigError(
                f"embedding dimension mismatch: embedder {embedder.model_name!r} gives "
                f"{embedder.dim} dims, the store holds {store.dim}"
            )
        self.store = store
        self.embedder = embedder

    def retrieve(self, query: str, k: int = 5, where: dict[str, Any] | None = None) -> list[Hit]:
        """The ``k`` nearest chunks to ``query`` that satisfy ``where``."""
        return self.store.query(self.embedder.embed_query(query), k, where)[0]
