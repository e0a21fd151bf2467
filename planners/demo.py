"""``ragloom demo``: index a real corpus, then answer a multi-hop question with the planner agent.

The corpus is HotpotQA's paragraph corpus when the shared data folder is present
(``data_dir()/"hipporag_hotpotqa_musique_train100"``); on a fresh clone without it, the
documentation strings of Python standard-library modules, written to a temporary folder — a
real corpus that is always available offline. The agent runs on the embedded model
(``load_llm()``), and the console shows the plan as it streams, each task's start and end, and
the answer with its sources.

This module wires existing parts together; it defines no retrieval or planning logic.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from ragloom._config import data_dir
from ragloom.planners._render import call_text

if TYPE_CHECKING:
    from rich.console import Console

    from ragloom.agent import AgentEvent

__all__ = [
    "DemoCorpus",
    "demo_agent",
    "demo_corpus",
    "demo_llm",
    "hotpot_corpus",
    "print_event",
    "run_demo",
    "search_tool",
    "stdlib_corpus",
    "stream_answer",
    "trace_table",
]

STDLIB_MODULES = (
    "json", "csv", "pickle", "heapq", "bisect", "functools", "itertools", "collections",
    "pathlib", "shutil", "tempfile", "textwrap", "statistics", "fractions", "decimal",
    "datetime", "calendar", "zipfile", "gzip", "hashlib", "secrets", "uuid", "base64",
    "difflib", "string", "struct", "queue", "sched", "contextlib", "dataclasses",
)  # fmt: skip

DEMO_MODEL = "qwen2.5-coder-0.5b-instruct"
HOTPOT_QUESTION = "Which band was formed first, The Exies or Circus Diablo?"
STDLIB_QUESTION = (
    "Which module compresses files in the gzip format, and which one computes the median of data?"
)


@dataclass(frozen=True, slots=True)
class DemoCorpus:
    """A folder of text files to index, what it is, and a multi-hop question about it."""

    folder: Path
    name: str
    question: str


def stdlib_corpus(folder: Path, modules: tuple[str, ...] = STDLIB_MODULES) -> Path:
    """Write each module's docstring and its public members' docstrings to ``<module>.txt``.

    >>> import tempfile
    >>> p = stdlib_corpus(Path(tempfile.mkdtemp()), ("json",))
    >>> (p / "json.txt").read_text().startswith("Module json")
    True
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name in modules:
        module = importlib.import_module(name)
        parts = [f"Module {name}: {inspect.getdoc(module) or ''}"]
        for attr in sorted(getattr(module, "__all__", None) or dir(module)):
            member = getattr(module, attr, None)
            doc = inspect.getdoc(member) if not attr.startswith("_") else None
            if doc and (inspect.isfunction(member) or inspect.isclass(member)):
                parts.append(f"{name}.{attr}: {doc}")
        (folder / f"{name}.txt").write_text("\n\n".join(parts), encoding="utf-8")
    return folder


def hotpot_corpus(folder: Path, source: Path) -> Path:
    """Write HotpotQA's paragraph corpus ({title: sentences}) as one text file per title."""
    folder.mkdir(parents=True, exist_ok=True)
    corpus = json.loads((source / "hotpotqa_train_corpus.json").read_text(encoding="utf-8"))
    for number, (title, sentences) in enumerate(corpus.items()):
        text = f"{title}: {''.join(sentences)}"
        stem = re.sub(r"\W+", "_", title).strip("_")[:60] or "untitled"
        (folder / f"{stem}_{number}.txt").write_text(text, encoding="utf-8")
    return folder


def demo_corpus(workdir: Path) -> DemoCorpus:
    """HotpotQA's corpus when the data folder has it, else the standard library's docstrings."""
    hotpot = data_dir() / "hipporag_hotpotqa_musique_train100"
    if (hotpot / "hotpotqa_train_corpus.json").exists():
        folder = hotpot_corpus(workdir / "hotpotqa", hotpot)
        return DemoCorpus(folder, "HotpotQA paragraphs (994)", HOTPOT_QUESTION)
    folder = stdlib_corpus(workdir / "stdlib")
    return DemoCorpus(
        folder,
        f"Python standard-library docstrings ({len(STDLIB_MODULES)} modules)",
        STDLIB_QUESTION,
    )


def search_tool(retriever: Any, k: int = 3) -> Any:
    """A ``search(query)`` tool over a retriever (a :class:`RetrievalSource`), for the planner."""
    from ragloom.planners.reaper import source_tool
    from ragloom.retrievers.sources import RetrievalSource

    description = "Search the indexed documents; returns the best matching passages."
    return source_tool(RetrievalSource("search", description, retriever, k=k))


def print_event(console: Console, event: AgentEvent, t0: float) -> None:
    """Show one streamed event on the timeline: plan lines as the planner writes them (so
    tools visibly start before the plan ends), task starts and ends, replans."""
    at = f"[dim]{time.perf_counter() - t0:6.2f}s[/dim]"
    data = event.data
    if event.kind == "task":
        console.print(f"{at} [cyan]plan[/cyan]  {escape(data.raw)}", highlight=False)
    elif event.kind in ("started", "finished", "failed"):
        obs = data.observation
        if event.kind == "started":
            line = f"[green]start[/green] task {data.task_id} {data.tool}"
        elif obs is not None and obs.ok:
            line = f"[green]done[/green]  task {data.task_id} {escape(call_text(obs))}"
        else:
            error = obs.error if obs is not None else "?"
            line = f"[red]fail[/red]  task {data.task_id}: {escape(str(error))}"
        console.print(f"{at} {line}", highlight=False)
    elif event.kind == "plan_error":
        console.print(f"{at} [yellow]plan stopped: {escape(str(data))}[/yellow]")
    elif event.kind == "replan":
        console.print(f"{at} [yellow]replan: {escape(data.reason)}[/yellow]")


