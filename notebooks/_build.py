"""Write the notebooks in this folder from the cell sources below (outputs stripped).

Run ``python notebooks/_build.py`` after editing a cell here; commit the regenerated
``.ipynb`` files together with this script, so the two never drift apart
(``tests/test_readme.py`` checks that they agree).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

# Shared first code cell: inline plots, and the data folder found from the repository (the
# notebook may run from any working directory, e.g. a temporary one under the test suite).
SETUP = """\
%matplotlib inline
import os
import time
import warnings
from pathlib import Path

import ragloom

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
REPO = Path(ragloom.__file__).resolve().parents[1]
if "RAGLOOM_DATA_DIR" not in os.environ and (REPO.parent / "shared" / "datasets").is_dir():
    os.environ["RAGLOOM_DATA_DIR"] = str(REPO.parent / "shared" / "datasets")
print("ragloom", ragloom.__version__, "| data:", os.environ.get("RAGLOOM_DATA_DIR", "(not set)"))"""

CORPUS = """\
import tempfile

from ragloom.planners import stdlib_corpus
from ragloom.retrievers import build_index

MODULES = ("gzip", "zipfile", "statistics", "heapq", "bisect", "csv", "json", "uuid")
folder = stdlib_corpus(Path(tempfile.mkdtemp(prefix="ragloom-nb-")) / "docs", MODULES)
t0 = time.perf_counter()
index = build_index(folder, store="hybrid", chunker="sentences:600", progress=False)
print(f"{len(index.chunks)} chunks from {len(MODULES)} files, indexed in "
      f"{time.perf_counter() - t0:.1f}s")"""


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(text.strip("\n"))


def code(text: str) -> nbformat.NotebookNode:
    return new_code_cell(text.strip("\n"))


QUICKSTART = [
    md("""
# ragloom quickstart: index a folder, ask a multi-hop question

This notebook indexes a folder of text files, asks a question that needs **two** look-ups,
and shows what the parallel planner agent did: the plan it wrote (as a diagram), when each
task ran (a timeline), and the answer with its sources.

It runs on the embedded model, **Qwen2.5-Coder-0.5B** (4-bit, through llama.cpp, installed
from PyPI), and finishes in about a minute on a laptop CPU. A bigger model served elsewhere
is one line away (`load_llm(..., backend="openai", base_url=...)`); nothing else changes.
"""),
    code(SETUP),
    md("""
## 1. Index a folder

`build_index` loads every supported file (.txt, .md, .html, .json, .jsonl, .pdf) under a
folder, chunks it, embeds the chunks with MiniLM (ONNX, on the CPU) and stores them. `hybrid`
fuses dense (Faiss) and BM25 results with reciprocal-rank fusion. The folder here holds the
docstrings of a few standard-library modules -- a real corpus that exists offline.
"""),
    code(CORPUS),
    code("""
for hit in index.search("compress a file with gzip", k=3):
    print(f"{hit.score:.3f}  {hit.chunk.id:18s} {hit.chunk.text[:70]!r}")"""),
    md("""
## 2. A planner agent on the embedded model

The agent has one tool, `search`, over the index. The LLMCompiler planner writes the whole
plan in one call; the task-fetching unit starts each task the moment its line is parsed, so
independent searches run in parallel, while the plan is still streaming. A joiner then
reads the results and answers; here it is the `CitingAnswerer`, which writes a short answer
citing the chunks it used. (The default `LLMJoiner` may instead ask for another plan, up to
`max_replans` times, and answers in as few words as possible.)

`constrained=True` decodes the plan under a grammar of the plan format, which keeps a
0.5B model on the rails; a bigger model does not need it.
"""),
    code("""
from ragloom import Agent
from ragloom.planners import (MULTIHOP_EXAMPLES, CitingAnswerer, LLMCompilerPlanner,
                              search_tool)
from ragloom.runtime import load_llm

