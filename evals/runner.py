"""The pieces a sweep worker assembles: questions, embedder, LLM, and one scored cell.

Shared by the local executor and the Ray workers (which rebuild everything from the
:class:`~ragloom.evals.sweep.SweepConfig`, since models do not travel between processes).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ragloom._config import cache_dir
from ragloom.errors import ConfigError
from ragloom.evals._types import Example, Passage
from ragloom.evals.cache import CachedLLM, CompletionCache
from ragloom.evals.datasets import load_dataset
from ragloom.evals.pipeline import CellConfig, Workspace, restrict_corpus, run_cell
from ragloom.evals.results import CellRecord, now
from ragloom.evals.scoring import evaluate, metric_name

if TYPE_CHECKING:
    from ragloom.evals.sweep import SweepConfig

__all__ = ["load_model", "make_embedder", "make_llm", "pick_examples", "score_cell"]


def pick_examples(config: SweepConfig) -> tuple[list[Example], list[Passage]]:
    """``num_questions`` answerable examples drawn with ``seed``, and the corpus to index.

    With ``max_docs``, questions are taken in seeded order only while their gold passages
    fit in the budget, and the corpus is their gold passages plus distractors (corpus order)
    up to ``max_docs``. With ``max_doc_chars``, passages are cut to that many characters and
    only questions whose answer spans lie inside are drawn.
    """
    data = load_dataset(config.dataset)
    limit = config.max_doc_chars
    pool = [e for e in data.examples if e.answerable
            and (limit is None or all(s.end <= limit for s in e.gold_spans))]
    random.Random(config.seed).shuffle(pool)
    chosen: list[Example] = []
    gold: set[str] = set()
    for ex in pool:
        if len(chosen) == config.num_questions:
            break
        if config.max_docs is None or len(gold | set(ex.gold_ids)) <= config.max_docs:
            chosen.append(ex)
            gold |= set(ex.gold_ids)
    if len(chosen) < config.num_questions:
        raise ConfigError(f"{config.dataset}: only {len(chosen)} questions fit max_docs="
                          f"{config.max_docs}, max_doc_chars={limit}; "
                          f"{config.num_questions} asked for")
    corpus = restrict_corpus(data, chosen, config.max_docs)
    if limit is not None:
        corpus = [dataclasses.replace(p, text=p.text[:limit]) for p in corpus]
    return chosen, corpus


def make_embedder(name: str) -> Any:
    """``"minilm"``: the default, disk-cached MiniLM; ``"hash"``: a disk-cached HashEmbedder."""
    if name == "minilm":
        from ragloom.retrievers.embeddings import default_embedder

        return default_embedder()
    if name == "hash":
        from ragloom.retrievers.base import HashEmbedder
        from ragloom.retrievers.embeddings import CachedEmbedder

        return CachedEmbedder(HashEmbedder(256))
    raise ConfigError(f"unknown embedder {name!r}; use 'minilm' or 'hash'")


def load_model(model: str) -> Any:
    """The runtime's ``load_llm(model=...)``."""
    from ragloom import runtime

    return runtime.load_llm(model=model)  # type: ignore[attr-defined]


def make_llm(model: str) -> CachedLLM:
    """The generation model behind the generation cache (``cache_dir("generations")``)."""
    return CachedLLM(load_model(model),
                     CompletionCache(cache_dir("generations") / "generations.sqlite"))


def score_cell(
    ws: Workspace, cell: CellConfig, examples: Sequence[Example], metrics: Sequence[Any], *,
    generate: bool,
) -> tuple[CellRecord, list[dict[str, Any]]]:
    """Run one cell and score it: the cell's record and its per-example rows."""
    out = run_cell(ws, cell, examples, generate=generate)
    result = evaluate(examples, out.predictions, metrics)
    names = [metric_name(m) for m in metrics]
    rows = [{"example_id": ex.id, "answer": pred.answer,
             "context_ids": [c.id for c in pred.contexts],
             "scores": {n: row[n].score for n in names},
             "explanations": {n: row[n].explanation for n in names},
             "retrieval_s": r, "total_s": t}
            for ex, pred, row, r, t in zip(examples, out.predictions, result.rows,
                                           out.retrieval_s, out.total_s, strict=True)]
    pid, finished_at = now()
    n = max(len(examples), 1)
    record = CellRecord(cell.cell_id, cell.params(), dict(result.means),
                        sum(out.retrieval_s) / n, sum(out.total_s) / n, out.wall_s,
                        len(examples), pid, finished_at)
    return record, rows
