"""Benchmark: the ``make demo`` job on each CPU backend, which is fastest, and whether they agree.

``make demo`` (``ragloom demo``) indexes a corpus and runs the planner agent (LLMCompiler plans
over one search tool, then an answerer that cites its chunks) on the backend that
:func:`ragloom.planners.demo.demo_llm` picks from what this benchmark finds. This runs that same
agent (:func:`ragloom.planners.demo.demo_agent`) on the same index and question on

- ``llamacpp``: the cyllama backend with ragloom's prefix-state cache (what ``make demo`` runs
  until the torch engine's weights are converted on the machine),
- ``torch``: the embedded engine, exact (``quantization="auto"``: the GGUF file's weights, the
  float32 model's arithmetic),
- ``torch_q8``: the embedded engine with int8 activations (``"gguf-q8"``, llama.cpp's
  arithmetic),

each with the same threads. Each backend runs the job twice, the backends taking turns: first
with its prefix cache emptied (``cold``), then again (``warm``: the planner's and the answerer's
prompts found in its cache). It prints each run's seconds, plan and answer, and reports
``{backend}_cold_s``/``_warm_s``, whether each backend's plan and answer equal llama.cpp's
(``{backend}_same_plan``/``_same_answer``), and ``fastest``, the backend with the least
cold + warm time. With ``--quick``: one cold run each, the exact engine left out.

Usage: ``python benchmarks/demo_backends.py [--quick] [--threads N] [--model NAME]``; the last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from ragloom._sync import run_sync
from ragloom.planners.demo import DEMO_MODEL, demo_agent, demo_corpus
from ragloom.retrievers.index import build_index
from ragloom.runtime import load_llm
from ragloom.runtime.threads import default_num_threads

BACKENDS: dict[str, dict[str, Any]] = {
    "llamacpp": {"backend": "llamacpp"},
    "torch": {"backend": "torch", "quantization": "auto"},
    "torch_q8": {"backend": "torch", "quantization": "gguf-q8"},
}


def load(name: str, model: str, threads: int) -> Any:
    options = dict(BACKENDS[name])
    backend = options.pop("backend")
    if backend == "llamacpp":
        return load_llm(model, backend, n_threads=threads)
    return load_llm(model, backend, num_threads=threads, **options)


def run_job(llm: Any, retriever: Any, question: str, cold: bool) -> tuple[float, Any]:
    """Seconds and result of one agent run (its prefix cache emptied first when ``cold``)."""
    if cold:
        llm.reset_prefix_cache()
    agent = demo_agent(llm, retriever)
    start = time.perf_counter()
    result = run_sync(agent.ainvoke(question))
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one cold run each, no exact engine")
    parser.add_argument("--threads", type=int, default=0, help="0: the idle cores")
    parser.add_argument("--model", default=DEMO_MODEL)
    args = parser.parse_args()
    threads = args.threads or default_num_threads()
    names = ["llamacpp", "torch_q8"] if args.quick else list(BACKENDS)
    turns = ["cold"] if args.quick else ["cold", "warm"]
    report: dict[str, Any] = {"model": args.model, "threads": threads, "quick": args.quick}

    with tempfile.TemporaryDirectory(prefix="ragloom-bench-demo-") as workdir:
        corpus = demo_corpus(Path(workdir))
        start = time.perf_counter()
        index = build_index(corpus.folder, store="hybrid", chunker="sentences:600", progress=False)
        report["corpus"], report["index_s"] = corpus.name, time.perf_counter() - start
        print(f"index: {corpus.name}, {report['index_s']:.1f} s", flush=True)
        llms = {}
        for name in names:
            start = time.perf_counter()
            llms[name] = load(name, args.model, threads)
            report[f"{name}_load_s"] = time.perf_counter() - start
        results: dict[str, Any] = {}
        for turn in turns:
            for name in names:
                seconds, result = run_job(
                    llms[name], index.retriever, corpus.question, turn == "cold"
                )
                report[f"{name}_{turn}_s"] = seconds
                results[name] = result
                plan = " | ".join(result.plans[0].strip().splitlines())
                print(f"{name:9s} {turn}: {seconds:5.1f} s  plan: {plan}", flush=True)
                print(f"{'':9s} answer: {result.answer}", flush=True)

    base = results["llamacpp"]
    for name in names[1:]:
        report[f"{name}_same_plan"] = results[name].plans == base.plans
        report[f"{name}_same_answer"] = results[name].answer == base.answer
    totals = {name: sum(report[f"{name}_{turn}_s"] for turn in turns) for name in names}
    report["fastest"] = min(totals, key=totals.__getitem__)
    for name in names[1:]:
        report[f"{name}_vs_llamacpp"] = totals["llamacpp"] / totals[name]
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()}))


if __name__ == "__main__":
    main()