# one more few-shot plan, shaped like the questions we ask (small models copy the shape)
EXAMPLES = (*MULTIHOP_EXAMPLES,
            'Question: Which module writes JSON, and which one opens ZIP archives?\\n'
            '1. search(query="write JSON")\\n2. search(query="open ZIP archives")\\n'
            '3. join()<END_OF_PLAN>')
llm = load_llm()  # the embedded Qwen2.5-Coder-0.5B; load_llm("smollm2") is 4x smaller
search = search_tool(index.retriever, k=2)
planner = LLMCompilerPlanner(llm, examples=EXAMPLES, constrained=True, max_tokens=80)
answerer = CitingAnswerer(llm, max_tokens=80, max_chars=600)  # a sentence citing [chunk ids]
agent = Agent(llm, [search], planner=planner, joiner=answerer, max_replans=0)
print(llm.model_name, "|", search)"""),
    md("""
`agent.astream` yields events as they happen: plan tokens, each task as it is parsed, task
starts and ends, and finally the result. (In a script, `agent.invoke(question)` returns the
result directly; inside Jupyter, whose event loop is already running, use
`await agent.ainvoke(question)` or `astream` as here.)
"""),
    code("""
from rich.console import Console

from ragloom.planners import print_event

QUESTION = ("Which module compresses files in the gzip format, "
            "and which one computes the median of data?")
console = Console()
tasks, result = [], None
t0 = time.perf_counter()
async for event in agent.astream(QUESTION):
    print_event(console, event, t0)
    if event.kind == "task":
        tasks.append(event.data)
    elif event.kind == "result":
        result = event.data
print(f"\\n\\nfinished in {time.perf_counter() - t0:.1f}s")"""),
    md("""
## 3. The plan as a diagram

`Plan.to_mermaid()` gives Mermaid text (GitHub and JupyterLab render it); below it, the same
DAG drawn with networkx. Tasks in the same column have no dependency between them and ran in
parallel; `join` waits for all of them.
"""),
    code("""
from IPython.display import Markdown, display

from ragloom import Plan

plan = Plan(tasks)
print(plan.to_mermaid())
display(Markdown(f"```mermaid\\n{plan.to_mermaid()}\\n```"))"""),
    code("""
import textwrap

import matplotlib.pyplot as plt
import networkx as nx

graph = nx.DiGraph()
for task in plan:
    graph.add_node(task.id, label=textwrap.fill(f"{task.id}. {task.call_text()}", 22))
    graph.add_edges_from((dep, task.id) for dep in task.deps)
    if task.is_join:  # join() waits for every earlier task
        graph.add_edges_from((t.id, task.id) for t in plan if t.id < task.id and not t.deps)
for depth, layer in enumerate(nx.topological_generations(graph)):
    for node in layer:
        graph.nodes[node]["depth"] = depth
depths = set(nx.get_node_attributes(graph, "depth").values())
fig, ax = plt.subplots(figsize=(8, 1.6 + 1.4 * max(1, len(depths))))
if len(graph):
    pos = nx.multipartite_layout(graph, subset_key="depth", align="horizontal")
    pos = {n: (x, -y) for n, (x, y) in pos.items()}
    nx.draw_networkx(graph, pos, ax=ax, labels=nx.get_node_attributes(graph, "label"),
                     node_color="#cfe8ff", node_size=5200, node_shape="s", font_size=7,
                     arrowsize=14)
    ax.margins(x=0.25, y=0.2)  # room for the labels of the outer nodes
ax.set_title(f"plan: {len(plan)} tasks")
ax.axis("off")
plt.show()"""),
    md("""
## 4. The task timeline

`result.trace` holds, for every task, when it was queued, became ready, started and ended.
`Trace.plot()` draws it as a Gantt chart: grey is waiting, green is running (red: failed).
Overlapping green bars ran in parallel. The first search starts when the model has written
the first plan line (the seconds before that are the prompt's prefill and the first
tokens); the second starts the moment its own line has streamed, not when the plan ends.
"""),
    code("""
