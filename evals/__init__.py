"""ragloom.evals: RAG metrics (classic and judged), data set loaders, sweeps and reports.

Everything is exported lazily, so ``import ragloom.evals`` loads no model and no heavy library.
"""

from __future__ import annotations

from ragloom._lazy import lazy_getattr

# public name -> module that defines it (imported on first use, so importing stays light).
_LAZY: dict[str, str] = {
    "AnswerCorrectness": "ragloom.evals.answer_metrics",
    "AnswerRelevancy": "ragloom.evals.answer_metrics",
    "AnswerSimilarity": "ragloom.evals.answer_metrics",
    "Ask": "ragloom.evals.judge",
    "CachedLLM": "ragloom.evals.cache",
    "CellConfig": "ragloom.evals.pipeline",
    "CellOutput": "ragloom.evals.pipeline",
    "CellRecord": "ragloom.evals.results",
    "CompletionCache": "ragloom.evals.cache",
    "ContextPrecision": "ragloom.evals.judged",
    "ContextRecall": "ragloom.evals.judged",
    "CragState": "ragloom.evals.crag",
    "DATASETS": "ragloom.evals.datasets",
    "EvalResult": "ragloom.evals.scoring",
    "EvalSet": "ragloom.evals._types",
    "Example": "ragloom.evals._types",
    "Faithfulness": "ragloom.evals.judged",
    "GoldSpan": "ragloom.evals._types",
    "Judge": "ragloom.evals.judge",
    "JudgedMetric": "ragloom.evals.judged",
    "Metric": "ragloom.evals._types",
    "MetricResult": "ragloom.evals._types",
    "Passage": "ragloom.evals._types",
    "Prediction": "ragloom.evals._types",
    "Reply": "ragloom.evals.judge",
    "ResultStore": "ragloom.evals.results",
    "SweepConfig": "ragloom.evals.sweep",
    "Workspace": "ragloom.evals.pipeline",
    "answer_prompt": "ragloom.evals.pipeline",
    "axis_effects": "ragloom.evals.report",
    "best_cell": "ragloom.evals.report",
    "build_crag": "ragloom.evals.crag",
    "corrective_contexts": "ragloom.evals.crag",
    "evaluate": "ragloom.evals.scoring",
    "exact_match": "ragloom.evals.classic",
    "gold_matches": "ragloom.evals.classic",
    "is_abstention": "ragloom.evals.classic",
    "load_covid_qa": "ragloom.evals.datasets",
    "load_dataset": "ragloom.evals.datasets",
    "load_hotpotqa": "ragloom.evals.datasets",
    "load_model": "ragloom.evals.runner",
    "load_musique": "ragloom.evals.datasets",
    "load_pubmedqa": "ragloom.evals.datasets",
    "load_run": "ragloom.evals.report",
    "load_squad2": "ragloom.evals.datasets",
    "make_embedder": "ragloom.evals.runner",
    "make_llm": "ragloom.evals.runner",
    "metric_name": "ragloom.evals.scoring",
    "mrr": "ragloom.evals.classic",
    "ndcg": "ragloom.evals.classic",
    "normalize_answer": "ragloom.evals.classic",
    "pareto_front": "ragloom.evals.report",
    "parse_json_reply": "ragloom.evals.judge",
    "pick_examples": "ragloom.evals.runner",
    "precision_weighted": "ragloom.evals.judged",
    "quality_metric": "ragloom.evals.report",
    "recall_at_k": "ragloom.evals.classic",
    "restrict_corpus": "ragloom.evals.pipeline",
    "run_cell": "ragloom.evals.pipeline",
    "run_programs": "ragloom.evals.judged",
    "run_sweep": "ragloom.evals.sweep",
    "score_cell": "ragloom.evals.runner",
    "swept_axes": "ragloom.evals.report",
    "token_f1": "ragloom.evals.classic",
    "write_report": "ragloom.evals.report",
}

__all__ = sorted(
    [
        *_LAZY,
    ]
)


__getattr__ = lazy_getattr(__name__, _LAZY)
