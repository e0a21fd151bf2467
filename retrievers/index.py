"""Build, save and load a searchable index of a folder: load -> chunk -> embed -> store.

:func:`build_index` is the one-call path (used by ``ragloom index``); :class:`Index` holds the
retriever, the chunks and what it was built with, and saves to a folder::

    DIR/index.json            manifest: store kind, chunking spec, embedder, counts
    DIR/chunks-<id>.jsonl     the chunks (id, text, metadata)
    DIR/dense/                the Faiss or Chroma snapshot (faiss, chroma, hybrid)
    DIR/bm25/                 the BM25 snapshot (bm25, hybrid)

The manifest is replaced last and atomically, so a crash during :meth:`Index.save` leaves the
previous index readable. Stores and retrievers themselves live in :mod:`ragloom.retrievers.stores`,
:mod:`.bm25`, :mod:`.dense` and :mod:`.hybrid`; this module only wires them together.
"""

from __future__ import annotations

import functools
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ragloom.errors import ConfigError, IndexCorruptError, RetrievalError
from ragloom.retrievers._types import Chunk, Embedder, Hit
from ragloom.retrievers.chunking import Chunker, chunk_documents, make_chunker
from ragloom.retrievers.loaders import load_documents

if TYPE_CHECKING:
    from ragloom.retrievers.base import Retriever
    from ragloom.retrievers.sources import RetrievalSource

__all__ = ["STORES", "Index", "build_index"]

StoreKind = Literal["faiss", "chroma", "bm25", "hybrid"]
STORES: tuple[str, ...] = ("faiss", "chroma", "bm25", "hybrid")
"""The store kinds :func:`build_index` knows."""
MANIFEST = "index.json"
_VERSION = 1


@dataclass(slots=True)
class Index:
    """A built index: its retriever, its chunks and what it was built with.

    Attributes:
        retriever: searches the index (dense, BM25 or hybrid).
        chunks: every indexed chunk, in build order.
        store: the store kind.
        chunking: the chunking spec (or the chunker's repr).
        embedder: the embedder of the dense part (None for pure BM25).
        parts: the persisted components: ``{"dense": VectorStore, "bm25": BM25Retriever}``.
        source: the folder or file the index was built from.
    """

    retriever: Retriever
    chunks: list[Chunk]
    store: str
    chunking: str
    embedder: Embedder | None = None
    parts: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def search(self, query: str, k: int = 5, where: dict[str, Any] | None = None) -> list[Hit]:
        """Shorthand for ``index.retriever.retrieve(query, k, where)``."""
        return self.retriever.retrieve(query, k=k, where=where)

    def as_source(self, name: str, description: str, **kwargs: Any) -> RetrievalSource:
        """This index as a :class:`~ragloom.retrievers.sources.RetrievalSource` tool."""
        from ragloom.retrievers.sources import RetrievalSource

        return RetrievalSource(name, description, self.retriever, **kwargs)

    def save(self, path: str | Path) -> None:
        """Write the index to folder ``path``; the manifest is replaced last, atomically."""
        from ragloom.retrievers.embeddings import describe_embedder

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        for name, part in self.parts.items():
            part.save(folder / name)
        chunks_file = f"chunks-{uuid.uuid4().hex[:12]}.jsonl"
        lines = (
            json.dumps({"id": c.id, "text": c.text, "metadata": c.metadata}) for c in self.chunks
        )
        _atomic_text(folder / chunks_file, "\n".join(lines) + "\n")
        manifest = {
            "version": _VERSION,
            "store": self.store,
            "chunking": self.chunking,
            "embedder": None if self.embedder is None else describe_embedder(self.embedder),
            "num_chunks": len(self.chunks),
            "chunks_file": chunks_file,
            "source": self.source,
        }
        _atomic_text(folder / MANIFEST, json.dumps(manifest, indent=2))
        for old in folder.glob("chunks-*.jsonl"):  # older generations, now unreferenced
            if old.name != chunks_file:
                old.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | Path, *, embedder: Embedder | None = None) -> Index:
        """Open an index folder written by :meth:`save`.

        Args:
            path: the index folder.
            embedder: the query embedder; by default rebuilt from the manifest. It must be the
                model the index was built with.

        Raises:
            RetrievalError: no index at ``path``.
            IndexCorruptError: the manifest or chunks file is unreadable (names the file).
            ConfigError: ``embedder`` is not the model the index was built with.
        """
        folder = Path(path)
        manifest = _read_manifest(folder)
        chunks = _read_chunks(folder / str(manifest["chunks_file"]))
        kind = str(manifest["store"])
        description = manifest.get("embedder")
        if description is not None:
            from ragloom.retrievers.embeddings import check_embedder

            if embedder is None:
                embedder = _shared_embedder(json.dumps(description, sort_keys=True))
            check_embedder(embedder, description.get("model_name"), description.get("dim"))
        parts = _load_parts(folder, kind, embedder)
        return cls(
            retriever=_retriever(kind, parts, embedder),
            chunks=chunks,
            store=kind,
            chunking=str(manifest.get("chunking", "")),
            embedder=embedder,
            parts=parts,
            source=str(manifest.get("source", "")),
        )