trace = result.trace
if trace is not None and trace.records:
    for r in trace.records:
        print(f"task {r.task_id} {r.tool:8s} started {r.started:6.2f}s  took {r.duration:.3f}s  ok={r.ok}")
    display(trace.plot())
else:
    print("the plan produced no task this time (a small model sometimes writes only join())")"""),
    md("""
## 5. The answer and its sources

`result.sources` are the ids of the chunks the answer rests on; the index maps them back to
their text and file.
"""),
    code("""
chunks = {c.id: c for c in index.chunks}
print("Q:", QUESTION)
print("A:", result.answer or "(empty)")
print()
for source in result.sources:
    chunk = chunks.get(source)
    text = chunk.text[:110].replace("\\n", " ") if chunk else ""
    print(f"[{source}] {text}...")"""),
    md("""
## What changes with a bigger model

- A 0.5B model plans well with a grammar and a few examples, but its answers are terse and
  sometimes cite a chunk instead of naming the module. With a 7B+ model served by vLLM
  (`load_llm("...", backend="openai", base_url=...)`) the answers read well and you can drop
  `constrained=True` and the examples. `load_llm("smollm2")` (135M) is 4x faster and
  plans, but its answers are unreliable.
- Latency is dominated by the two LLM calls (plan, join); the searches take milliseconds
  and run in parallel. With slow tools (web search, SQL), the parallel plan saves the most.
- Next: `02_planners.ipynb` compares LLMCompiler, REAPER and ReAct on the same questions.
"""),
]

PLANNERS = [
    md("""
# Planners side by side: LLMCompiler vs REAPER vs ReAct

Three ways to answer a question with tools, on the **same model, tools and questions**:

- **LLMCompiler** (`Agent` + `LLMCompilerPlanner`): one LLM call writes a DAG of tool calls;
  independent calls run in parallel; a joiner answers.
- **REAPER** (`Reaper`): one LLM call plans all *retrieval* over named sources; a citing
  answerer writes the answer and reports sources that failed or found nothing.
