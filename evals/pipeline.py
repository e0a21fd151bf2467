"""One RAG pipeline cell (chunk -> index -> retrieve -> rerank? -> CRAG? -> generate) and the
:class:`Workspace` that shares the expensive parts between cells.

A :class:`CellConfig` names one point of a sweep. A :class:`Workspace` holds the corpus, the
embedder, the generation LLM and memoised intermediate products: each distinct chunking is
chunked and embedded once, each (chunking, store) index is built once, each (chunking,
retrieval) BM25 index once; generations go through a disk cache keyed by (prompt, sampling
parameters, seed). With ``shared=False`` every cell recomputes its own chunks, embeddings
(no embedding cache) and index -- the naive baseline the sweep benchmark compares against.

This module does not score (see :mod:`ragloom.evals.scoring`) nor persist results
(:mod:`ragloom.evals.results`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ragloom.errors import ConfigError
from ragloom.evals import _components as comp
from ragloom.evals._types import EvalSet, Example, Passage, Prediction
from ragloom.retrievers._types import Chunk, Embedder, Hit
from ragloom.runtime.llm import LLM, SamplingParams

__all__ = [
    "CellConfig",
    "CellOutput",
    "Workspace",
    "answer_prompt",
    "restrict_corpus",
    "run_cell",
]

STORES = ("faiss", "chroma")
RETRIEVALS = ("dense", "bm25", "hybrid")
CHUNKERS = ("fixed_tokens", "chars", "sentences", "semantic")


@dataclass(frozen=True, slots=True, kw_only=True)
class CellConfig:
    """One point of a sweep.

    Attributes:
        store: ``"faiss"`` or ``"chroma"`` (dense and hybrid retrieval).
        retrieval: ``"dense"``, ``"bm25"`` or ``"hybrid"`` (dense + BM25, fused).
        chunker: ``"fixed_tokens"``, ``"chars"``, ``"sentences"`` or ``"semantic"``.
        chunk_size: tokens/characters per chunk (sentences: max characters).
        chunk_overlap: tokens/characters shared by neighbours (sentences: sentences).
        top_k: chunks handed to the generator.
        rerank: rerank ``rerank_fetch`` x top_k candidates with the LLM reranker.
        temperature: generation temperature.
        crag: corrective RAG (grade, rewrite the query, retrieve again).
    """

    store: Literal["faiss", "chroma"] = "faiss"
    retrieval: Literal["dense", "bm25", "hybrid"] = "dense"
    chunker: str = "fixed_tokens"
    chunk_size: int = 256
    chunk_overlap: int = 32
    top_k: int = 4
    rerank: bool = False
    temperature: float = 0.0
    crag: bool = False

    def __post_init__(self) -> None:
        for name, value, allowed in (("store", self.store, STORES),
                                     ("retrieval", self.retrieval, RETRIEVALS),
                                     ("chunker", self.chunker, CHUNKERS)):
            if value not in allowed:
                raise ConfigError(f"cell {name}={value!r}: choose one of {list(allowed)}")
        if self.top_k < 1 or self.chunk_size < 1 or not 0 <= self.chunk_overlap < self.chunk_size:
            raise ConfigError(f"cell needs top_k >= 1 and 0 <= overlap < size, got {self}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")

    @property
    def chunk_spec(self) -> str:
        """The chunking spec for :func:`ragloom.retrievers.make_chunker`."""
        if self.chunker == "semantic":
            return "semantic"
        return f"{self.chunker}:{self.chunk_size}:{self.chunk_overlap}"

    @property
    def cell_id(self) -> str:
        """A stable id: 12 hex digits of the hash of the parameters."""
        blob = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def params(self) -> dict[str, Any]:
        """The parameters as a plain dict (for tables and SQLite)."""
        return asdict(self)


@dataclass(slots=True)
class CellOutput:
    """Predictions of one cell plus per-question timings (seconds).

    ``retrieval_s`` covers retrieval, reranking and CRAG's grading/rewriting; sweeps warm
    the query-embedding cache first, so for dense retrieval it times the index search.
    ``total_s`` adds the generation time (the original one, for cached generations).
    """

    predictions: list[Prediction]
    retrieval_s: list[float]
    total_s: list[float]
    wall_s: float = 0.0


def answer_prompt(question: str, contexts: Sequence[Chunk]) -> str:
    """The generation prompt: numbered contexts, then the question.

    >>> print(answer_prompt("Why?", [Chunk("a", "Because.")]))  # doctest: +NORMALIZE_WHITESPACE
    Answer the question in one short sentence using only the context. If the context does not
    contain the answer, reply exactly: I don't know.
    <BLANKLINE>
    Context:
    [1] Because.
    <BLANKLINE>
    Question: Why?
    Answer:
    """
    listed = "\n".join(f"[{i}] {c.text.strip()}" for i, c in enumerate(contexts, start=1))
    return ("Answer the question in one short sentence using only the context. If the context "
            "does not contain the answer, reply exactly: I don't know.\n\n"
            f"Context:\n{listed}\n\nQuestion: {question}\nAnswer:")


@dataclass
class Workspace:
    """Corpus, models and memoised chunks/embeddings/indexes shared by a sweep's cells.

    Args:
        corpus: the passages to index.
        embedder: the embedder (wrap it in a disk cache for sharing across runs).
        llm: the generation (and reranking, grading) model; None when not generating.
        shared: False recomputes chunks, embeddings and indexes for every cell.
        max_tokens: generation budget per answer.
        seed: sampling seed (part of the generation cache key).
        rerank_fetch: candidates fetched per kept chunk when reranking.
    """

    corpus: Sequence[Passage]
    embedder: Embedder
    llm: LLM | None = None
    shared: bool = True
    max_tokens: int = 48
    seed: int = 0
    rerank_fetch: int = 3
    _chunks: dict[str, list[Chunk]] = field(default_factory=dict, repr=False)
    _vectors: dict[str, Any] = field(default_factory=dict, repr=False)
    _indexes: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)
    num_builds: dict[str, int] = field(default_factory=lambda: {"chunk": 0, "embed": 0,
                                                                "index": 0})

    def _memo(self, table: dict[Any, Any], key: Any, kind: str, build: Any) -> Any:
        if self.shared and key in table:
            return table[key]
        self.num_builds[kind] += 1
        value = build()
        if self.shared:
            table[key] = value
        return value

    def chunks(self, spec: str) -> list[Chunk]:
        """The corpus split by ``spec`` (once per spec when shared)."""
        return self._memo(self._chunks, spec, "chunk",  # type: ignore[no-any-return]
                          lambda: comp.chunk_corpus(self.corpus, spec, self.embedder))

    def vectors(self, spec: str, chunks: list[Chunk]) -> Any:
        """The chunks' embeddings (uncached embedder when not shared)."""
        embedder = self.embedder if self.shared else getattr(self.embedder, "inner", self.embedder)
        return self._memo(self._vectors, spec, "embed",
                          lambda: embedder.embed([c.text for c in chunks]))

    def retriever(self, cell: CellConfig) -> Any:
        """The cell's retriever over its chunking; indexes built once per (chunking, store)."""
        spec = cell.chunk_spec
        chunks = self.chunks(spec)
        parts: dict[str, Any] = {}
        if cell.retrieval in ("dense", "hybrid"):
            vectors = self.vectors(spec, chunks)
            parts["dense"] = self._memo(
                self._indexes, (spec, cell.store), "index",
                lambda: comp.dense_retriever(cell.store, chunks, vectors, self.embedder))
        if cell.retrieval in ("bm25", "hybrid"):
            parts["bm25"] = self._memo(self._indexes, (spec, "bm25"), "index",
                                       lambda: comp.bm25_retriever(chunks))
        if cell.retrieval == "hybrid":
            return comp.hybrid_retriever([parts["dense"], parts["bm25"]])
        return parts[cell.retrieval]

    def sampling(self, cell: CellConfig) -> SamplingParams:
        """Generation parameters of a cell."""
        return SamplingParams(max_tokens=self.max_tokens, temperature=cell.temperature,
                              seed=self.seed, stop=("\n\n",))


