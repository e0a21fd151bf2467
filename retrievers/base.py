"""The two retrieval interfaces: :class:`Retriever` (text in, hits out) and :class:`VectorStore`.

A ``VectorStore`` holds vectors with ids, metadata and documents behind columnar batch calls
(``add(ids, embeddings, metadatas, documents)``, ``query(embeddings, k, where)``), like Chroma
and Faiss. Implementations live in :mod:`ragloom.retrievers.stores`; each one runs through the
same conformance suite (``tests/retrievers/test_store_conformance.py``).

Metadata filters (``where``) are shared by every store and by BM25::

    {"source": "a.md"}                           # equality
    {"source": {"$in": ["a.md", "b.md"]}}        # membership
    {"lang": {"$ne": "de"}, "year": 2020}        # several keys: all must hold

This module also holds :class:`HashEmbedder`, a deterministic bag-of-words fake of the
``Embedder`` protocol for tests and offline demos. It does not load models or touch disk.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

from ragloom.errors import ConfigError
from ragloom.retrievers._types import Chunk, Embedder, Hit, Metadata

__all__ = ["HashEmbedder", "Retriever", "VectorStore", "matches_where", "validate_where"]

ArrayLike = npt.ArrayLike
_OPERATORS = frozenset({"$eq", "$ne", "$in", "$nin"})
_SCALARS = (str, int, float, bool)


@runtime_checkable
class Retriever(Protocol):
    """Anything that turns a query into ranked hits (dense, BM25, hybrid, a reranked pipeline)."""

    def retrieve(self, query: str, k: int = 5, where: dict[str, Any] | None = None) -> list[Hit]:
        """Return at most ``k`` hits, best first, whose metadata satisfy ``where``."""
        ...


def validate_where(where: dict[str, Any] | None) -> None:
    """Check a metadata filter, raising :class:`ConfigError` that names the bad part.

    >>> validate_where({"source": {"$in": ["a", "b"]}, "year": 2020})
    """
    if where is None:
        return
    if not isinstance(where, dict):
        raise ConfigError(f"where must be a dict of metadata filters, got {type(where).__name__}")
    for key, cond in where.items():
        if not isinstance(key, str) or key.startswith("$"):
            raise ConfigError(f"where key {key!r}: expected a metadata field name")
        if not isinstance(cond, dict):
            _check_scalar(key, cond)
            continue
        if len(cond) != 1 or next(iter(cond)) not in _OPERATORS:
            raise ConfigError(f"where[{key!r}] = {cond!r}: use one of {sorted(_OPERATORS)}")
        op, value = next(iter(cond.items()))
        values = value if op in ("$in", "$nin") else [value]
        if op in ("$in", "$nin") and not isinstance(value, list | tuple):
            raise ConfigError(f"where[{key!r}][{op!r}] must be a list, got {value!r}")
        for item in values:
            _check_scalar(key, item)


def _check_scalar(key: str, value: Any) -> None:
    if not isinstance(value, _SCALARS):
        raise ConfigError(f"where[{key!r}]: {value!r} is not a str, int, float or bool")


def matches_where(metadata: Metadata, where: dict[str, Any] | None) -> bool:
    """True when ``metadata`` satisfies every condition of ``where`` (a missing key fails).

    >>> matches_where({"source": "a", "year": 2020}, {"source": {"$in": ["a", "b"]}})
    True
    >>> matches_where({"source": "a"}, {"year": {"$ne": 2020}})
    False
    """
    for key, cond in (where or {}).items():
        if key not in metadata:
            return False
        op, target = next(iter(cond.items())) if isinstance(cond, dict) else ("$eq", cond)
        if not _holds(op, metadata[key], target):
            return False
    return True


def _holds(op: str, value: Any, target: Any) -> bool:
    if op == "$eq":
        return bool(value == target)
    if op == "$ne":
        return bool(value != target)
    if op == "$in":
        return value in target
    return value not in target  # $nin


class VectorStore(ABC):
    """Vectors with string ids, metadata and documents; exact or approximate k-NN search.

    Subclasses implement the columnar batch calls. ``add`` refuses ids that are already stored
    (or repeated within the batch); :meth:`upsert` replaces them instead.

    Attributes:
        dim: the embedding dimension every row must have.
        embedder: optional; needed by :meth:`query_texts` and by stores that embed documents.
    """

    dim: int
    embedder: Embedder | None = None

    @abstractmethod
    def add(
        self,
        ids: Sequence[str],
        embeddings: ArrayLike,
        metadatas: Sequence[Metadata] | None = None,
        documents: Sequence[str] | None = None,
    ) -> None:
        """Store one row per id. Raises ConfigError on duplicate ids or a wrong dimension."""

    @abstractmethod
    def query(
        self, embeddings: ArrayLike, k: int = 5, where: dict[str, Any] | None = None
    ) -> list[list[Hit]]:
        """The ``k`` nearest rows for each query row (one list per row; ``[]`` when empty)."""

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> None:
        """Remove rows by id; ids that are not stored are ignored."""

    @abstractmethod
    def get(self, ids: Sequence[str]) -> list[Chunk]:
        """The stored chunks for ``ids`` in the order asked; missing ids are skipped."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of stored rows."""

    @abstractmethod
    def save(self, path: str | Path) -> None:
        """Write a snapshot to ``path`` atomically (the previous snapshot survives a crash)."""

    @classmethod
    @abstractmethod
    def load(cls, path: str | Path, *, embedder: Embedder | None = None) -> Self:
        """Open a snapshot; raises IndexCorruptError naming the file when it cannot be read."""

    def upsert(
        self,
        ids: Sequence[str],
        embeddings: ArrayLike,
        metadatas: Sequence[Metadata] | None = None,
        documents: Sequence[str] | None = None,
    ) -> None:
        """Like :meth:`add`, but rows whose id is already stored are replaced."""
        self.delete(ids)
        self.add(ids, embeddings, metadatas, documents)

    def query_texts(
        self, texts: Sequence[str], k: int = 5, where: dict[str, Any] | None = None
    ) -> list[list[Hit]]:
        """Embed ``texts`` with the store's embedder (``embed_query``), then :meth:`query`."""
        if self.embedder is None:
            raise ConfigError(
                f"{type(self).__name__} has no embedder: pass embedder= when creating it, "
                "or call query() with embeddings"
            )
        if isinstance(texts, str):
            raise ConfigError("query_texts takes a list of texts, not one string")
        if not texts:
            return []
        return self.query(np.stack([self.embedder.embed_query(t) for t in texts]), k, where)