- **ReAct** (`ReactAgent`, LangChain's `create_agent`): think, call one tool, read the
  result, repeat -- one LLM call per tool call.

We measure latency, whether the answer names what the question asks for, and whether the
right documents were retrieved. It runs on SmolLM2-135M to stay fast; see the end for what
changes with a bigger model.
"""),
    code(SETUP),
    code(CORPUS),
    md("""
## Instruments

To see *where* the time goes, the model and the retriever are wrapped so that every LLM call
and every search records its start and end on one clock. The wrappers change nothing else:
`Timed` is a `BaseLLM` that forwards to the real model, and `TimedRetriever` forwards
`retrieve`.
"""),
    code("""
from ragloom.runtime import BaseLLM, load_llm


class Clock:
    def __init__(self):
        self.reset()

    def reset(self):
        self.t0, self.spans = time.perf_counter(), []

    def record(self, kind, start):
        self.spans.append((kind, start - self.t0, time.perf_counter() - self.t0))


class Timed(BaseLLM):
    \"\"\"Forwards to ``inner`` and records each call's span on ``clock``.\"\"\"

    def __init__(self, inner, clock):
        self.inner, self.clock, self.model_name = inner, clock, inner.model_name

    def render(self, prompt):
        return self.inner.render(prompt)

    def generate(self, prompts, params=None):
        start = time.perf_counter()
        try:
            return self.inner.generate(prompts, params)
        finally:
            self.clock.record("llm", start)

    def _stream(self, prompt, params):
        start = time.perf_counter()
        try:
            yield from self.inner.stream(prompt, params)
        finally:
            self.clock.record("llm", start)


class TimedRetriever:
    def __init__(self, inner, clock):
        self.inner, self.clock = inner, clock

    def retrieve(self, query, k=5, where=None):
        start = time.perf_counter()
        try:
            return self.inner.retrieve(query, k=k, where=where)
        finally:
            self.clock.record("search", start)


clock = Clock()
llm = Timed(load_llm("smollm2"), clock)
retriever = TimedRetriever(index.retriever, clock)"""),
    md("""
## The three systems

All three get the same `search` source (top 2 passages, cut to 300 characters each).
"""),
    code("""
from ragloom import Agent
from ragloom.planners import (MULTIHOP_EXAMPLES, LLMCompilerPlanner, LLMJoiner, Reaper,
                              ReactAgent, source_tool)
from ragloom.retrievers import RetrievalSource

EXAMPLES = (*MULTIHOP_EXAMPLES,
            'Question: Which module writes JSON, and which one opens ZIP archives?\\n'
            '1. search(query="write JSON")\\n2. search(query="open ZIP archives")\\n'
            '3. join()<END_OF_PLAN>')
source = RetrievalSource("search", "Python standard-library documentation.", retriever,
                         k=2, max_chars=300)
systems = {
    "LLMCompiler": Agent(
        llm, [source_tool(source)],
        planner=LLMCompilerPlanner(llm, examples=EXAMPLES, constrained=True, max_tokens=80),
        joiner=LLMJoiner(llm, max_tokens=60), max_replans=0),
    "REAPER": Reaper(llm, [source], constrained=True),
    "ReAct": ReactAgent(llm, [source_tool(source)], max_steps=3),
}"""),
    md("""
## Questions

Each question needs two modules; `gold` names them. *Answer hit* is the fraction of gold
module names the answer mentions; *source hit* the fraction of gold modules among the
retrieved chunks the system cites.
"""),
    code("""
QUESTIONS = [
    ("Which module compresses files in the gzip format, and which one computes the median "
     "of data?", {"gzip", "statistics"}),
    ("Which module keeps a list sorted with bisection, and which one implements a heap "
     "queue?", {"bisect", "heapq"}),
]


def answer_hit(answer, gold):
    return sum(g in answer.lower() for g in gold) / len(gold)


def source_hit(sources, gold):
    found = {s.split(".txt")[0] for s in sources}
    return len(found & gold) / len(gold)


rows, timelines = [], {}
for q, (question, gold) in enumerate(QUESTIONS):
    for name, system in systems.items():
        clock.reset()
        result = await system.ainvoke(question)
        latency = time.perf_counter() - clock.t0
        rows.append({"system": name, "q": q + 1, "latency_s": latency,
                     "llm_calls": sum(k == "llm" for k, *_ in clock.spans),
                     "searches": sum(k == "search" for k, *_ in clock.spans),
                     "answer_hit": answer_hit(result.answer, gold),
                     "source_hit": source_hit(result.sources, gold),
                     "answer": result.answer.strip().replace("\\n", " ")[:60]})
        if q == 0:
            timelines[name] = list(clock.spans)
        print(f"q{q + 1} {name:11s} {latency:6.1f}s  {rows[-1]['answer']!r}")
        for round_ in result.rounds:  # a plan line that failed to parse or validate
            if round_.error:
                print(f"    plan stopped: {round_.error}")"""),
    md("""
## Latency and accuracy, side by side

A "plan stopped" line above means the plan broke off at a bad line (an unknown argument,
say): the tasks before it still ran, the rest did not. The grammar of `constrained=True`
fixes the plan's *shape* and tool names, not the argument names a small model invents."""),
    code("""
from statistics import fmean

from IPython.display import Markdown, display

head = "| system | mean latency (s) | LLM calls | searches | answer hit | source hit |"
lines = [head, "|---|---:|---:|---:|---:|---:|"]
for name in systems:
    mine = [r for r in rows if r["system"] == name]
    lines.append(f"| {name} | {fmean(r['latency_s'] for r in mine):.1f} | "
                 f"{fmean(r['llm_calls'] for r in mine):.1f} | "
                 f"{fmean(r['searches'] for r in mine):.1f} | "
                 f"{fmean(r['answer_hit'] for r in mine):.2f} | "
                 f"{fmean(r['source_hit'] for r in mine):.2f} |")
display(Markdown("\\n".join(lines)))"""),
    md("""
## One question under each system

Each row is one system on question 1: blue bars are LLM calls, orange bars searches, on the
same time axis. LLMCompiler and REAPER make two LLM calls (plan, answer) with the searches in
between -- started while the plan is still streaming, in parallel; ReAct pays one LLM call
per search.
"""),
    code("""
import matplotlib.pyplot as plt

fig, axes = plt.subplots(len(timelines), 1, figsize=(9, 1.3 * len(timelines) + 1),
                         sharex=True, squeeze=False)
colors = {"llm": "#1e88e5", "search": "#fb8c00"}
for ax, (name, spans) in zip(axes[:, 0], timelines.items(), strict=True):
    for lane, kind in enumerate(("llm", "search")):
        mine = [(s, e - s) for k, s, e in spans if k == kind]
        ax.broken_barh([(s, max(w, 0.02)) for s, w in mine], (lane - 0.35, 0.7),
                       color=colors[kind], edgecolor="white", linewidth=2)
        for n, (s, w) in enumerate(mine, 1):
            if kind == "llm":
                ax.text(s + w / 2, lane, f"call {n}", ha="center", va="center", fontsize=7,
                        color="white")
    ax.set_yticks([0, 1], ["LLM", "search"])
    ax.set_ylabel(name, rotation=0, ha="right", va="center")
axes[-1, 0].set_xlabel("seconds since the question")
fig.suptitle("question 1: where the time goes")
fig.tight_layout()
plt.show()"""),
    code("""
for name in systems:
    if not any(r["searches"] for r in rows if r["system"] == name):
        print(f"{name} made no search: the model answered from memory instead of calling the "
              "tool (small models often fail to write a ReAct tool call; the plan-once systems "
              "decode their plan under a grammar, so at least its shape and tool names parse).")"""),
    md("""
## What changes with a bigger model

- On a 135M model the plans are short and sometimes repeat a query, and the answers are
  rough: the accuracy columns above say more about the model than about the planners. The
  planner benchmark (`benchmarks/planners.py`, HotpotQA comparison questions) runs the
  same comparison on Qwen2.5-0.5B.
- The latency shape does not depend on the model: a plan-once system makes a fixed number
  of LLM calls whatever the number of tools, and its tools overlap; ReAct's LLM calls grow
  with the number of look-ups. With a slow model (or slow tools) the gap widens.
- REAPER is for retrieval over several named sources (orders, products, papers...): add a
  `RetrievalSource` with a description and it plans over it, no retraining.
"""),
]

