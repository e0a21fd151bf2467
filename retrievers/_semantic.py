"""Semantic chunking: break where the embedding distance between neighbouring sentences jumps.

Kamradt's method, as compared in the RAG chunking literature: embed each sentence with its
neighbours, take cosine distances between consecutive windows, and break where a distance (or
its gradient) passes a cut-off. Re-exported by :mod:`ragloom.retrievers.chunking`, which holds
the shared helpers; this module does not load or embed anything by itself.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ragloom.errors import ConfigError
from ragloom.retrievers._spans import Span, make_chunks, pack_sentences, split_sentences
from ragloom.retrievers._types import Chunk, Embedder
from ragloom.retrievers.loaders import Document

__all__ = ["SemanticChunker"]

Breakpoint = Literal["percentile", "std", "iqr", "gradient"]
_DEFAULT_THRESHOLD: dict[str, float] = {"percentile": 95, "std": 3, "iqr": 1.5, "gradient": 95}


def _breaks(distances: np.ndarray, breakpoint: Breakpoint, threshold: float) -> list[int]:
    """Indices ``i`` where the text should break after sentence ``i``."""
    if breakpoint == "percentile":
        values, cut = distances, float(np.percentile(distances, threshold))
    elif breakpoint == "std":
        values, cut = distances, float(distances.mean() + threshold * distances.std())
    elif breakpoint == "iqr":
        q1, q3 = np.percentile(distances, [25, 75])
        values, cut = distances, float(distances.mean() + threshold * (q3 - q1))
    else:  # gradient: break where the distance rises fastest
        values = np.gradient(distances) if len(distances) > 1 else distances
        cut = float(np.percentile(values, threshold))
    return [int(i) for i in np.flatnonzero(values > cut)]


class SemanticChunker:
    """Break between sentences whose embeddings are far apart (Kamradt's semantic chunking).

    Each sentence is embedded together with ``buffer`` neighbours on each side; the cosine
    distance between consecutive windows is computed, and the text breaks wherever it exceeds a
    cut-off: the ``threshold``-th percentile (``"percentile"``, default 95), mean + ``threshold``
    standard deviations (``"std"``, default 3), mean + ``threshold`` interquartile ranges
    (``"iqr"``, default 1.5), or where the gradient of the distances passes its
    ``threshold``-th percentile (``"gradient"``, default 95). Groups longer than ``max_chars``
    are re-packed sentence by sentence.

    >>> SemanticChunker(default_embedder(), "std", 2.0).split(doc)  # doctest: +SKIP
    """

    def __init__(
        self,
        embedder: Embedder,
        breakpoint: Breakpoint = "percentile",
        threshold: float | None = None,
        *,
        buffer: int = 1,
        max_chars: int | None = None,
    ) -> None:
        if breakpoint not in _DEFAULT_THRESHOLD:
            raise ConfigError(
                f"unknown breakpoint {breakpoint!r}; use one of {sorted(_DEFAULT_THRESHOLD)}"
            )
        if buffer < 0 or (max_chars is not None and max_chars <= 0):
            raise ConfigError(f"buffer must be >= 0 and max_chars > 0, got {buffer}, {max_chars}")
        self.embedder = embedder
        self.breakpoint: Breakpoint = breakpoint
        self.threshold = _DEFAULT_THRESHOLD[breakpoint] if threshold is None else threshold
        self.buffer = buffer
        self.max_chars = max_chars

    def split(self, doc: Document) -> list[Chunk]:
        """Split ``doc`` at semantic breakpoints."""
        sentences = split_sentences(doc.text)
        if len(sentences) < 3:
            return make_chunks(doc, [(sentences[0][0], sentences[-1][1])] if sentences else [])
        n, b = len(sentences), self.buffer
        windows = [
            doc.text[sentences[max(0, i - b)][0] : sentences[min(n - 1, i + b)][1]]
            for i in range(n)
        ]
        emb = self.embedder.embed(windows)
        distances = 1.0 - np.einsum("ij,ij->i", emb[:-1], emb[1:])
        groups, first = [], 0
        for i in [*_breaks(distances, self.breakpoint, self.threshold), n - 1]:
            groups.append(sentences[first : i + 1])
            first = i + 1
        spans: list[Span] = []
        for group in groups:
            if self.max_chars is not None and group[-1][1] - group[0][0] > self.max_chars:
                spans.extend(pack_sentences(group, self.max_chars, 0))
            else:
                spans.append((group[0][0], group[-1][1]))
        return make_chunks(doc, spans)

    def __repr__(self) -> str:
        return f"SemanticChunker({self.breakpoint!r}, threshold={self.threshold})"