def build_index(
    path: str | Path,
    *,
    store: StoreKind = "faiss",
    chunker: Chunker | str | dict[str, Any] = "fixed_tokens:256:32",
    embedder: Embedder | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    glob: str = "**/*",
    text_field: str = "text",
    faiss_index: Literal["flat", "hnsw", "ivf"] = "flat",
    batch_size: int = 64,
) -> Index:
    """Load the files under ``path``, chunk, embed, and store them; save to ``out`` if given.

    Args:
        path: a folder (or one file) of .txt/.md/.html/.json/.jsonl/.pdf files.
        store: ``"faiss"``, ``"chroma"``, ``"bm25"`` or ``"hybrid"`` (Faiss + BM25 with RRF).
        chunker: a :class:`Chunker` or a spec for :func:`make_chunker`.
        embedder: default :func:`~ragloom.retrievers.embeddings.default_embedder`.
        out: a folder to save the index to.
        progress: show progress bars (tqdm, on stderr).
        glob, text_field: passed to :func:`load_documents`.
        faiss_index: ``"flat"`` (exact), ``"hnsw"`` or ``"ivf"`` for the dense part.
        batch_size: chunks embedded per call.

    Raises:
        ConfigError: an unknown store kind or chunking spec.
        RetrievalError: nothing to index under ``path`` (or any loading error).

    >>> index = build_index("docs/", store="hybrid", out="docs.index")  # doctest: +SKIP
    >>> index.search("how do I reset my password", k=3)  # doctest: +SKIP
    """
    if store not in STORES:
        raise ConfigError(f"unknown store {store!r}; use one of {list(STORES)}")
    docs = load_documents(path, glob=glob, text_field=text_field)
    if not docs:
        raise RetrievalError(f"nothing to index under {str(path)!r}: no supported files found")
    if store != "bm25" and embedder is None:
        from ragloom.retrievers.embeddings import default_embedder

        embedder = default_embedder()
    spec = chunker if isinstance(chunker, str) else repr(chunker)
    if isinstance(chunker, str | dict):  # subtle: a str has .split, so it passes as a Chunker
        chunker = make_chunker(chunker, embedder=embedder)
    chunks = chunk_documents(_bar(docs, progress, "chunking", "doc"), chunker)
    if not chunks:
        raise RetrievalError(f"nothing to index under {str(path)!r}: every document is empty")
    parts: dict[str, Any] = {}
    if store != "bm25":
        assert embedder is not None
        vectors = _embed(embedder, chunks, batch_size, progress)
        parts["dense"] = _dense_store(store, embedder, faiss_index)
        parts["dense"].add(
            [c.id for c in chunks], vectors, [c.metadata for c in chunks], [c.text for c in chunks]
        )
    if store in ("bm25", "hybrid"):
        from ragloom.retrievers.bm25 import BM25Retriever

        parts["bm25"] = BM25Retriever(chunks)
    index = Index(
        _retriever(store, parts, embedder), chunks, store, spec, embedder, parts, str(path)
    )
    if out is not None:
        index.save(out)
    return index


def _bar(items: Sequence[Any], progress: bool, desc: str, unit: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=unit, disable=not progress, leave=False)


def _embed(embedder: Embedder, chunks: list[Chunk], batch_size: int, progress: bool) -> Any:
    import numpy as np
    from tqdm.auto import tqdm

    parts = []
    with tqdm(total=len(chunks), desc="embedding", unit="chunk", disable=not progress) as bar:
        for i in range(0, len(chunks), batch_size):
            batch = [c.text for c in chunks[i : i + batch_size]]
            parts.append(embedder.embed(batch))
            bar.update(len(batch))
    return np.concatenate(parts)


def _dense_store(store: str, embedder: Embedder, faiss_index: str) -> Any:
    if store == "chroma":
        from ragloom.retrievers.stores.chroma_store import ChromaStore

        # subtle: in-memory Chroma clients share one database per process; a fresh name per build
        return ChromaStore(None, f"ragloom-{uuid.uuid4().hex[:12]}", embedder=embedder)
    from ragloom.retrievers.stores.faiss_store import FaissStore

    return FaissStore(embedder.dim, index=faiss_index, embedder=embedder)  # type: ignore[arg-type]


def _retriever(kind: str, parts: dict[str, Any], embedder: Embedder | None) -> Retriever:
    if kind == "bm25":
        return parts["bm25"]  # type: ignore[no-any-return]
    from ragloom.retrievers.dense import DenseRetriever

    dense = DenseRetriever(parts["dense"], embedder)
    if kind == "hybrid":
        from ragloom.retrievers.hybrid import HybridRetriever

        return HybridRetriever([dense, parts["bm25"]])
    return dense


@functools.lru_cache(maxsize=8)
def _shared_embedder(description: str) -> Embedder:
    """One embedder per description and process: reopening indexes does not reload models."""
    from ragloom.retrievers.embeddings import rebuild_embedder

    return rebuild_embedder(json.loads(description))


def _load_parts(folder: Path, kind: str, embedder: Embedder | None) -> dict[str, Any]:
    parts: dict[str, Any] = {}
    if kind == "chroma":
        from ragloom.retrievers.stores.chroma_store import ChromaStore

        parts["dense"] = ChromaStore.load(folder / "dense", embedder=embedder)
    elif kind in ("faiss", "hybrid"):
        from ragloom.retrievers.stores.faiss_store import FaissStore

        parts["dense"] = FaissStore.load(folder / "dense", embedder=embedder)
    if kind in ("bm25", "hybrid"):
        from ragloom.retrievers.bm25 import BM25Retriever

        parts["bm25"] = BM25Retriever.load(folder / "bm25")
    return parts


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.exists():
        raise RetrievalError(f"no index at {str(folder)!r} ({MANIFEST} is missing)")
    try:
        manifest = json.loads(path.read_text())
        if manifest["store"] not in STORES or "chunks_file" not in manifest:
            raise ValueError(f"unknown store {manifest['store']!r} or no chunks file")
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexCorruptError(f"{path} is unreadable: {exc}") from exc
    return manifest  # type: ignore[no-any-return]


def _read_chunks(path: Path) -> list[Chunk]:
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [Chunk(str(r["id"]), str(r["text"]), dict(r["metadata"])) for r in rows]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IndexCorruptError(f"{path} is unreadable: {exc}") from exc


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