def _retrieve(ws: Workspace, cell: CellConfig, retriever: Any, question: str) -> list[Hit]:
    fetch = cell.top_k * ws.rerank_fetch if cell.rerank else cell.top_k
    hits = list(retriever.retrieve(question, k=fetch))
    if cell.rerank:
        if ws.llm is None:
            raise ConfigError("reranking needs an LLM; give the workspace llm=")
        hits = list(comp.reranker(ws.llm).rerank(question, hits, top_k=cell.top_k))
    return hits[: cell.top_k]


def run_cell(ws: Workspace, cell: CellConfig, examples: Sequence[Example],
             generate: bool = True) -> CellOutput:
    """Run one cell over ``examples``: retrieve (and rerank / correct), then generate in a batch.

    Without ``generate`` (or without an LLM) the answers are empty and only retrieval is
    timed; judge-free retrieval metrics still apply.
    """
    start = time.perf_counter()
    retriever = ws.retriever(cell)
    contexts, retrieval_s = [], []
    if cell.crag:
        from ragloom.evals.crag import corrective_contexts

        if ws.llm is None:
            raise ConfigError("corrective RAG needs an LLM; give the workspace llm=")
        for ex in examples:
            t = time.perf_counter()
            contexts.append(corrective_contexts(
                ex.question, lambda q: _retrieve(ws, cell, retriever, q), ws.llm, k=cell.top_k))
            retrieval_s.append(time.perf_counter() - t)
    else:
        for ex in examples:
            t = time.perf_counter()
            contexts.append([h.chunk for h in _retrieve(ws, cell, retriever, ex.question)])
            retrieval_s.append(time.perf_counter() - t)
    answers, gen_s = [""] * len(examples), [0.0] * len(examples)
    if generate and ws.llm is not None:
        prompts = [answer_prompt(ex.question, ctx) for ex, ctx in zip(examples, contexts,
                                                                      strict=True)]
        t = time.perf_counter()
        done = ws.llm.generate(prompts, ws.sampling(cell))
        each = (time.perf_counter() - t) / len(prompts)
        answers = [c.text.strip() for c in done]
        # a CachedLLM reports what each completion originally took, cache hit or not
        gen_s = list(getattr(ws.llm, "last_elapsed", None) or [each] * len(prompts))
    preds = [Prediction(answer=a, contexts=tuple(c)) for a, c in zip(answers, contexts,
                                                                    strict=True)]
    total = [r + g for r, g in zip(retrieval_s, gen_s, strict=True)]
    return CellOutput(preds, retrieval_s, total, time.perf_counter() - start)


def restrict_corpus(data: EvalSet, examples: Sequence[Example], max_docs: int | None
                    ) -> list[Passage]:
    """The gold passages of ``examples`` first, then distractors in corpus order, up to
    ``max_docs`` passages (all of the corpus when None)."""
    if max_docs is None:
        return list(data.corpus)
    gold = {g for ex in examples for g in ex.gold_ids}
    picked = [p for p in data.corpus if p.id in gold]
    rest = [p for p in data.corpus if p.id not in gold]
    return picked + rest[: max(max_docs - len(picked), 0)]
