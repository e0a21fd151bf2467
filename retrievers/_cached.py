"""An on-disk embedding cache that wraps any :class:`Embedder` (SQLite, shared by processes).

Keyed by (model name, sha256 of the text), so an eval sweep never embeds the same chunk twice.
Re-exported by :mod:`ragloom.retrievers.embeddings`; this module computes no embeddings itself.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ragloom._config import cache_dir
from ragloom._sqlite import open_store
from ragloom.errors import RetrievalError
from ragloom.retrievers._types import Embedder

__all__ = ["CachedEmbedder"]

Matrix = npt.NDArray[np.float32]


class CachedEmbedder:
    """Wraps an embedder with an on-disk cache keyed by (model name, sha256 of the text).

    The cache is a SQLite file (``embeddings.sqlite`` under ``cache_dir("embeddings")`` unless
    ``path`` is given), safe to share between processes. :meth:`embed` computes only the
    misses, in one call to the wrapped embedder; ``hits`` and ``misses`` count texts.

    >>> emb = CachedEmbedder(SentenceTransformerEmbedder())  # doctest: +SKIP
    >>> _ = emb.embed(["a", "b"])  # doctest: +SKIP
    >>> _ = emb.embed(["a", "b"])  # doctest: +SKIP
    >>> (emb.hits, emb.misses)  # doctest: +SKIP
    (2, 2)
    """

    def __init__(self, inner: Embedder, path: str | Path | None = None) -> None:
        self.inner = inner
        self.model_name: str = inner.model_name
        self.dim: int = inner.dim
        self._default_path = path is None
        self.path = (
            Path(path) if path is not None else cache_dir("embeddings") / "embeddings.sqlite"
        )
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._db = open_store(
            self.path,
            "CREATE TABLE IF NOT EXISTS vectors (model TEXT, hash TEXT, vector BLOB,"
            " PRIMARY KEY (model, hash))",
            error=RetrievalError,
            what="the embedding cache",
            timeout=30,
        )

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Embed documents, computing only those not cached yet."""
        return self._embed(list(texts), self.model_name, self.inner.embed)

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        """Embed one query (cached under its own key, since some models embed queries apart)."""
        return self._embed([text], self.model_name + "#query", self._inner_query)[0]

    def _inner_query(self, texts: Sequence[str]) -> Matrix:
        return np.stack([self.inner.embed_query(t) for t in texts])

    def _embed(self, texts: list[str], model: str, compute: Any) -> Matrix:
        keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
        found = self._lookup(model, set(keys))
        todo = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        with self._lock:
            self.hits += len(texts) - sum(k in todo for k in keys)
            self.misses += sum(k in todo for k in keys)
        if todo:
            vectors = np.asarray(compute(list(todo.values())), dtype=np.float32)
            found.update(zip(todo, vectors, strict=True))
            rows = [(model, k, v.tobytes()) for k, v in zip(todo, vectors, strict=True)]
            with self._lock, self._db:
                self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def _lookup(self, model: str, keys: set[str]) -> dict[str, npt.NDArray[np.float32]]:
        found: dict[str, npt.NDArray[np.float32]] = {}
        wanted = sorted(keys)
        with self._lock:
            for i in range(0, len(wanted), 500):
                part = wanted[i : i + 500]
                marks = ",".join("?" * len(part))
                rows = self._db.execute(
                    f"SELECT hash, vector FROM vectors WHERE model = ? AND hash IN ({marks})",
                    [model, *part],
                ).fetchall()
                for key, blob in rows:
                    if len(blob) == 4 * self.dim:  # anything else is stale: recompute
                        found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def get_config(self) -> dict[str, Any]:
        """The wrapped embedder's description and the cache file, for :meth:`from_config`."""
        from ragloom.retrievers.embeddings import describe_embedder

        path = None if self._default_path else str(self.path)  # the default moves with the cache
        return {"inner": describe_embedder(self.inner), "path": path}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CachedEmbedder:
        """Rebuild from :meth:`get_config`'s output."""
        from ragloom.retrievers.embeddings import rebuild_embedder

        return cls(rebuild_embedder(config["inner"]), config.get("path"))

    def close(self) -> None:
        """Close the cache file."""
        self._db.close()

    def __repr__(self) -> str:
        return f"CachedEmbedder({self.inner!r}, path={str(self.path)!r})"
