"""ragloom.retrievers."""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it (imported on first use, so importing stays light).
_LAZY: dict[str, str] = {
    "FaissStore": "ragloom.retrievers.stores.faiss_store",
    "HashEmbedder": "ragloom.retrievers.base",
    "Retriever": "ragloom.retrievers.base",
    "VectorStore": "ragloom.retrievers.base",
    "matches_where": "ragloom.retrievers.base",
    "validate_where": "ragloom.retrievers.base",
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
    raise AttributeError(f"module 'ragloom.retrievers' has no attribute {name!r}")
