"""Rerankers: re-score a retriever's hits against the query, best first.

- :class:`CrossEncoderReranker` -- a sentence-transformers ``CrossEncoder`` read from a local
  folder (no PyPI package ships cross-encoder weights; bring your own).
- :class:`LLMReranker` -- pointwise relevance from any :class:`~ragloom.runtime.LLM` that can
  score continuations: the log-probability of " yes" against " no" after a relevance question,
  batched. It needs no extra model, so it is the default offline reranker.

Reranked hits are new :class:`Hit` objects: ``score`` is the reranker's, ``rank`` the new
0-based position, and ``extra`` keeps ``retrieval_score`` and ``retrieval_rank``. This module
does not retrieve; wrap a retriever with :class:`RerankingRetriever` to do both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ragloom._lazy import require
from ragloom.errors import ConfigError, ModelError, RetrievalError
from ragloom.retrievers._types import Hit

if TYPE_CHECKING:
    from ragloom.retrievers.base import Retriever
    from ragloom.runtime.llm import LLM

__all__ = [
    "DEFAULT_RELEVANCE_PROMPT",
    "CrossEncoderReranker",
    "LLMReranker",
    "Reranker",
    "RerankingRetriever",
    "reorder",
]


@runtime_checkable
class Reranker(Protocol):
    """Re-scores hits for a query and returns them best first (at most ``top_k``)."""

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """Return the hits re-ranked, best first."""
        ...


def reorder(hits: Sequence[Hit], scores: Sequence[float], top_k: int | None = None) -> list[Hit]:
    """New hits sorted by ``scores`` (descending, ties keep retrieval order), cut to ``top_k``.

    >>> from ragloom.retrievers._types import Chunk
    >>> hits = [Hit(Chunk("a", "A"), 0.9, 0), Hit(Chunk("b", "B"), 0.8, 1)]
    >>> [(h.chunk.id, h.score, h.rank) for h in reorder(hits, [0.1, 0.7])]
    [('b', 0.7, 0), ('a', 0.1, 1)]
    """
    if len(scores) != len(hits):
        raise RetrievalError(f"reranker returned {len(scores)} scores for {len(hits)} hits")
    order = sorted(range(len(hits)), key=lambda i: -scores[i])[:top_k]
    return [
        Hit(
            hits[i].chunk,
            float(scores[i]),
            rank,
            {**hits[i].extra, "retrieval_score": hits[i].score, "retrieval_rank": hits[i].rank},
        )
        for rank, i in enumerate(order)
    ]


class CrossEncoderReranker:
    """Scores (query, passage) pairs with a local sentence-transformers cross-encoder.

    Args:
        model_path: a folder holding a cross-encoder (config, weights, tokenizer).
        device: torch device.
        batch_size: pairs per forward pass.
        max_length: truncate each pair to this many tokens (default: the model's).

    >>> reranker = CrossEncoderReranker("models/ms-marco-MiniLM-L6-v2")  # doctest: +SKIP
    >>> reranker.rerank("what spreads covid", hits, top_k=3)  # doctest: +SKIP
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        max_length: int | None = None,
    ) -> None:
        st = require("sentence_transformers", "retrieval")
        path = Path(model_path)
        if not path.is_dir():
            raise ModelError(f"no cross-encoder folder at {str(path)!r}")
        try:
            self.model = st.CrossEncoder(
                str(path), device=device, max_length=max_length, local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the cross-encoder at {str(path)!r}: {exc}") from exc
        self.batch_size = batch_size

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """Re-rank ``hits`` by the cross-encoder's score of (query, chunk text)."""
        if not hits:
            return []
        pairs = [(query, hit.chunk.text) for hit in hits]
        scores = self.model.predict(
            pairs, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
        )
        return reorder(hits, [float(s) for s in scores.reshape(len(hits), -1)[:, -1]], top_k)


_QUESTION = (
    "Passage:\n{passage}\n\nQuestion: {query}\n\n"
    "Does the passage contain information that answers the question? Answer yes or no."
)
DEFAULT_RELEVANCE_PROMPT = _QUESTION + "\nAnswer:"
"""The question put to the LLM for each (query, passage) pair; " yes" / " no" continue it.

With ``chat=True`` the same question without the final ``Answer:`` goes in a user message and
the assistant's reply is scored ("Yes" / "No")."""


class LLMReranker:
    """Pointwise LLM relevance: ``log P(yes) - logsumexp(log P(yes), log P(no))`` per hit.

    Each (query, passage) pair becomes a prompt (``prompt`` with ``{query}`` and ``{passage}``);
    the LLM's :meth:`~ragloom.runtime.LLM.score` gives the log-probabilities of the ``" yes"``
    and ``" no"`` continuations, ``batch_size`` prompts per call. The score is the log of the
    probability of "yes" among the two verdicts, so it is comparable across passages.

    Args:
        llm: any LLM whose ``score`` is implemented (the embedded engine, llama.cpp, FakeLLM).
        batch_size: prompts per ``score`` call.
        prompt: the template; must contain ``{query}`` and ``{passage}``.
        max_passage_chars: passages are cut to this many characters.
        chat: send the question as a user message through the model's chat template (better
            for instruct models) instead of as raw text.
        choices: the (yes, no) continuations scored; default ``(" yes", " no")``, or
            ``("Yes", "No")`` with ``chat=True``.

    >>> from ragloom.runtime import FakeLLM
    >>> def scores(prompt, choice):  # log P(choice): "yes" when the passage mentions masks
    ...     relevant = "masks" in prompt.split("Question:")[0]
    ...     return -0.1 if relevant == (choice == " yes") else -3.0
    >>> reranker = LLMReranker(FakeLLM(scores=scores))
    >>> from ragloom.retrievers._types import Chunk
    >>> hits = [Hit(Chunk("a", "bananas"), 1.0, 0), Hit(Chunk("b", "masks work"), 0.5, 1)]
    >>> [h.chunk.id for h in reranker.rerank("do masks work?", hits)]
    ['b', 'a']
    """

    def __init__(
        self,
        llm: LLM,
        batch_size: int = 8,
        *,
        prompt: str | None = None,
        max_passage_chars: int = 2000,
        chat: bool = False,
        choices: tuple[str, str] | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        prompt = prompt or (_QUESTION if chat else DEFAULT_RELEVANCE_PROMPT)
        if "{query}" not in prompt or "{passage}" not in prompt:
            raise ConfigError("the relevance prompt must contain {query} and {passage}")
        self.llm = llm
        self.batch_size = batch_size
        self.prompt = prompt
        self.max_passage_chars = max_passage_chars
        self.chat = chat
        self.choices = choices or (("Yes", "No") if chat else (" yes", " no"))
        self.num_scored = 0

    def relevance(self, query: str, passages: Sequence[str]) -> list[float]:
        """Log-probability of a "yes" verdict for each passage (batched ``score`` calls)."""
        texts = [
            self.prompt.format(query=query, passage=p[: self.max_passage_chars]) for p in passages
        ]
        prompts: list[Any] = (
            [[{"role": "user", "content": t}] for t in texts] if self.chat else texts
        )
        out: list[float] = []
        for i in range(0, len(prompts), self.batch_size):
            batch = prompts[i : i + self.batch_size]
            try:
                rows: Any = self.llm.score(batch, list(self.choices))
            except NotImplementedError as exc:
                raise RetrievalError(
                    f"{type(self.llm).__name__} cannot score continuations, which LLMReranker "
                    "needs; use an LLM backend with score() or a CrossEncoderReranker"
                ) from exc
            if len(rows) != len(batch) or any(len(row) != 2 for row in rows):
                raise RetrievalError(f"LLM score() returned {rows!r} for {len(batch)} prompts")
            out.extend(_log_p_yes(float(yes), float(no)) for yes, no in rows)
        self.num_scored += len(prompts)
        return out

    def rerank(self, query: str, hits: Sequence[Hit], top_k: int | None = None) -> list[Hit]:
        """Re-rank ``hits`` by the LLM's relevance verdict."""
        return reorder(hits, self.relevance(query, [h.chunk.text for h in hits]), top_k)


def _log_p_yes(yes: float, no: float) -> float:
    """``log(e^yes / (e^yes + e^no))``, computed stably.

    >>> round(_log_p_yes(math.log(0.3), math.log(0.1)), 4) == round(math.log(0.75), 4)
    True
    """
    top = max(yes, no)
    return yes - (top + math.log(math.exp(yes - top) + math.exp(no - top)))


class RerankingRetriever:
    """A retriever that fetches ``fetch_k`` hits and keeps the reranker's best ``k``.

    >>> retriever = RerankingRetriever(dense, LLMReranker(llm), fetch_k=20)  # doctest: +SKIP
    >>> retriever.retrieve("what spreads covid", k=5)  # doctest: +SKIP
    """

    def __init__(self, retriever: Retriever, reranker: Reranker, *, fetch_k: int = 20) -> None:
        if fetch_k <= 0:
            raise ConfigError(f"fetch_k must be positive, got {fetch_k}")
        self.retriever = retriever
        self.reranker = reranker
        self.fetch_k = fetch_k

    def retrieve(self, query: str, k: int = 5, where: dict[str, Any] | None = None) -> list[Hit]:
        """Retrieve ``max(k, fetch_k)`` candidates, rerank them, return the best ``k``."""
        hits = self.retriever.retrieve(query, k=max(k, self.fetch_k), where=where)
        return self.reranker.rerank(query, hits, top_k=k)
