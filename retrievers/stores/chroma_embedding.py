"""ragloom's embedding function for Chroma, registered so a collection reopens by itself.

Chroma stores each collection's embedding-function config. :class:`RagloomEmbeddingFunction`
writes the ragloom embedder's class and settings there and is registered with
``@register_embedding_function``, so ``client.get_collection(name)`` in a new process rebuilds
the same embedder (once this module is imported) instead of reaching for Chroma's default ONNX
model, which would try to download. Only classes inside ``ragloom`` are rebuilt from disk.

This module does not store or search anything; see :mod:`.chroma_store`.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from ragloom._lazy import require
from ragloom.retrievers._types import Embedder
from ragloom.retrievers.embeddings import describe_embedder, rebuild_embedder

require("chromadb", "retrieval")
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings  # noqa: E402
from chromadb.utils.embedding_functions import register_embedding_function  # noqa: E402

__all__ = ["RagloomEmbeddingFunction"]

# Chroma rebuilds the embedding function from its config whenever a collection is created or
# opened; without this memo every ChromaStore would load the embedding model again.
_REBUILT: dict[str, Embedder] = {}
_REBUILT_LOCK = threading.Lock()


@register_embedding_function
class RagloomEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma's view of a ragloom :class:`Embedder`; Chroma rebuilds it from its config.

    The config names the embedder's class and, when it has ``get_config()``, its settings;
    rebuilding calls ``from_config(settings)`` (or the class with them as keyword arguments).
    Only classes inside ``ragloom`` are rebuilt from disk; pass ``embedder=`` for others.
    """

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def __call__(self, input: Documents) -> Embeddings:
        return list(self.embedder.embed(list(input)))

    def embed_query(self, input: Documents) -> Embeddings:
        return [self.embedder.embed_query(text) for text in input]

    @staticmethod
    def name() -> str:
        return "ragloom"

    def default_space(self) -> str:  # type: ignore[override]
        return "cosine"

    def get_config(self) -> dict[str, Any]:
        return describe_embedder(self.embedder)

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> RagloomEmbeddingFunction:
        key = json.dumps(config, sort_keys=True, default=str)
        with _REBUILT_LOCK:
            if key not in _REBUILT:
                _REBUILT[key] = rebuild_embedder(config)
            return RagloomEmbeddingFunction(_REBUILT[key])
