"""``ragloom demo`` and ``ragloom ask``: the planner agent from the command line.

Nothing heavy is imported at module level (the root CLI imports this module to list commands);
each command imports what it needs when it runs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

__all__ = ["app"]

app = typer.Typer()


@app.command()
def demo(
    model: str = typer.Option(None, help="Model name for load_llm (default: the embedded one)."),
    question: str = typer.Option(None, help="Ask this instead of the corpus's demo question."),
    backend: str = typer.Option(
        "auto",
        help="auto (the torch engine where its weights are ready here, else llama.cpp), "
        "torch, llamacpp, openai or vllm.",
    ),
) -> None:
    """Index a real corpus and answer a multi-hop question with the parallel planner agent."""
    from rich.console import Console

    from ragloom.planners.demo import run_demo

    with tempfile.TemporaryDirectory(prefix="ragloom-demo-") as workdir:
        run_demo(Console(), model=model, question=question, workdir=Path(workdir), backend=backend)


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question."),
    index: Path = typer.Option(
        ..., "--index", help="An index folder (built by `ragloom index` or build_index(out=...))."
    ),
    model: str = typer.Option(None, help="Model name for load_llm (default: the embedded one)."),
    k: int = typer.Option(4, help="Passages per search."),
) -> None:
    """Answer a question over an existing index with the planner agent (streamed)."""
    from rich.console import Console

    from ragloom._sync import run_sync
    from ragloom.agent import Agent
    from ragloom.planners.demo import search_tool, stream_answer
    from ragloom.planners.llmcompiler import LLMCompilerPlanner
    from ragloom.planners.prompts import MULTIHOP_EXAMPLES
    from ragloom.retrievers.index import Index
    from ragloom.runtime import load_llm

    console = Console()
    retriever = Index.load(index).retriever
    llm = load_llm(model) if model else load_llm()
    planner = LLMCompilerPlanner(llm, examples=MULTIHOP_EXAMPLES)
    agent = Agent(llm, [search_tool(retriever, k=k)], planner=planner, max_replans=1)
    run_sync(stream_answer(console, agent, question))
