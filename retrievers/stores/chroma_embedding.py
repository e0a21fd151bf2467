"""ragloom's embedding function for Chroma, registered so a collection reopens by itself.

Chroma stores each collection's embedding-function config. :class:`RagloomEmbeddingFunction`
writes the ragloom embedder's class and settings there and is registered with
``@register_embedding_function``, so ``client.get_collection(name)`` in a new process rebuilds
the same embedder (once this module is imported) instead of reaching for Chroma's default ONNX
model, which would try to download. Only classes inside ``ragloom`` are rebuilt from disk.

This module does not store or search anything; see :mod:`.chroma_store`.
"""

from __future__ import annotations

import importlib
from typing import Any

from ragloom._lazy import require
from ragloom.errors import ConfigError
from ragloom.retrievers._types import Embedder

require("chromadb", "retrieval")
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings  # noqa: E402
from chromadb.utils.embedding_functions import register_embedding_function  # noqa: E402

__all__ = ["RagloomEmbeddingFunction", "rebuild_embedder"]


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
        cls = type(self.embedder)
        get = getattr(self.embedder, "get_config", None)
        return {
            "class": f"{cls.__module__}:{cls.__qualname__}",
            "model_name": self.embedder.model_name,
            "dim": self.embedder.dim,
            "config": get() if callable(get) else {},
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> RagloomEmbeddingFunction:
        return RagloomEmbeddingFunction(rebuild_embedder(config))


def rebuild_embedder(config: dict[str, Any]) -> Embedder:
    """Rebuild the embedder that :meth:`RagloomEmbeddingFunction.get_config` described.

    Raises:
        ConfigError: the class is outside ragloom, cannot be imported, or gives another dim.
    """
    module_name, _, qualname = str(config.get("class", "")).partition(":")
    if not module_name.startswith("ragloom.") or not qualname:
        raise ConfigError(
            f"cannot rebuild embedder {config.get('class')!r} from the collection's config: "
            "only ragloom classes are rebuilt; pass embedder= to open this collection"
        )
    try:
        cls: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        settings = dict(config.get("config") or {})
        embedder = cls.from_config(settings) if hasattr(cls, "from_config") else cls(**settings)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"cannot rebuild embedder {qualname} ({exc}); pass embedder= to open this collection"
        ) from exc
    expected = (config.get("model_name"), config.get("dim"))
    if (embedder.model_name, embedder.dim) != expected:
        raise ConfigError(
            f"rebuilt embedder is {embedder.model_name!r} ({embedder.dim} dims), the collection "
            f"was built with {expected[0]!r} ({expected[1]} dims); pass embedder= explicitly"
        )
    return embedder  # type: ignore[no-any-return]
