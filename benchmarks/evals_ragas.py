"""Benchmark: agreement of ragloom's judged metrics with ragas, same judge LLM, same samples.

ragas is NOT a ragloom dependency: installed into the project it would pull
langchain-community 0.4 (which ragas 0.4.3 cannot import: it still imports
``langchain_community.chat_models.vertexai``) and downgrade openai 3.x to 1.109. This script
therefore loads ragas from a separate folder (``--ragas-site``, e.g. made with
``pip install --target DIR ragas 'langchain-community==0.3.31'``) placed *after* the
project's site-packages, so the project's own packages win.

Samples: COVID-QA questions; contexts from dense Faiss retrieval over 128-token chunks (top
3); answers from the packaged Qwen2.5-0.5B (llama.cpp, 32 tokens). Both ragloom and ragas
judge with that same model (ragas through ``RagloomChatModel``), each through its own
completion cache; ``judge_calls`` counts the prompts each asked for (cache hits included, so
``--workdir`` reruns report the same figure). Metrics:
faithfulness and context recall. Reports Spearman's rho per metric over the samples where
both are defined.

Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path


def make_samples(n, root):
    from ragloom.evals import CellConfig, Workspace, run_cell
    from ragloom.evals.runner import make_embedder, make_llm, pick_examples
    from ragloom.evals.sweep import SweepConfig

    config = SweepConfig(dataset="covid_qa", num_questions=n, max_docs=3, max_tokens=32)
    examples, corpus = pick_examples(config)
    llm = make_llm(config.model)
    ws = Workspace(corpus, make_embedder("minilm"), llm, max_tokens=32)
    cell = CellConfig(chunker="fixed_tokens", chunk_size=128, chunk_overlap=0, top_k=3)
    return examples, run_cell(ws, cell, examples).predictions, llm.llm


def ragloom_scores(examples, preds, model, root):
    from ragloom.evals import ContextRecall, Faithfulness, Judge, evaluate

    judge = Judge(model, cache_path=root / "ragloom_judge.sqlite")
    start = time.perf_counter()
    result = evaluate(examples, preds, [Faithfulness(judge), ContextRecall(judge)])
    scores = {name: [row[name].score for row in result.rows]
              for name in ("faithfulness", "context_recall")}
    for ex, row in zip(examples, result.rows, strict=True):
        print(ex.id, {name: row[name].explanation for name in scores})
    prompts = judge.cached.num_calls + judge.cached.num_hits  # asked for, cached or not
    return scores, prompts, time.perf_counter() - start


def ragas_scores(examples, preds, model, root):
    from ragas import EvaluationDataset, evaluate
    from ragas.llms import LangchainLLMWrapper
    from ragas.metrics import Faithfulness, LLMContextRecall
    from ragas.run_config import RunConfig

    from ragloom.evals.cache import CachedLLM, CompletionCache
    from ragloom.runtime.langchain import RagloomChatModel

    counted = CachedLLM(model, CompletionCache(root / "ragas_judge.sqlite"))
    wrapper = LangchainLLMWrapper(RagloomChatModel(llm=counted, max_tokens=512))
    pairs = zip(examples, preds, strict=True)
    data = EvaluationDataset.from_list([
        {"user_input": ex.question, "retrieved_contexts": [c.text for c in p.contexts],
         "response": p.answer, "reference": ex.answers[0]} for ex, p in pairs])
    start = time.perf_counter()
    result = evaluate(data, metrics=[Faithfulness(llm=wrapper), LLMContextRecall(llm=wrapper)],
                      llm=wrapper, run_config=RunConfig(max_workers=1, timeout=900),
                      show_progress=False, raise_exceptions=False)
    frame = result.to_pandas()
    scores = {"faithfulness": [float(x) for x in frame["faithfulness"]],
              "context_recall": [float(x) for x in frame["context_recall"]]}
    return scores, counted.num_calls + counted.num_hits, time.perf_counter() - start


def spearman(a, b):
    from scipy.stats import spearmanr

    pairs = [(x, y) for x, y in zip(a, b, strict=True) if not (math.isnan(x) or math.isnan(y))]
    if len(pairs) < 3:
        return {"rho": None, "n": len(pairs)}
    rho = spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic
    return {"rho": None if math.isnan(rho) else round(float(rho), 3), "n": len(pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 samples instead of 10")
    parser.add_argument("--ragas-site", default=os.environ.get("RAGAS_SITE", "/tmp/ragas_site"))
    parser.add_argument("--workdir", help="reuse this folder's judge caches (default: new)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    sys.path.append(args.ragas_site)  # after site-packages: the project's packages win
    try:
        import ragas
    except Exception as exc:  # report why instead of failing
        print(json.dumps({"ragas": None, "reason": f"ragas not importable: {exc!r}"}))
        return
    root = Path(args.workdir or tempfile.mkdtemp(prefix="ragloom-bench-ragas-"))
    os.environ.setdefault("RAGLOOM_CACHE_DIR", str(root / "cache"))
    examples, preds, model = make_samples(4 if args.quick else 10, root)
    ours, our_calls, our_s = ragloom_scores(examples, preds, model, root)
    theirs, their_calls, their_s = ragas_scores(examples, preds, model, root)
    for i, (ex, p) in enumerate(zip(examples, preds, strict=True)):
        print(f"{ex.id}: answer={p.answer[:60]!r} ours={[ours[m][i] for m in ours]} "
              f"ragas={[theirs[m][i] for m in theirs]}")
    print(json.dumps({
        "samples": len(examples), "ragas_version": ragas.__version__,
        "judge_model": getattr(model, "model_name", "?"),
        "spearman": {m: spearman(ours[m], theirs[m]) for m in ours},
        "judge_calls": {"ragloom": our_calls, "ragas": their_calls},
        "judge_s": {"ragloom": round(our_s, 1), "ragas": round(their_s, 1)},
        "ours": ours, "ragas": theirs}))


if __name__ == "__main__":
    main()
