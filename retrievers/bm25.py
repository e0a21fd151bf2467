"""Lexical retrieval with BM25 (the ``bm25s`` library does the scoring).

:class:`BM25Retriever` keeps the chunks and a ``bm25s.BM25`` index over them. bm25s indexes are
static, so :meth:`BM25Retriever.add` and :meth:`BM25Retriever.delete` re-index the whole corpus
(fast: bm25s indexes tens of thousands of chunks per second); batch your writes. Metadata
filters become a bm25s ``weight_mask``. Chunks that share no term with the query (score 0)
are not returned.

This module does not embed or rerank; see :mod:`ragloom.retrievers.hybrid` to fuse it with
dense retrieval.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from ragloom._lazy import require
from ragloom.errors import ConfigError, IndexCorruptError
from ragloom.retrievers._types import Chunk, Hit
from ragloom.retrievers.base import check_batch, matches_where, validate_where
from ragloom.retrievers.stores._snapshot import read_snapshot, write_snapshot

__all__ = ["BM25Retriever"]

Stemmer = Callable[[list[str]], list[str]]
_KIND = "bm25"


class BM25Retriever:
    """BM25 over chunks, with metadata filters and atomic save/load.

    Args:
        chunks: initial chunks (ids must be unique).
        stemmer: optional ``list[str] -> list[str]`` applied to tokens of chunks and queries
            (for example ``Stemmer.Stemmer("english").stemWords`` from PyStemmer).
        stopwords: a bm25s stopword language (``"english"``) or list, or ``None``.
        k1, b: the BM25 parameters.

    Example:
        >>> bm25 = BM25Retriever([Chunk("a", "masks reduce spread"), Chunk("b", "vaccines work")])
        >>> [h.chunk.id for h in bm25.retrieve("do masks help", k=2)]
        ['a']
    """

    def __init__(
        self,
        chunks: Sequence[Chunk] | None = None,
        *,
        stemmer: Stemmer | None = None,
        stopwords: str | list[str] | None = "english",
        k1: float = 1.5,
        b: float = 0.75,
    ) -> None:
        if k1 < 0 or not 0 <= b <= 1:
            raise ConfigError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self._bm25s = require("bm25s", "retrieval")
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        self._stemmer, self._stopwords, self._k1, self._b = stemmer, stopwords, k1, b
        self._lock = threading.RLock()
        self._chunks: list[Chunk] = []
        self._index: Any = None
        if chunks:
            self.add(chunks)

    def __len__(self) -> int:
        return len(self._chunks)

    def add(self, chunks: Sequence[Chunk]) -> None:
        """Add chunks and re-index. Raises ConfigError on duplicate ids."""
        chunks = list(chunks)
        with self._lock:
            ids = [c.id for c in chunks]
            metas = [c.metadata for c in chunks]
            check_batch(ids, len(chunks), metas, [c.text for c in chunks], self._positions())
            self._reindex(self._chunks + chunks)

    def delete(self, ids: Sequence[str]) -> None:
        """Remove chunks by id (unknown ids are ignored) and re-index."""
        doomed = set(ids)
        with self._lock:
            if any(c.id in doomed for c in self._chunks):
                self._reindex([c for c in self._chunks if c.id not in doomed])

    def get(self, ids: Sequence[str]) -> list[Chunk]:
        """Stored chunks for ``ids``, in order; missing ids are skipped."""
        with self._lock:
            positions = self._positions()
            return [self._chunks[positions[i]] for i in ids if i in positions]

    def retrieve(self, query: str, k: int = 5, where: dict[str, Any] | None = None) -> list[Hit]:
        """The ``k`` best-scoring chunks for ``query`` (score > 0) that satisfy ``where``."""
        validate_where(where)
        with self._lock:
            tokens = self._tokenize([query])
            if self._index is None or k <= 0 or not tokens[0]:
                return []
            mask = None
            if where:
                mask = np.array(
                    [matches_where(c.metadata, where) for c in self._chunks], np.float32
                )
            limit = min(k, len(self._chunks))
            docs, scores = self._index.retrieve(
                tokens, k=limit, show_progress=False, weight_mask=mask, n_threads=1
            )
            found = [(int(d), float(s)) for d, s in zip(docs[0], scores[0], strict=True) if s > 0]
            return [Hit(self._chunks[d], s, rank) for rank, (d, s) in enumerate(found)]

    def save(self, path: str | Path) -> None:
        """Write the chunks and the bm25s index as an atomic snapshot at ``path``."""
        with self._lock:
            write_snapshot(path, self._write_files, kind=_KIND)

    @classmethod
    def load(cls, path: str | Path, *, stemmer: Stemmer | None = None) -> Self:
        """Open a snapshot written by :meth:`save` (pass the same ``stemmer`` again).

        Raises:
            IndexCorruptError: a file is missing, truncated or inconsistent (names it).
            ConfigError: the index was built with a stemmer and none is given.
        """
        folder = read_snapshot(path, kind=_KIND)
        state_path = folder / "chunks.json"
        try:
            state = json.loads(state_path.read_text())
            params, rows = state["params"], state["chunks"]
            chunks = [Chunk(str(i), str(t), dict(m)) for i, t, m in rows]
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexCorruptError(f"{state_path} is unreadable: {exc!r}") from exc
        if params["stemmed"] and stemmer is None:
            raise ConfigError(f"{path} was indexed with a stemmer: pass stemmer= to load it")
        store = cls(stemmer=stemmer, stopwords=params["stopwords"], k1=params["k1"], b=params["b"])
        store._chunks = chunks
        if chunks:
            store._index = store._read_index(folder / "bm25")
        return store

    # -- internals --------------------------------------------------------------------------

    def _positions(self) -> dict[str, int]:
        return {c.id: n for n, c in enumerate(self._chunks)}

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        tokens = self._bm25s.tokenize(
            texts,
            stopwords=self._stopwords,
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=False,
        )
        return [list(t) for t in tokens]

    def _reindex(self, chunks: list[Chunk]) -> None:
        index = None
        if chunks:
            index = self._bm25s.BM25(k1=self._k1, b=self._b)
            index.index(self._tokenize([c.text for c in chunks]), show_progress=False)
        self._chunks, self._index = chunks, index

    def _write_files(self, folder: Path) -> None:
        params = {
            "stemmed": self._stemmer is not None,
            "stopwords": self._stopwords,
            "k1": self._k1,
            "b": self._b,
        }
        rows = [[c.id, c.text, c.metadata] for c in self._chunks]
        (folder / "chunks.json").write_text(json.dumps({"params": params, "chunks": rows}))
        if self._index is not None:
            self._index.save(str(folder / "bm25"), show_progress=False)

    def _read_index(self, folder: Path) -> Any:
        try:
            index = self._bm25s.BM25.load(str(folder), show_progress=False)
        except (OSError, ValueError, KeyError) as exc:
            raise IndexCorruptError(f"{folder} cannot be read by bm25s: {exc!r}") from exc
        if index.scores["num_docs"] != len(self._chunks):
            raise IndexCorruptError(
                f"{folder} indexes {index.scores['num_docs']} chunks, "
                f"but chunks.json lists {len(self._chunks)}"
            )
        return index
