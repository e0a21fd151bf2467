"""Benchmark: a 24-cell RAG sweep on COVID-QA, shared work vs every cell recomputing its own.

Runs the same 24 cells twice in one process, each time from a cold embedding cache:
``shared`` (each chunking chunked and embedded once, each (chunking, store) index built once)
and ``naive`` (every cell chunks, embeds and indexes for itself). The MiniLM model is loaded
once, before both, and not counted. Both runs must give identical metrics. Then it prints
the report's best cell and our figures beside the published ones.

The grid: store {faiss, chroma} x retrieval {dense, hybrid} x fixed-token chunk size
{128, 256, 384} x overlap {0, 32}, top-k 4; retrieval metrics from the gold answer spans
(recall@k, MRR, nDCG, context precision) -- no generation in the timed sweep (``--quick``:
8 questions over 2 articles cut to 4,000 characters; default: 20 questions over 8 full
articles). ``--with-llm`` adds a small study with the packaged Qwen2.5-0.5B model
(llama.cpp): reranking on/off and corrective RAG on/off, with short generations.

Last line: one JSON object with cells, shared_s, naive_s, naive_over_shared, best_cell, ...
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

AXES = {"store": ["faiss", "chroma"], "retrieval": ["dense", "hybrid"],
        "chunk_size": [128, 256, 384], "chunk_overlap": [0, 32]}
PUBLISHED = {
    "chroma_vs_faiss_speed": "Chroma ~13% faster than Faiss",
    "faiss_vs_chroma_precision": "Faiss more precise than Chroma",
    "best_chunking": "small fixed-size chunks with little overlap best",
    "rerank_slowdown": "reranking ~5x slower",
    "crag_context_precision": "context precision ~99% with corrective RAG",
}


def _mean(values):
    values = [v for v in values if v == v]
    return statistics.fmean(values) if values else float("nan")


def _by(records, key, value, field):
    return _mean([getattr(r, field) if field.endswith("_s") else r.metrics[field]
                  for r in records if r.params[key] == value])


def _median_retrieval_ms(run_dir, records, store):
    """Median per-question retrieval time over the dense cells of one store (robust to the
    load spikes of a shared machine, unlike the per-cell means)."""
    from ragloom.evals.results import ResultStore

    results = ResultStore(run_dir / "results.sqlite")
    times = [row["retrieval_s"] for r in records
             if r.params["retrieval"] == "dense" and r.params["store"] == store
             for row in results.rows(r.cell_id)]
    return 1000 * statistics.median(times)


def compare_with_published(records, run_dir):
    """Our figures for each published claim, from the dense cells of the sweep."""
    dense = [r for r in records if r.params["retrieval"] == "dense"]
    faiss_ms = _median_retrieval_ms(run_dir, records, "faiss")
    chroma_ms = _median_retrieval_ms(run_dir, records, "chroma")
    chunkings: dict[str, list[float]] = {}
    for r in records:
        key = f"{r.params['chunker']}:{r.params['chunk_size']}:{r.params['chunk_overlap']}"
        chunkings.setdefault(key, []).append(r.metrics["context_precision"])
    ranked = sorted(((_mean(v), k) for k, v in chunkings.items()), reverse=True)
    return {
        "chroma_vs_faiss_speed": {
            "faiss_median_ms": round(faiss_ms, 3), "chroma_median_ms": round(chroma_ms, 3),
            "chroma_time_over_faiss": round(chroma_ms / faiss_ms, 2)},
        "faiss_vs_chroma_precision": {
            s: round(_by(dense, "store", s, "context_precision"), 4) for s in ("faiss", "chroma")},
        "best_chunking": {"by_context_precision": [(k, round(v, 4)) for v, k in ranked]},
    }


def run_timed_sweep(quick, root, embedder):
    from ragloom.evals.sweep import SweepConfig, run_sweep

    settings = dict(dataset="covid_qa", axes=AXES, generate=False,
                    base={"chunker": "fixed_tokens", "top_k": 4},
                    metrics=("recall_at_k", "mrr", "ndcg", "context_precision"))
    if quick:
        settings.update(num_questions=8, max_docs=2, max_doc_chars=4000)
    else:
        settings.update(num_questions=20, max_docs=8)
    config = SweepConfig(**settings)
    timings = {}
    results = {}
    for mode in ("shared", "naive"):  # shared first: naive then finds the queries cached
        start = time.perf_counter()
        results[mode] = run_sweep(config, root / mode, shared=mode == "shared",
                                  embedder=embedder, progress=False)
        timings[mode] = time.perf_counter() - start
        print(f"{mode}: {len(results[mode])} cells in {timings[mode]:.1f}s", flush=True)
    same = ({r.cell_id: r.metrics for r in results["shared"]}
            == {r.cell_id: r.metrics for r in results["naive"]})
    return config, results["shared"], timings, same


def llm_study(root, num_questions):
    """Reranking off/on and corrective RAG off/on with the packaged Qwen2.5-0.5B (llama.cpp).

    One small sweep: dense Faiss retrieval over 128-token chunks without overlap, top-4;
    reranking scores 3 x 4 = 12 candidates per question with the LLM; CRAG grades chunks and
    rewrites the query at most once. Answers are short (24 tokens) to fit 2 shared cores.
    """
    from ragloom.evals.runner import make_llm
    from ragloom.evals.sweep import SweepConfig, run_sweep

    config = SweepConfig(dataset="covid_qa", num_questions=num_questions, max_docs=3,
                         generate=True, max_tokens=24,
                         axes={"rerank": [False, True], "crag": [False, True]},
                         base={"chunker": "fixed_tokens", "chunk_size": 128,
                               "chunk_overlap": 0, "top_k": 4},
                         metrics=("token_f1", "recall_at_k", "ndcg", "context_precision"))
    llm = make_llm(config.model)
    start = time.perf_counter()
    records = run_sweep(config, root / "llm", llm=llm, progress=False)
    cells = {f"rerank={r.params['rerank']},crag={r.params['crag']}": {
        "context_precision": round(r.metrics["context_precision"], 4),
        "ndcg": round(r.metrics["ndcg"], 4), "token_f1": round(r.metrics["token_f1"], 4),
        "retrieval_ms": round(1000 * r.retrieval_s, 1), "total_ms": round(1000 * r.total_s, 1)}
        for r in records}
    plain = cells["rerank=False,crag=False"]
    return {
        "rerank_slowdown": {
            "retrieval_x": round(cells["rerank=True,crag=False"]["retrieval_ms"]
                                 / plain["retrieval_ms"], 1),
            "total_x": round(cells["rerank=True,crag=False"]["total_ms"] / plain["total_ms"], 2),
            "context_precision": [plain["context_precision"],
                                  cells["rerank=True,crag=False"]["context_precision"]]},
        "crag_context_precision": {
            "off": plain["context_precision"],
            "on": cells["rerank=False,crag=True"]["context_precision"],
            "on_with_rerank": cells["rerank=True,crag=True"]["context_precision"]},
        "llm_cells": cells, "llm_questions": num_questions,
        "llm_wall_s": round(time.perf_counter() - start, 1), "llm_calls": llm.num_calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small corpus, < 1 minute")
    parser.add_argument("--with-llm", action="store_true",
                        help="also measure reranking and CRAG with the real model (minutes)")
    parser.add_argument("--llm-questions", type=int, default=6)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    root = Path(tempfile.mkdtemp(prefix="ragloom-bench-sweep-"))
    os.environ["RAGLOOM_CACHE_DIR"] = str(root / "cache")  # cold embedding cache
    import faiss

    # subtle: Faiss's OpenMP search threads spin against each other on a busy 2-core machine
    # (~60 ms per query on 40 vectors vs 0.02 ms single-threaded); one thread suits top-k
    # queries one at a time
    faiss.omp_set_num_threads(1)
    from ragloom.evals.report import write_report
    from ragloom.retrievers.embeddings import CachedEmbedder, SentenceTransformerEmbedder

    start = time.perf_counter()
    embedder = CachedEmbedder(SentenceTransformerEmbedder())
    embedder.inner.embed(["warm up"])
    load_s = time.perf_counter() - start
    config, records, timings, same = run_timed_sweep(args.quick, root, embedder)
    report = write_report(root / "shared")
    ours = compare_with_published(records, root / "shared")
    if args.with_llm:
        ours.update(llm_study(root, args.llm_questions))
    print((root / "shared" / "report.md").read_text())
    for claim, published in PUBLISHED.items():
        print(f"- published: {published}\n  ours: {json.dumps(ours.get(claim, 'not measured'))}")
    print(json.dumps({
        "cells": len(records), "questions": config.num_questions,
        "shared_s": round(timings["shared"], 2), "naive_s": round(timings["naive"], 2),
        "naive_over_shared": round(timings["naive"] / timings["shared"], 2),
        "identical_metrics": same, "model_load_s": round(load_s, 2),
        "best_cell": report["best_cell"], "metric": report["metric"], "ours": ours,
        "report_dir": str(root / "shared")}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