SWEEP = [
    md("""
# A RAG hyper-parameter sweep on COVID-QA

COVID-QA has long biomedical articles and extractive questions with gold answer spans, so
chunking really matters. This notebook sweeps chunk size, overlap and the retrieval method,
scores every cell on retrieval metrics (recall@k, MRR, nDCG, context precision against the
gold spans), and plots quality against latency with the Pareto front.

It is kept small (few questions and articles, no answer generation) so that it runs in
about a minute. The same sweep runs from YAML on the command line:

```bash
ragloom eval sweep evals/configs/covid_sweep.yaml --run-dir runs/covid
ragloom eval report runs/covid
```

The data set is read from `RAGLOOM_DATA_DIR` (default `../shared/datasets`); the first cell
points it at the folder next to this repository when that exists.
"""),
    code(SETUP),
    code("""
from ragloom._config import data_dir

covid = data_dir() / "covid_qa_deepset"
if not covid.is_dir():
    raise FileNotFoundError(
        f"COVID-QA not found at {covid}; set RAGLOOM_DATA_DIR to the folder holding "
        "covid_qa_deepset/ (see the data sets' README)")
print(covid)"""),
    md("""
## The sweep

A `SweepConfig` names the data set, how many questions and articles to use, and the axes.
Each distinct chunking is chunked and embedded once and each index built once, whatever
the number of cells that use it; finished cells go into `results.sqlite` in the run folder,
so a killed sweep resumes where it stopped.
"""),
    code("""
import tempfile

from ragloom.evals import SweepConfig, run_sweep

config = SweepConfig(
    dataset="covid_qa",
    num_questions=12,
    max_docs=6,
    max_doc_chars=6000,
    generate=False,
    metrics=("recall_at_k", "mrr", "ndcg", "context_precision"),
    axes={"retrieval": ["dense", "bm25", "hybrid"], "chunk_size": [128, 256],
          "chunk_overlap": [0, 32]},
    base={"store": "faiss", "chunker": "fixed_tokens", "top_k": 3},
)
run_dir = Path(tempfile.mkdtemp(prefix="ragloom-sweep-"))
t0 = time.perf_counter()
records = run_sweep(config, run_dir, progress=False)
print(f"{len(records)} cells in {time.perf_counter() - t0:.1f}s -> {run_dir}")"""),
    md("""
## The table

`write_report` writes the table (Markdown, CSV, HTML) and the plots next to the results.
Latencies are per question: `retrieval_ms` is the search alone, `total_ms` the whole cell.
"""),
    code("""
from IPython.display import Image, Markdown, display

from ragloom.evals import write_report

report = write_report(run_dir)
display(Markdown((run_dir / "report.md").read_text()))
print("headline metric:", report["metric"], "| best cell:", report["best_cell"])"""),
    md("""
## Quality against latency

Each dot is a cell; the red line joins the **Pareto front** -- the cells that no other cell
beats on both quality and latency. Only those are worth choosing between.
"""),
    code("""display(Image(filename=str(run_dir / "quality_vs_latency.png")))"""),
    code("""display(Image(filename=str(run_dir / "effects.png")))"""),
    md("""
## What the numbers say

The cell below reads the effects straight from the results: for every swept axis, the mean
headline metric and latency of each value, and the Pareto cells.
"""),
    code("""
from ragloom.evals import axis_effects, pareto_front

metric = report["metric"]
for axis, values in axis_effects(records, metric).items():
    ranked = sorted(values.items(), key=lambda kv: -kv[1][0])
    text = ", ".join(f"{v}: {m:.3f} at {1000 * s:.1f} ms" for v, (m, s) in ranked)
    print(f"{axis:14s} {text}")
front = pareto_front([(r.total_s, r.metrics[metric]) for r in records])
print("\\nPareto front (fastest first):")
for i in front:
    r = records[i]
    print(f"  {r.params['retrieval']:6s} chunk {r.params['chunk_size']:3d} "
          f"overlap {r.params['chunk_overlap']:2d}: {metric} {r.metrics[metric]:.3f}, "
          f"{1000 * r.total_s:.1f} ms/question")"""),
    md("""
How to read it: each axis line ranks its values by the headline metric, averaged over the
other axes. On COVID-QA's extractive questions, whose gold spans share exact words with the
question, BM25 is a strong baseline and by far the cheapest per query (no query
embedding); dense and hybrid retrieval pay for a query embedding. With a dozen questions,
differences of a few hundredths between cells are within noise -- run more questions
(`num_questions=100`, and all 98 articles: drop `max_docs` and `max_doc_chars`) before
choosing a cell.

With answer generation (`generate=True`, a model such as the default Qwen2.5-0.5B) the
table gains exact match and token F1, and judged metrics (faithfulness, answer correctness)
can be added with `metrics=(...)`; latency then is dominated by the LLM, and axes such as
`rerank` and `crag` become worth sweeping. `run_sweep(..., executor="ray")` fans the cells
out over a Ray cluster, one task per chunking.
"""),
]

