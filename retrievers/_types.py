"""The small shared vocabulary of the retrievers: chunks, hits and the Embedder protocol.

Imports nothing heavy; numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["Chunk", "Embedder", "Hit", "Metadata"]

Metadata = dict[str, str | int | float | bool]


@dataclass(slots=True)
class Chunk:
    """A piece of a document, with where it came from.

    Attributes:
        id: stable id, unique within an index (for example ``"doc.md#3"``).
        text: the chunk's text.
        metadata: at least ``source`` (path or document id), ``start`` and ``end``
            (character offsets in the source); loaders and chunkers may add more.
    """

    id: str
    text: str
    metadata: Metadata = field(default_factory=dict)


@dataclass(slots=True)
class Hit:
    """One search result: the chunk, its score (higher is better) and rank (0-based)."""

    chunk: Chunk
    score: float
    rank: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into a float32 matrix of shape (len(texts), dim), rows L2-normalised."""

    model_name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed documents (batched)."""
        ...

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        """Embed one query: a vector of shape (dim,)."""
        ...
