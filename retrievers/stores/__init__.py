"""ragloom.retrievers.stores: :class:`VectorStore` implementations (Faiss, Chroma).

Each store imports its backend only when constructed, so importing this package stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ragloom.retrievers.stores' has no attribute {name!r}")