KV_CACHE = [
    md("""
# What the prefix cache does

An agent sends the model many prompts that start the same way: the planner's system prompt
and tool list, the few-shot examples, then the question; the joiner repeats the question
and the plan. ragloom's backends keep the KV state of prompt prefixes they have seen and
compute only the new tokens:

- the **llama.cpp backend** (`LlamaCppLLM`) saves the KV state at fixed token boundaries and
  restores the longest saved prefix;
- the **embedded torch engine** (`TorchLLM`) shares paged KV blocks by a hash of their
  tokens (like vLLM's automatic prefix caching);
- every `Completion` says how many prompt tokens came from the cache: `cached_tokens`.

This notebook measures time to first token cold and cached, and the cache hit rate over an
agent run, on SmolLM2-135M through llama.cpp.
"""),
    code(SETUP),
    code("""
from ragloom.runtime import SamplingParams, load_llm

llm = load_llm("smollm2")
print(type(llm).__name__, llm.model_name)"""),
    md("""
## Time to first token, cold and cached

The prompt is a real one: the planner prompt the agent of the quickstart sends. We time the
first streamed token three ways: **cold** (cache cleared), **same prompt again**, and a
**new question** behind the same system prompt and tools (only the tail is new).
"""),
    code("""
from ragloom import ToolRegistry, tool
from ragloom.planners import MULTIHOP_EXAMPLES, LLMCompilerPlanner


@tool
def search(query: str) -> str:
    \"\"\"Search the indexed documents; returns the best matching passages.\"\"\"
    return ""


registry = ToolRegistry([search])
planner = LLMCompilerPlanner(llm, examples=MULTIHOP_EXAMPLES)
prompt_a = planner.messages("Which module compresses files, gzip or zipfile?", registry)
prompt_b = planner.messages("Which module computes the median of data?", registry)
params = SamplingParams(max_tokens=8)


def ttft(prompt):
    start = time.perf_counter()
    deltas = llm.stream(prompt, params)
    next(deltas)  # the first token
    elapsed = time.perf_counter() - start
    deltas.close()  # stop decoding; the backend is free again
    return elapsed


def cached(prompt):
    return llm.generate([prompt], SamplingParams(max_tokens=1))[0]


llm.reset_prefix_cache()
cold = ttft(prompt_a)
again = ttft(prompt_a)
other = ttft(prompt_b)
llm.reset_prefix_cache()
stats = {"cold": cached(prompt_a), "same prompt": cached(prompt_a), "new question": cached(prompt_b)}
times = {"cold": cold, "same prompt": again, "new question": other}
for case, c in stats.items():
    print(f"{case:13s} TTFT {1000 * times[case]:7.0f} ms   "
          f"{c.cached_tokens:4d} of {c.prompt_tokens} prompt tokens from the cache")"""),
    code("""
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(list(times), [1000 * t for t in times.values()], color=["#e53935", "#43a047", "#1e88e5"])
ax.set_ylabel("time to first token (ms)")
ax.set_title(f"{llm.model_name}: {stats['cold'].prompt_tokens}-token planner prompt")
plt.show()"""),
    md("""
`cached_tokens` is a multiple of the backend's block (64 tokens for llama.cpp by default):
the tail after the last block boundary is always recomputed, which is what keeps a cached
run *bit-identical* to a cold one (`benchmarks/llamacpp_prefix.py` checks the greedy outputs
are equal).

## The hit rate over an agent run

Now a whole agent run: two questions through the planner agent. To see `cached_tokens` of
every call, the model is wrapped in `Metered`, which routes each call -- streamed ones
included -- through `generate` and keeps the `Completion`s. (Streaming is off under the
meter: each plan arrives in one piece.)
"""),
    code("""
from ragloom.runtime import BaseLLM


class Metered(BaseLLM):
    \"\"\"Forwards to ``inner`` and keeps every Completion (streamed calls included).\"\"\"

    def __init__(self, inner):
        self.inner, self.model_name, self.completions = inner, inner.model_name, []

    def render(self, prompt):
        return self.inner.render(prompt)

    def generate(self, prompts, params=None):
        out = self.inner.generate(prompts, params)
        self.completions.extend(out)
        return out

    def _stream(self, prompt, params):
        yield self.generate([prompt], params)[0].text"""),
    code("""
import tempfile

from ragloom import Agent
from ragloom.planners import LLMJoiner, search_tool, stdlib_corpus
from ragloom.retrievers import build_index

folder = stdlib_corpus(Path(tempfile.mkdtemp(prefix="ragloom-nb-")) / "docs",
                       ("gzip", "zipfile", "statistics", "heapq", "bisect", "csv"))
index = build_index(folder, store="bm25", chunker="sentences:600", progress=False)
meter = Metered(llm)
agent = Agent(meter, [search_tool(index.retriever, k=2)],
              planner=LLMCompilerPlanner(meter, examples=MULTIHOP_EXAMPLES, constrained=True,
                                         max_tokens=60),
              joiner=LLMJoiner(meter, max_tokens=40), max_replans=0)
llm.reset_prefix_cache()
for question in ("Which module compresses files in the gzip format?",
                 "Which module implements a heap queue?",
                 "Which module reads CSV files?"):
    before = len(meter.completions)
    result = await agent.ainvoke(question)
    print(f"{question}: {len(meter.completions) - before} LLM calls, "
          f"{len(result.observations)} tasks")"""),
    code("""
from IPython.display import Markdown, display

lines = ["| call | prompt tokens | from cache | hit rate |", "|---:|---:|---:|---:|"]
for n, c in enumerate(meter.completions, 1):
    lines.append(f"| {n} | {c.prompt_tokens} | {c.cached_tokens} | "
                 f"{c.cached_tokens / max(c.prompt_tokens, 1):.0%} |")
total = sum(c.prompt_tokens for c in meter.completions)
hits = sum(c.cached_tokens for c in meter.completions)
lines.append(f"| **all** | **{total}** | **{hits}** | **{hits / max(total, 1):.0%}** |")
display(Markdown("\\n".join(lines)))"""),
    md("""
The backend keeps the same totals itself: `prefix_cache_stats()` (every backend has it;
`reset_prefix_cache()` above emptied the cache and zeroed the counts) needs no wrapper and
counts streamed calls too. Here it must agree with the meter's per-call sums.
"""),
    code("""
own = llm.prefix_cache_stats()
print(own)
assert (own.prompt_tokens, own.cached_tokens) == (total, hits)
print(f"{own.requests} prompts, {own.hit_rate:.0%} of their tokens from the cache, "
      f"{own.entries} saved prefix states ({(own.nbytes or 0) / 2**20:.1f} MiB)")"""),
    md("""
Calls alternate plan, join, plan, join... The first plan and the first joiner call run
cold: their prompts share nothing. From the second question on, each plan finds the
planner's system prompt, tool list and examples in the cache, and each joiner call the
joiner's instructions; only the question, the plan and the results are new. So the hit
rate climbs with every question, towards the share of the fixed parts in each prompt --
and on a CPU, prefill is most of a small model's latency.

## With a bigger model or another backend

- The saving grows with the model: prefill cost per token scales with model size, and
  agent prompts (tools, examples, history) grow with the application.
- `TorchLLM` (`load_llm(backend="torch")`) shares KV blocks between *concurrent* requests
  too, batching them continuously; vLLM (`load_llm(backend="vllm")` on a GPU, or a vLLM
  server through `backend="openai"`) does the same with automatic prefix caching on.
- Keep prompts prefix-friendly: fixed parts first (system prompt, tools, examples), the
  question and results last -- ragloom's planner and joiner prompts are laid out that way.
"""),
]

NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_planners.ipynb": PLANNERS,
    "03_rag_sweep.ipynb": SWEEP,
    "04_kv_cache.ipynb": KV_CACHE,
}

# data sets (folders of RAGLOOM_DATA_DIR) a notebook cannot run without
NEEDS_DATA = {"03_rag_sweep.ipynb": ["covid_qa_deepset"]}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` with its cells, no outputs."""
    nb = new_notebook(cells=NOTEBOOKS[name])
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    if name in NEEDS_DATA:  # for a runner that skips what the machine lacks
        nb.metadata["ragloom"] = {"needs_data": NEEDS_DATA[name]}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{Path(name).stem[:2]}-{i:02d}"  # stable ids: no diff noise on rebuild
    return nb


def main() -> None:
    for name in sys.argv[1:] or NOTEBOOKS:
        nbformat.write(build(name), HERE / name)


if __name__ == "__main__":
    main()
