"""A :class:`VectorStore` over Faiss: flat (exact), HNSW and IVF indexes.

String ids map to int64 labels through ``IndexIDMap2``; documents and metadata live beside the
index in a Python dict (saved as JSON next to ``index.faiss``). Metadata filters become a Faiss
``IDSelectorBatch`` passed in the search parameters, so filtering happens inside the search.

Index notes:

- ``flat``: exact search; the reference the approximate ones are tested against.
- ``hnsw``: Faiss HNSW graphs cannot remove nodes, so :meth:`FaissStore.delete` rebuilds the
  graph from the stored vectors (O(n)); batch your deletes.
- ``ivf``: needs training. Until enough vectors arrive (``39 * nlist``, or 1024 when ``nlist``
  is chosen automatically) rows wait in an exact flat index; then the IVF is trained on them.
  Call :meth:`FaissStore.train` to train earlier on a sample of your own.

Saving goes through :mod:`._snapshot` (atomic, checksummed). This module does not embed text;
give it an ``embedder`` only if you want :meth:`query_texts`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from ragloom._lazy import require
from ragloom.errors import ConfigError, IndexCorruptError
from ragloom.retrievers._types import Chunk, Embedder, Hit, Metadata
from ragloom.retrievers.base import (
    ArrayLike,
    VectorStore,
    as_matrix,
    check_batch,
    matches_where,
    validate_where,
)
from ragloom.retrievers.stores._faiss_index import (
    FaissSpec,
    IndexKind,
    Metric,
    auto_nlist,
    new_index,
    search_params,
)
from ragloom.retrievers.stores._snapshot import read_snapshot, write_snapshot

__all__ = ["FaissStore"]

_KIND = "faiss"


class FaissStore(VectorStore):
    """Vectors in a Faiss index, with ids, documents and metadata kept beside it.

    Args:
        dim: embedding dimension.
        index: ``"flat"`` (exact), ``"hnsw"`` or ``"ivf"``.
        metric: ``"ip"`` (inner product; cosine for normalised embeddings), ``"cosine"``
            (normalises rows for you) or ``"l2"`` (score is the negated squared distance).
        hnsw_m: HNSW graph degree. ef_search: HNSW search breadth (raised to ``k`` if lower).
        nlist: IVF cells (default: ~sqrt(n) at training). nprobe: cells searched
            (default: a third of ``nlist``).
        embedder: optional, for :meth:`query_texts`.

    Example:
        >>> store = FaissStore(3)
        >>> store.add(["a", "b"], [[1, 0, 0], [0, 1, 0]], documents=["x", "y"])
        >>> [h.chunk.id for h in store.query([1, 0.1, 0], k=1)[0]]
        ['a']
    """

    def __init__(
        self,
        dim: int,
        *,
        index: IndexKind = "flat",
        metric: Metric = "ip",
        hnsw_m: int = 32,
        ef_search: int = 64,
        nlist: int | None = None,
        nprobe: int | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self._spec = FaissSpec(
            dim=dim, index=index, metric=metric, hnsw_m=hnsw_m,
            ef_search=ef_search, nlist=nlist, nprobe=nprobe,
        )  # fmt: skip
        if embedder is not None and embedder.dim != dim:
            raise ConfigError(
                f"embedder {embedder.model_name!r} gives {embedder.dim} dims, the store {dim}"
            )
        self.dim = dim
        self.embedder = embedder
        self._faiss = require("faiss", "retrieval")
        self._lock = threading.RLock()
        self._records: dict[int, tuple[str, str, Metadata]] = {}  # label -> (id, text, meta)
        self._labels: dict[str, int] = {}
        self._next_label = 0
        self._trained = index != "ivf"
        self._index = new_index(self._faiss, self._spec, trained=self._trained)

    @property
    def is_trained(self) -> bool:
        """False while an IVF store still waits for enough vectors to train on."""
        return self._trained

    def __len__(self) -> int:
        return len(self._records)

    # -- writes -----------------------------------------------------------------------------

    def add(
        self,
        ids: Sequence[str],
        embeddings: ArrayLike,
        metadatas: Sequence[Metadata] | None = None,
        documents: Sequence[str] | None = None,
    ) -> None:
        """Add rows; raises ConfigError on duplicate ids or a wrong embedding dimension."""
        matrix = self._prepare(embeddings)
        with self._lock:
            metas, docs = check_batch(ids, len(matrix), metadatas, documents, self._labels)
            labels = np.arange(self._next_label, self._next_label + len(ids), dtype=np.int64)
            self._index.add_with_ids(matrix, labels)
            self._next_label += len(ids)
            for label, row_id, doc, meta in zip(labels.tolist(), ids, docs, metas, strict=True):
                self._records[label] = (row_id, doc, meta)
                self._labels[row_id] = label
            if not self._trained and len(self) >= self._spec.train_size:
                self._train_from(self._stored_vectors())

    def train(self, sample: ArrayLike | None = None) -> None:
        """Train an IVF store now, on ``sample`` or on the rows already stored."""
        if self._spec.index != "ivf":
            return
        with self._lock:
            vectors = self._stored_vectors() if sample is None else self._prepare(sample)
            if len(vectors) == 0:
                raise ConfigError("cannot train an IVF index on zero vectors")
            self._train_from(vectors)

    def delete(self, ids: Sequence[str]) -> None:
        """Remove rows by id (unknown ids are ignored). HNSW rebuilds its graph."""
        with self._lock:
            labels = [self._labels.pop(i) for i in dict.fromkeys(ids) if i in self._labels]
            if not labels:
                return
            for label in labels:
                del self._records[label]
            if self._spec.index == "hnsw":
                self._rebuild()
            else:
                doomed = np.array(labels, np.int64)  # subtle: IDSelectorArray does not copy
                self._index.remove_ids(self._faiss.IDSelectorArray(doomed))

    # -- reads ------------------------------------------------------------------------------

    def query(
        self, embeddings: ArrayLike, k: int = 5, where: dict[str, Any] | None = None
    ) -> list[list[Hit]]:
        """The ``k`` best rows for each query row, filtered by ``where``."""
        validate_where(where)
        matrix = self._prepare(embeddings)
        with self._lock:
            allowed = self._allowed_labels(where)
            limit = min(k, len(self) if allowed is None else len(allowed))
            if limit <= 0:
                return [[] for _ in range(len(matrix))]
            params = search_params(
                self._faiss, self._spec, self._index, self._trained, limit, allowed
            )
            scores, labels = self._index.search(matrix, limit, params=params)
            return [self._hits(s, lb) for s, lb in zip(scores, labels, strict=True)]

    def get(self, ids: Sequence[str]) -> list[Chunk]:
        """Stored chunks for ``ids``, in order; missing ids are skipped."""
        with self._lock:
            return [self._chunk(self._labels[i]) for i in ids if i in self._labels]

    # -- persistence ------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write ``index.faiss`` and ``records.json`` as a new atomic snapshot at ``path``."""
        with self._lock:
            write_snapshot(path, self._write_files, kind=_KIND)

    @classmethod
    def load(cls, path: str | Path, *, embedder: Embedder | None = None) -> Self:
        """Open a snapshot written by :meth:`save`.

        Raises:
            IndexCorruptError: a file is missing, truncated or inconsistent (names it).
        """
        folder = read_snapshot(path, kind=_KIND)
        records_path = folder / "records.json"
        try:
            state = json.loads(records_path.read_text())
            spec, next_label, trained = dict(state["spec"]), state["next_label"], state["trained"]
            records = {int(r[0]): (str(r[1]), str(r[2]), dict(r[3])) for r in state["records"]}
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise IndexCorruptError(f"{records_path} is unreadable: {exc!r}") from exc
        store = cls(**spec, embedder=embedder)
        store._records, store._next_label, store._trained = records, int(next_label), bool(trained)
        store._labels = {row_id: label for label, (row_id, _, _) in store._records.items()}
        store._index = store._read_index(folder / "index.faiss")
        return store

    # -- internals --------------------------------------------------------------------------

    def _write_files(self, folder: Path) -> None:
        self._faiss.write_index(self._index, str(folder / "index.faiss"))
        records = [[label, *rec] for label, rec in self._records.items()]
        state = {
            "spec": asdict(self._spec),
            "next_label": self._next_label,
            "trained": self._trained,
            "records": records,
        }
        (folder / "records.json").write_text(json.dumps(state))

    def _read_index(self, path: Path) -> Any:
        try:
            index = self._faiss.read_index(str(path))
        except RuntimeError as exc:
            raise IndexCorruptError(f"{path} cannot be read by Faiss: {exc}") from exc
        if index.d != self.dim or index.ntotal != len(self._records):
            raise IndexCorruptError(
                f"{path} holds {index.ntotal} vectors of dim {index.d}, but the records "
                f"list {len(self._records)} of dim {self.dim}"
            )
        return index

    def _prepare(self, embeddings: ArrayLike) -> npt.NDArray[np.float32]:
        matrix = as_matrix(embeddings, self.dim)
        if self._spec.metric == "cosine":
            matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        return matrix

    def _train_from(self, sample: npt.NDArray[np.float32]) -> None:
        stored, labels = self._stored_vectors(), np.array(list(self._records), np.int64)
        index = new_index(
            self._faiss, self._spec, trained=True, nlist=auto_nlist(self._spec, len(sample))
        )
        self._faiss.extract_index_ivf(index).train(sample)
        if len(labels):
            index.add_with_ids(stored, labels)
        self._index, self._trained = index, True

    def _stored_vectors(self) -> npt.NDArray[np.float32]:
        labels = np.array(list(self._records), np.int64)
        if len(labels) == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._index.reconstruct(int(label)) for label in labels])

    def _rebuild(self) -> None:
        keep = np.array(list(self._records), np.int64)
        vectors = np.stack([self._index.reconstruct(int(lb)) for lb in keep]) if len(keep) else None
        index = new_index(self._faiss, self._spec, trained=True)
        if vectors is not None:
            index.add_with_ids(vectors, keep)
        self._index = index

    def _allowed_labels(self, where: dict[str, Any] | None) -> list[int] | None:
        if not where:
            return None
        return [label for label, (_, _, m) in self._records.items() if matches_where(m, where)]

    def _hits(self, scores: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> list[Hit]:
        sign = -1.0 if self._spec.metric == "l2" else 1.0
        found = [(float(s), int(lb)) for s, lb in zip(scores, labels, strict=True) if lb >= 0]
        return [Hit(self._chunk(lb), sign * s, rank) for rank, (s, lb) in enumerate(found)]

    def _chunk(self, label: int) -> Chunk:
        row_id, text, meta = self._records[label]
        return Chunk(row_id, text, dict(meta))