def trace_table(result: Any) -> Any:
    """A rich table of the run's task timings (from the trace)."""
    from rich.table import Table

    table = Table("task", "tool", "start s", "end s", "seconds", "ok", title="Task timeline")
    records = result.trace.records if result.trace is not None else []
    for rec in records:
        start = "-" if rec.started is None else f"{rec.started:.2f}"
        end = "-" if rec.ended is None else f"{rec.ended:.2f}"
        took = "-" if rec.duration is None else f"{rec.duration:.3f}"
        table.add_row(str(rec.task_id), rec.tool, start, end, took, str(rec.ok))
    return table


def run_demo(
    console: Console,
    *,
    workdir: Path,
    model: str | None = None,
    question: str | None = None,
    llm: Any = None,
    embedder: Any = None,
    backend: str = "auto",
) -> Any:
    """Index the demo corpus and answer the question with streaming output; returns the result.

    ``llm`` and ``embedder`` replace the embedded model and MiniLM (tests use fakes);
    ``backend`` is :func:`demo_llm`'s.
    """
    from ragloom._sync import run_sync
    from ragloom.retrievers.index import build_index

    corpus = demo_corpus(workdir)
    t0 = time.perf_counter()
    console.rule(f"[bold]1. Index: {corpus.name}")
    index = build_index(
        corpus.folder, store="hybrid", chunker="sentences:600", embedder=embedder, progress=False
    )
    console.print(f"indexed in {time.perf_counter() - t0:.1f}s")
    console.rule("[bold]2. Load the embedded model")
    if llm is None:
        llm, why = demo_llm(model or DEMO_MODEL, backend)
        console.print(why)
    console.print(f"model: {llm.model_name}")
    agent = demo_agent(llm, index.retriever)
    ask = question or corpus.question
    console.rule("[bold]3. Plan lines as they stream, and the task timeline")
    console.print(f"[bold]Question:[/bold] {ask}\n")
    return run_sync(stream_answer(console, agent, ask))


def demo_llm(model: str = DEMO_MODEL, backend: str = "auto") -> tuple[Any, str]:
    """The demo's model on ``backend``, and a line saying which backend and why.

    ``"auto"`` takes the fastest backend at equal outputs that is ready: the torch engine with
    int8 activations where its kernels are built and the model's weights converted on this
    machine (``benchmarks/demo_backends.py``: this job 2.2x as fast as llama.cpp, the same plan and
    answer), else :func:`~ragloom.runtime.load_llm`'s choice, llama.cpp where it is installed,
    which starts in a second where the engine's first load converts the model (about a
    minute). Any other ``backend`` is passed to ``load_llm`` as it is.
    """
    from ragloom.runtime.factory import load_llm, pick_backend, torch_engine_ready

    if backend != "auto":
        return load_llm(model, backend), f"backend: {backend} (asked for)"
    if torch_engine_ready(model):
        llm = load_llm(model, "torch", quantization="gguf-q8")
        return (
            llm,
            "backend: torch engine, int8 activations (its weights are ready here: the fastest)",
        )
    chosen = pick_backend("auto")
    if chosen == "llamacpp":
        why = "llamacpp (the torch engine is not ready here: its first load converts the model)"
    else:
        why = f"{chosen} (llama.cpp is not installed)"
    return load_llm(model, chosen), f"backend: {why}"


def demo_agent(llm: Any, retriever: Any) -> Any:
    """The demo's agent: LLMCompiler plans (multi-hop examples) over one search tool, and an
    answerer that cites its chunks, with no replanning (``benchmarks/demo_backends.py`` runs
    the same agent on each backend)."""
    from ragloom.agent import Agent
    from ragloom.planners.llmcompiler import LLMCompilerPlanner
    from ragloom.planners.prompts import MULTIHOP_EXAMPLES
    from ragloom.planners.reaper import CitingAnswerer

    # The citing answerer writes a sentence with [chunk ids]; the default JSON joiner answers in
    # a word, which a 0.5B model turns into a bare chunk id on two-part questions.
    return Agent(
        llm,
        [search_tool(retriever)],
        planner=LLMCompilerPlanner(llm, examples=MULTIHOP_EXAMPLES),
        joiner=CitingAnswerer(llm),
        max_replans=0,
    )


async def stream_answer(console: Console, agent: Any, question: str) -> Any:
    """Run the agent on ``question``, printing its events; then the answer and its sources."""
    t0 = time.perf_counter()
    result = None
    async for event in agent.astream(question):
        print_event(console, event, t0)
        if event.kind == "result":
            result = event.data
    assert result is not None, "the agent ended without a result"
    console.print(trace_table(result))
    console.rule("[bold]4. Answer")
    console.print(f"[bold green]{escape(result.answer)}[/bold green]")
    console.print("[bold]Sources:[/bold] " + (", ".join(result.sources) or "(none)"))
    console.print(f"[dim]total {time.perf_counter() - t0:.1f}s[/dim]")
    return result
