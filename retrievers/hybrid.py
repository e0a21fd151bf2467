"""Hybrid retrieval: reciprocal-rank fusion (RRF) of two or more retrievers.

Each retriever returns its top ``fetch_k`` hits; a chunk's fused score is
``sum_i weight_i / (rrf_k + rank_i)`` over the retrievers that returned it (``rank_i`` from 1),
as in Cormack et al. (2009). Only ranks matter, so BM25 scores and cosine similarities need
no calibration. This module does not rerank.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ragloom.errors import ConfigError
from ragloom.retrievers._types import Hit
from ragloom.retrievers.base import Retriever

__all__ = ["HybridRetriever", "reciprocal_rank_fusion"]


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[Hit]], weights: Sequence[float], rrf_k: int = 60
) -> list[Hit]:
    """Fuse ranked hit lists by RRF; ties keep first-seen order.

    Each fused hit carries ``extra["ranks"]``: the 1-based rank in each input list (or None).

    >>> from ragloom.retrievers._types import Chunk
    >>> a, b = Chunk("a", ""), Chunk("b", "")
    >>> fused = reciprocal_rank_fusion([[Hit(a, 1.0), Hit(b, 0.5)], [Hit(b, 9.0)]], [1.0, 1.0])
    >>> [(h.chunk.id, round(h.score, 4)) for h in fused]
    [('b', 0.0325), ('a', 0.0164)]
    """
    fused: dict[str, Hit] = {}
    for source, (hits, weight) in enumerate(zip(rankings, weights, strict=True)):
        for rank, hit in enumerate(hits, start=1):
            entry = fused.setdefault(
                hit.chunk.id,
                Hit(hit.chunk, 0.0, extra={"ranks": [None] * len(rankings)}),
            )
            if entry.extra["ranks"][source] is None:  # subtle: a repeated id counts once
                entry.score += weight / (rrf_k + rank)
                entry.extra["ranks"][source] = rank
    ordered = sorted(fused.values(), key=lambda h: h.score, reverse=True)
    for rank, hit in enumerate(ordered):
        hit.rank = rank
    return ordered


class HybridRetriever:
    """A :class:`Retriever` that fuses several retrievers with reciprocal-rank fusion.

    Args:
        retrievers: two or more retrievers (for example dense + BM25).
        weights: one non-negative weight per retriever (default: all 1).
        rrf_k: the RRF constant; larger values flatten the rank discount.
        fetch_k: hits asked from each retriever (at least ``k`` is always asked).

    Example:
        >>> from ragloom.retrievers import BM25Retriever
        >>> from ragloom.retrievers._types import Chunk
        >>> bm25 = BM25Retriever([Chunk("a", "masks reduce spread"), Chunk("b", "vaccines")])
        >>> HybridRetriever([bm25, bm25]).retrieve("masks", k=1)[0].chunk.id
        'a'
    """

    def __init__(
        self,
        retrievers: Sequence[Retriever],
        *,
        weights: Sequence[float] | None = None,
        rrf_k: int = 60,
        fetch_k: int = 20,
    ) -> None:
        if len(retrievers) < 2:
            raise ConfigError(
                f"HybridRetriever fuses two or more retrievers, got {len(retrievers)}"
            )
        weights = [1.0] * len(retrievers) if weights is None else list(weights)
        if len(weights) != len(retrievers) or any(w < 0 for w in weights) or not any(weights):
            raise ConfigError(
                f"weights={weights}: give one non-negative weight per retriever, not all zero"
            )
        if rrf_k < 0 or fetch_k < 1:
            raise ConfigError(f"need rrf_k >= 0 and fetch_k >= 1, got {rrf_k}, {fetch_k}")
        self.retrievers = list(retrievers)
        self.weights = weights
        self.rrf_k = rrf_k
        self.fetch_k = fetch_k

    def retrieve(self, query: str, k: int = 5, where: dict[str, Any] | None = None) -> list[Hit]:
        """Fuse each retriever's top ``max(fetch_k, k)`` hits and return the best ``k``."""
        fetch = max(self.fetch_k, k)
        rankings = [r.retrieve(query, fetch, where) for r in self.retrievers]
        return reciprocal_rank_fusion(rankings, self.weights, self.rrf_k)[:k]