def as_matrix(embeddings: ArrayLike, dim: int) -> npt.NDArray[np.float32]:
    """A C-contiguous float32 matrix of shape (n, dim); a 1-D vector becomes one row.

    Raises:
        ConfigError: the rows do not have ``dim`` columns (names both dimensions).
    """
    matrix = np.asarray(embeddings, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix.reshape(0, dim) if matrix.size == 0 else matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        got = matrix.shape[-1] if matrix.ndim else "a scalar"
        raise ConfigError(
            f"embedding dimension mismatch: the store holds {dim}-dim vectors, got {got} "
            f"(shape {matrix.shape}); embed with the model the index was built with"
        )
    if not np.isfinite(matrix).all():
        raise ConfigError("embeddings contain NaN or infinity")
    return np.ascontiguousarray(matrix)


def check_batch(
    ids: Sequence[str],
    num_rows: int,
    metadatas: Sequence[Metadata] | None,
    documents: Sequence[str] | None,
    stored: Collection[str],
) -> tuple[list[Metadata], list[str]]:
    """Validate one ``add`` batch; return metadatas and documents filled with defaults.

    Raises:
        ConfigError: lengths differ, an id repeats or is already stored, or a metadata value
            is not a str, int, float or bool.
    """
    if isinstance(ids, str):
        raise ConfigError("ids must be a sequence of strings, not one string")
    n = len(ids)
    metas = [dict(m) for m in metadatas] if metadatas is not None else [{} for _ in ids]
    docs = list(documents) if documents is not None else ["" for _ in ids]
    if not n == num_rows == len(metas) == len(docs):
        raise ConfigError(
            f"batch lengths differ: {n} ids, {num_rows} embeddings, "
            f"{len(metas)} metadatas, {len(docs)} documents"
        )
    bad = [i for i in ids if not isinstance(i, str) or not i]
    if bad:
        raise ConfigError(f"ids must be non-empty strings, got {bad[:5]!r}")
    counts = Counter(ids)
    repeated = sorted(i for i, count in counts.items() if count > 1)
    taken = sorted(i for i in counts if i in stored)
    if repeated or taken:
        raise ConfigError(
            f"duplicate ids: {(repeated + taken)[:5]} "
            f"({'repeated in the batch' if repeated else 'already stored'}); "
            "use upsert() to replace rows"
        )
    for row_id, meta in zip(ids, metas, strict=True):
        for key, value in meta.items():
            if not isinstance(key, str) or not isinstance(value, _SCALARS):
                raise ConfigError(
                    f"metadata of {row_id!r}: {key!r}={value!r} is not str -> str|int|float|bool"
                )
    return metas, docs


class HashEmbedder:
    """A deterministic, dependency-free fake :class:`Embedder`: hashed bag of words.

    Texts that share words get similar vectors, so small retrieval tests behave sensibly.
    It is stable across processes (blake2b, not Python's salted ``hash``).

    >>> e = HashEmbedder(dim=64)
    >>> e.embed(["covid spike protein"]).shape
    (1, 64)
    """

    model_name = "ragloom-hash"

    def __init__(self, dim: int = 256) -> None:
        if dim < 2:
            raise ConfigError(f"HashEmbedder dim must be >= 2, got {dim}")
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed texts: rows are L2-normalised signed word-hash counts."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                digest = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest())
                out[row, digest % self.dim] += 1.0 if digest >> 63 else -1.0
            if not out[row].any():
                out[row, 0] = 1.0  # subtle: an empty text still needs a unit vector
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        """Embed one query: a vector of shape (dim,)."""
        return self.embed([text])[0]

    def get_config(self) -> dict[str, Any]:
        """What :meth:`from_config` needs to rebuild this embedder (e.g. in a new process)."""
        return {"dim": self.dim}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HashEmbedder:
        """Rebuild from :meth:`get_config`'s output."""
        return cls(dim=int(config["dim"]))
