"""Planners benchmark: tool routing (MetaTool, BFCL v4) and multi-hop QA (HotpotQA, MuSiQue).

Same model, same tools, same questions for every design:

* Routing — REAPER-style one-call planner vs the classifier router vs ReAct. MetaTool has 199
  tools; a 0.5B model cannot read 199 descriptions, so the planner and ReAct see a shortlist of
  the ``--shortlist`` tools most similar to the query (MiniLM embeddings); the router ranks all
  of them. BFCL cases bring their own 2-4 candidate functions. Figures: tool-selection accuracy,
  argument accuracy (BFCL's accepted values), plan validity, latency per query.
* Multi-hop QA — LLMCompiler agent vs ReAct over a dense index (Faiss + MiniLM) of the corpus:
  exact match, token F1, end-to-end latency; HotpotQA comparison questions are the
  parallel-friendly ones.

Usage: ``python benchmarks/planners.py [--quick] [--model NAME] [--only routing|qa]``; the last
line is JSON. Every figure comes from real model calls, so run time is bound by the LLM.
``--quick`` (2 routing cases, 1 question) runs SmolLM2-135M by default: 28 s on 2 idle cores, a
smoke test whose figures mean little (the 135M model rarely writes a valid plan). With
``--quick --model qwen2.5-coder-0.5b-instruct`` it took 78 s on idle cores; the full run on the
default Qwen model takes about 20-30 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _planners_data import (  # noqa: E402
    Case,
    bfcl,
    metatool_multi,
    metatool_single,
    schema_function,
    score_calls,
)

from ragloom._config import data_dir  # noqa: E402

SIZES: dict[str, dict[str, Any]] = {
    "quick": {"metatool": 1, "metatool_multi": 0, "bfcl": 1, "categories": ("multiple",),
              "comparison": 1, "bridge": 0, "musique": 0, "react_steps": 3},
    "full": {"metatool": 8, "metatool_multi": 4, "bfcl": 3,
             "categories": ("multiple", "parallel_multiple", "irrelevance"),
             "comparison": 6, "bridge": 2, "musique": 2, "react_steps": 3},
}  # fmt: skip


def tools_for(case: Case, names: list[str], descriptions: dict[str, str]) -> list[Any]:
    """ragloom Tools for a case: BFCL functions by schema, MetaTool tools taking a query."""
    from ragloom.tools import Tool

    query_schema = {"properties": {"query": {"type": "string"}}, "required": ["query"]}
    out = []
    for name in names:
        schema = case.schemas.get(name, query_schema)
        fn = schema_function(name, descriptions[name], schema)
        out.append(Tool.from_function(fn, name=name, description=descriptions[name]))
    return out


def task_calls(text: str, registry: Any) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
    """The tool calls a plan text makes and whether the plan is valid.

    Valid: it parses and validates against the tools (known tools, arguments that fit their
    schemas, references only to earlier tasks). A missing final ``join()`` is tolerated, as
    the agent tolerates it. Calls are scored with the arguments the tool would receive
    (validated by its schema, e.g. ``"5"`` -> ``5`` for an integer), as ReAct's are by
    LangChain.
    """
    from ragloom.errors import PlanError, ToolError
    from ragloom.plan_parser import parse_plan

    try:
        plan = parse_plan(text, registry)
        plan.validate(registry)
    except PlanError:
        return [], False
    calls = []
    for task in plan:
        if task.is_join:
            continue
        try:  # the arguments the tool receives (schema-coerced, as in ReAct)
            args = registry.get(task.tool).validate_args(dict(task.args))
        except ToolError:  # a "$N" argument whose type is known only at run time
            args = dict(task.args)
        calls.append((task.tool, {k: v for k, v in args.items() if v is not None}))
    return calls, True


async def route_reaper(llm: Any, case: Case, registry: Any) -> dict[str, Any]:
    from ragloom.planners.llmcompiler import LLMCompilerPlanner
    from ragloom.planners.prompts import REAPER_SYSTEM

    planner = LLMCompilerPlanner(llm, system=REAPER_SYSTEM, max_tokens=120)
    t0 = time.perf_counter()
    text = "".join([d async for d in planner.astream(case.question, registry)])
    latency = time.perf_counter() - t0
    calls, valid = task_calls(text, registry)
    return {"calls": calls, "valid": valid, "latency": latency}


async def route_react(llm: Any, case: Case, registry: Any, steps: int) -> dict[str, Any]:
    from ragloom.planners.react import ReactAgent

    agent = ReactAgent(llm, registry, max_steps=steps, max_tokens=120)
    t0 = time.perf_counter()
    result = await agent.ainvoke(case.question)
    latency = time.perf_counter() - t0
    calls = [(o.tool, dict(o.args)) for _, o in sorted(result.observations.items())]
    return {"calls": calls, "valid": True, "latency": latency}


def route_router(router: Any, case: Case) -> dict[str, Any]:
    t0 = time.perf_counter()
    name = router.route_name(case.question)
    return {"calls": [(name, {})], "valid": True, "latency": time.perf_counter() - t0}


async def routing(llm: Any, embedder: Any, sizes: dict[str, Any], shortlist: int) -> dict:
    from ragloom.planners.router import ClassifierRouter
    from ragloom.tools import ToolRegistry

    root_mt, root_bf = data_dir() / "metatool_toole", data_dir() / "bfcl_v4_from_bfcl_eval_wheel"
    suites: list[tuple[str, list[Case], dict[str, str]]] = []
    single, all_tools = metatool_single(root_mt, sizes["metatool"])
    suites.append(("metatool", single, all_tools))
    if sizes["metatool_multi"]:
        multi, big = metatool_multi(root_mt, sizes["metatool_multi"])
        suites.append(("metatool_multi", multi, big))
    for category in sizes["categories"]:
        for case in bfcl(root_bf, category, sizes["bfcl"]):
            suites.append((f"bfcl_{category}", [case], case.tools))
    rows = []
    for suite, cases, descriptions in suites:
        router = ClassifierRouter.from_descriptions(descriptions, embedder)
        for case in cases:
            names = (
                router.ranked(case.question, shortlist)
                if len(descriptions) > shortlist
                else list(descriptions)
            )
            registry = ToolRegistry(tools_for(case, names, descriptions))
            outcome = {
                "reaper": await route_reaper(llm, case, registry),
                "react": await route_react(llm, case, registry, sizes["react_steps"]),
                "router": route_router(router, case),
            }
            for system, out in outcome.items():
                tool_ok, arg_ok = score_calls(out["calls"], case)
                rows.append(
                    {
                        "suite": suite,
                        "system": system,
                        "tool_ok": tool_ok,
                        "arg_ok": arg_ok,
                        **out,
                        "gold": case.gold,
                    }
                )
            print(
                json.dumps(
                    {"case": case.id, **{s: o["calls"] for s, o in outcome.items()}}, default=str
                ),
                flush=True,
            )
    return summarize_routing(rows)


def summarize_routing(rows: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for system in ("reaper", "router", "react"):
        mine = [r for r in rows if r["system"] == system]
        out[f"{system}_tool_acc"] = _mean(r["tool_ok"] for r in mine)
        out[f"{system}_latency_s"] = _mean(r["latency"] for r in mine)
        scored = [r for r in mine if r["suite"].startswith("bfcl")]
        out[f"{system}_arg_acc"] = _mean(r["arg_ok"] for r in scored)
        for suite in sorted({r["suite"] for r in mine}):
            out[f"{system}_{suite}_tool_acc"] = _mean(
                r["tool_ok"] for r in mine if r["suite"] == suite
            )
    out["plan_valid_rate"] = _mean(r["valid"] for r in rows if r["system"] == "reaper")
    out["routing_cases"] = len(rows) // 3
    return out


def _mean(values: Any) -> float | None:
    items = [float(v) for v in values]
    return round(statistics.fmean(items), 4) if items else None


REACT_EXAMPLES = (
    "Example. Question: Which river is longer, the Rhine or the Elbe?\n"
    '{"tool_calls": [{"name": "search", "arguments": {"query": "Rhine river length"}}]}\n'
    "Result of search: The Rhine is 1,230 km long.\n"
    '{"tool_calls": [{"name": "search", "arguments": {"query": "Elbe river length"}}]}\n'
    "Result of search: The Elbe is 1,094 km long.\nthe Rhine",
)


def qa_questions(sizes: dict[str, Any]) -> tuple[list[tuple[str, Any]], list[Any]]:
    """(kind, example) pairs and the passages to index (the full corpora in a full run)."""
    from ragloom.evals.datasets import load_hotpotqa, load_musique

    hotpot, musique = load_hotpotqa(), load_musique()
    raw = json.loads(
        (data_dir() / "hipporag_hotpotqa_musique_train100" / "hotpotqa_train.json").read_text()
    )
    kinds = {item["_id"]: item["type"] for item in raw}
    comparison = [e for e in hotpot.examples if kinds[e.id] == "comparison"][: sizes["comparison"]]
    bridge = [e for e in hotpot.examples if kinds[e.id] == "bridge"][: sizes["bridge"]]
    chosen = [("comparison", e) for e in comparison] + [("bridge", e) for e in bridge]
    chosen += [("musique", e) for e in musique.examples[: sizes["musique"]]]
    corpus = [*hotpot.corpus, *musique.corpus]
    # the chosen questions' supporting paragraphs plus distractors from the same corpora
    # (embedding all 2,884 passages takes minutes on 2 shared cores)
    gold = {g for _, e in chosen for g in e.gold_ids}
    others = [p for p in corpus if p.id not in gold]
    corpus = [p for p in corpus if p.id in gold] + others[: 40 if len(chosen) <= 2 else 300]
    return chosen, corpus


def build_search(corpus: list[Any], embedder: Any, k: int = 3) -> Any:
    from ragloom.retrievers import DenseRetriever, FaissStore
    from ragloom.retrievers._types import Chunk  # noqa: F401  (hits carry chunks)
    from ragloom.tools import Tool

    texts = [f"{p.title}: {p.text}" if p.title else p.text for p in corpus]
    store = FaissStore(embedder.dim)
    store.add([p.id for p in corpus], embedder.embed(texts), documents=texts)
    retriever = DenseRetriever(store, embedder)

    def search(query: str) -> list[Any]:
        """Search Wikipedia paragraphs; returns the best matching passages."""
        return retriever.retrieve(query, k=k)

    return Tool.from_function(search, name="search", timeout=60)


async def qa(llm: Any, embedder: Any, sizes: dict[str, Any]) -> dict[str, Any]:
    from ragloom.agent import Agent
    from ragloom.evals import Prediction
    from ragloom.evals.classic import exact_match, token_f1
    from ragloom.planners.llmcompiler import LLMCompilerPlanner
    from ragloom.planners.prompts import MULTIHOP_EXAMPLES
    from ragloom.planners.react import ReactAgent

    chosen, corpus = qa_questions(sizes)
    t0 = time.perf_counter()
    search = build_search(corpus, embedder)
    index_s = time.perf_counter() - t0
    planner = LLMCompilerPlanner(llm, examples=MULTIHOP_EXAMPLES, max_tokens=160)
    systems = {
        "compiler": Agent(llm, [search], planner=planner, max_replans=1),
        "react": ReactAgent(
            llm, [search], max_steps=sizes["react_steps"], examples=REACT_EXAMPLES, max_tokens=160
        ),
    }
    rows = []
    for kind, example in chosen:
        for name, system in systems.items():
            t = time.perf_counter()
            result = await system.ainvoke(example.question)
            latency = time.perf_counter() - t
            pred = Prediction(answer=result.answer)
            rows.append(
                {
                    "system": name,
                    "kind": kind,
                    "latency": latency,
                    "em": exact_match(example, pred).score,
                    "f1": token_f1(example, pred).score,
                    "calls": len(result.observations),
                }
            )
            print(
                json.dumps(
                    {
                        "q": example.question,
                        "system": name,
                        "answer": result.answer,
                        "gold": example.answers[0],
                        **rows[-1],
                    }
                ),
                flush=True,
            )
    return summarize_qa(rows, index_s, len(corpus))


def summarize_qa(rows: list[dict], index_s: float, n_passages: int) -> dict[str, Any]:
    out: dict[str, Any] = {"qa_passages": n_passages, "qa_index_s": round(index_s, 2)}
    for name in ("compiler", "react"):
        mine = [r for r in rows if r["system"] == name]
        out[f"{name}_em"] = _mean(r["em"] for r in mine)
        out[f"{name}_f1"] = _mean(r["f1"] for r in mine)
        out[f"{name}_latency_median_s"] = _median(r["latency"] for r in mine)
        out[f"{name}_parallel_latency_median_s"] = _median(
            r["latency"] for r in mine if r["kind"] == "comparison"
        )
        out[f"{name}_parallel_f1"] = _mean(r["f1"] for r in mine if r["kind"] == "comparison")
        out[f"{name}_tool_calls_mean"] = _mean(r["calls"] for r in mine)
    c, r = out["compiler_parallel_latency_median_s"], out["react_parallel_latency_median_s"]
    out["react_over_compiler_latency"] = round(r / c, 3) if c and r else None
    c, r = out["compiler_latency_median_s"], out["react_latency_median_s"]
    out["react_over_compiler_latency_all"] = round(r / c, 3) if c and r else None
    out["qa_questions"] = len(rows) // 2
    return out


def _median(values: Any) -> float | None:
    items = [float(v) for v in values]
    return round(statistics.median(items), 3) if items else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run (< 1 minute)")
    parser.add_argument("--model", default=None, help="model for load_llm (default: embedded)")
    parser.add_argument("--shortlist", type=int, default=5, help="MetaTool candidates per query")
    parser.add_argument("--only", choices=("routing", "qa"), help="run one half only")
    args = parser.parse_args()
    from ragloom.retrievers import default_embedder
    from ragloom.runtime import load_llm

    started = time.perf_counter()
    # --quick must finish in about a minute on 2 cores: the 135M model unless told otherwise
    model = args.model or ("smollm2-135m-instruct" if args.quick else None)
    llm = load_llm(model) if model else load_llm()
    embedder = default_embedder()
    sizes = SIZES["quick" if args.quick else "full"]
    figures: dict[str, Any] = {
        "model": llm.model_name,
        "quick": args.quick,
        "shortlist": args.shortlist,
    }
    if args.only != "qa":
        figures |= asyncio.run(routing(llm, embedder, sizes, args.shortlist))
    if args.only != "routing":
        figures |= asyncio.run(qa(llm, embedder, sizes))
    figures["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
