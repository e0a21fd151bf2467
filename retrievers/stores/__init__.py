"""ragloom.retrievers.stores: :class:`VectorStore` implementations (Faiss, Chroma).

Each store imports its backend only when constructed, so importing this package stays light.
"""

from __future__ import annotations

from ragloom._lazy import lazy_getattr

# public name -> module that defines it (imported on first use, so importing stays light).
_LAZY: dict[str, str] = {
    "ChromaStore": "ragloom.retrievers.stores.chroma_store",
    "FaissStore": "ragloom.retrievers.stores.faiss_store",
    "RagloomEmbeddingFunction": "ragloom.retrievers.stores.chroma_embedding",
}

__all__ = sorted(
    [
        *_LAZY,
    ]
)


__getattr__ = lazy_getattr(__name__, _LAZY)
