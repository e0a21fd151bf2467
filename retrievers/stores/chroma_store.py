"""A :class:`VectorStore` over an embedded Chroma database (``chromadb.PersistentClient``).

ragloom always embeds with its own :class:`Embedder` and hands Chroma the vectors, and it
registers :class:`RagloomEmbeddingFunction` with ``@register_embedding_function``: the collection
records which embedder built it, so it reopens in a new process, and Chroma never falls back to
downloading its default ONNX model. Telemetry is off. The space is cosine; a hit's score is the
cosine similarity (``1 - distance``).

Persistence: ``ChromaStore(path)`` is a live database; every write is durable at once.
:meth:`ChromaStore.save` copies the collection into an atomic snapshot folder (see
:mod:`._snapshot`) that :meth:`ChromaStore.load` or ``ChromaStore(that_folder)`` opens. Before
opening, the SQLite file is checked, so a corrupt database raises
:class:`~ragloom.errors.IndexCorruptError` instead of being silently recreated.

This module imports chromadb; :mod:`ragloom.retrievers.stores` loads it only on first use.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from ragloom._lazy import require
from ragloom.errors import ConfigError, IndexCorruptError, RagloomError, RetrievalError
from ragloom.retrievers._types import Chunk, Embedder, Hit, Metadata
from ragloom.retrievers.base import ArrayLike, VectorStore, as_matrix, check_batch, validate_where
from ragloom.retrievers.stores._snapshot import CURRENT, read_snapshot, write_snapshot
from ragloom.retrievers.stores.chroma_embedding import RagloomEmbeddingFunction

chromadb = require("chromadb", "retrieval")
from chromadb.config import Settings  # noqa: E402

__all__ = ["ChromaStore"]

_KIND = "chroma"
_DIM_KEY = "ragloom_dim"
_SQLITE = "chroma.sqlite3"


class ChromaStore(VectorStore):
    """Vectors, documents and metadata in an embedded Chroma collection (cosine space).

    Args:
        path: the database folder (or a snapshot folder written by :meth:`save`);
            ``None`` keeps everything in memory.
        collection: collection name (3-512 characters of ``[a-zA-Z0-9._-]``).
        embedder: embeds texts for :meth:`query_texts`; recorded in the collection so it can
            be rebuilt on reopen. Optional when reopening, or when ``dim`` is given.
        dim: embedding dimension (default: the embedder's, or the collection's on reopen).

    Example:
        >>> from ragloom.retrievers import HashEmbedder
        >>> store = ChromaStore(None, "demo", embedder=HashEmbedder(32))
        >>> e = store.embedder.embed(["red apple", "blue sky"])
        >>> store.add(["a", "b"], e, documents=["red apple", "blue sky"])
        >>> store.query_texts(["apple"], k=1)[0][0].chunk.id
        'a'
    """

    def __init__(
        self,
        path: str | Path | None = None,
        collection: str = "ragloom",
        *,
        embedder: Embedder | None = None,
        dim: int | None = None,
    ) -> None:
        self.path = None if path is None else Path(path)
        self._client = _open_client(self.path)
        ef = None if embedder is None else RagloomEmbeddingFunction(embedder)
        existing = {c.name for c in self._client.list_collections()}
        if collection in existing:
            self._collection = self._client.get_collection(collection, embedding_function=ef)
        else:
            self._collection = self._create(collection, ef, dim or (embedder and embedder.dim))
        self.dim = int((self._collection.metadata or {}).get(_DIM_KEY, 0))
        self.embedder = embedder or _persisted_embedder(self._collection)
        _check_dims(self.dim, embedder, dim)

    def _create(self, name: str, ef: RagloomEmbeddingFunction | None, dim: int | None) -> Any:
        if not dim:
            raise ConfigError(f"new Chroma collection {name!r}: pass embedder= or dim=")
        return self._client.create_collection(
            name,
            embedding_function=ef,
            configuration={"hnsw": {"space": "cosine"}},
            metadata={_DIM_KEY: int(dim)},
        )

    def __len__(self) -> int:
        return int(self._collection.count())

    def add(
        self,
        ids: Sequence[str],
        embeddings: ArrayLike,
        metadatas: Sequence[Metadata] | None = None,
        documents: Sequence[str] | None = None,
    ) -> None:
        """Add rows; raises ConfigError on duplicate ids or a wrong embedding dimension."""
        matrix = as_matrix(embeddings, self.dim)
        unique = [i for i in dict.fromkeys(ids) if isinstance(i, str) and i]
        stored = set(self._collection.get(ids=unique, include=[])["ids"]) if unique else set()
        metas, docs = check_batch(ids, len(matrix), metadatas, documents, stored)
        step = self._client.get_max_batch_size()
        for start in range(0, len(ids), step):
            end = start + step
            self._collection.add(
                ids=list(ids[start:end]),
                embeddings=matrix[start:end],
                metadatas=[m or None for m in metas[start:end]],  # type: ignore[misc]
                documents=docs[start:end],
            )

    def query(
        self, embeddings: ArrayLike, k: int = 5, where: dict[str, Any] | None = None
    ) -> list[list[Hit]]:
        """The ``k`` nearest rows for each query row, filtered by ``where``."""
        validate_where(where)
        matrix = as_matrix(embeddings, self.dim)
        limit = min(k, len(self))
        if limit <= 0:
            return [[] for _ in range(len(matrix))]
        result = self._collection.query(
            query_embeddings=matrix,
            n_results=limit,
            where=to_chroma_where(where),
            include=["distances", "metadatas", "documents"],
        )
        return [_hits(result, row) for row in range(len(matrix))]

    def delete(self, ids: Sequence[str]) -> None:
        """Remove rows by id; unknown ids are ignored."""
        if len(ids):
            self._collection.delete(ids=list(ids))

    def get(self, ids: Sequence[str]) -> list[Chunk]:
        """Stored chunks for ``ids``, in order; missing ids are skipped."""
        if not len(ids):
            return []
        got = self._collection.get(ids=list(ids), include=["metadatas", "documents"])
        rows = zip(got["ids"], got["documents"] or [], got["metadatas"] or [], strict=True)
        by_id = {i: Chunk(i, doc or "", dict(meta or {})) for i, doc, meta in rows}
        return [by_id[i] for i in ids if i in by_id]

    def save(self, path: str | Path) -> None:
        """Copy the collection into a snapshot at ``path`` (a no-op for the store's own path)."""
        if self.path is not None and _same_folder(self.path, Path(path)):
            return  # subtle: a live Chroma database is already durable
        write_snapshot(path, self._export, kind=_KIND, checksums=False)

    @classmethod
    def load(
        cls, path: str | Path, *, embedder: Embedder | None = None, collection: str | None = None
    ) -> Self:
        """Open a database or snapshot folder; the embedder is rebuilt when not given.

        Args:
            path: a folder written by :meth:`save`, or a Chroma database folder.
            embedder: optional; by default rebuilt from the collection's config.
            collection: optional when the database holds exactly one collection.

        Raises:
            RetrievalError: nothing is saved at ``path``.
            IndexCorruptError: the snapshot pointer or the SQLite file is damaged.
        """
        path = Path(path)
        if not (path / CURRENT).exists() and not (path / _SQLITE).exists():
            if path.is_dir() and any(path.iterdir()):
                raise IndexCorruptError(f"{path / CURRENT} and {path / _SQLITE} are missing")
            raise RetrievalError(f"no saved index at {path}")
        if collection is None:
            collection = _only_collection(path)
        return cls(path, collection, embedder=embedder)

    def close(self) -> None:
        """Release the database files (the store is unusable afterwards)."""
        self._client.close()

    def _export(self, folder: Path) -> None:
        target = ChromaStore(folder, self._collection.name, embedder=self.embedder, dim=self.dim)
        try:
            step, offset = self._client.get_max_batch_size(), 0
            while True:
                got = self._collection.get(
                    include=["embeddings", "metadatas", "documents"], limit=step, offset=offset
                )
                if not got["ids"]:
                    break
                metas = [dict(m or {}) for m in got["metadatas"] or []]
                target.add(got["ids"], np.asarray(got["embeddings"]), metas, got["documents"])
                offset += len(got["ids"])
        finally:
            target.close()


def to_chroma_where(where: dict[str, Any] | None) -> dict[str, Any] | None:
    """Translate a ragloom ``where`` into Chroma's syntax (several keys become ``$and``).

    >>> to_chroma_where({"a": 1, "b": {"$in": [2, 3]}})
    {'$and': [{'a': {'$eq': 1}}, {'b': {'$in': [2, 3]}}]}
    """
    if not where:
        return None
    clauses = [{k: v if isinstance(v, dict) else {"$eq": v}} for k, v in where.items()]
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _open_client(path: Path | None) -> Any:
    settings = Settings(anonymized_telemetry=False)
    if path is None:
        return chromadb.EphemeralClient(settings=settings)
    folder = read_snapshot(path, kind=_KIND) if (path / CURRENT).exists() else path
    _check_sqlite(folder / _SQLITE)
    return chromadb.PersistentClient(str(folder), settings=settings)


def _check_sqlite(path: Path) -> None:
    """Refuse a damaged database file (read-only check; Chroma would recreate an empty one)."""
    if not path.exists():
        return
    with path.open("rb") as f:
        header = f.read(16)
    if header != b"SQLite format 3\x00":
        raise IndexCorruptError(f"{path} is not a SQLite database (truncated or overwritten)")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise IndexCorruptError(f"{path} cannot be read: {exc}; nothing was overwritten") from exc
    if verdict != "ok":
        raise IndexCorruptError(f"{path} failed SQLite's integrity check: {verdict}")


def _only_collection(path: Path) -> str:
    client = _open_client(path)
    try:
        names = [c.name for c in client.list_collections()]
    finally:
        client.close()
    if len(names) != 1:
        raise ConfigError(f"{path} holds collections {names}: pass collection= to choose one")
    return str(names[0])


def _persisted_embedder(collection: Any) -> Embedder | None:
    try:
        ef = (collection.configuration or {}).get("embedding_function")
    except (RagloomError, ValueError):
        return None  # subtle: query() with vectors still works; query_texts() says what to do
    return ef.embedder if isinstance(ef, RagloomEmbeddingFunction) else None


def _check_dims(stored: int, embedder: Embedder | None, dim: int | None) -> None:
    for name, value in (("embedder", embedder and embedder.dim), ("dim", dim)):
        if value and stored and value != stored:
            raise ConfigError(
                f"embedding dimension mismatch: the collection holds {stored}-dim vectors, "
                f"{name} gives {value}"
            )


def _same_folder(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def _hits(result: dict[str, Any], row: int) -> list[Hit]:
    ids, dists = result["ids"][row], result["distances"][row]
    docs, metas = result["documents"][row], result["metadatas"][row]
    return [
        Hit(Chunk(i, doc or "", dict(meta or {})), 1.0 - float(dist), rank)
        for rank, (i, dist, doc, meta) in enumerate(zip(ids, dists, docs, metas, strict=True))
    ]
