"""`ragloom demo` / `ragloom ask`: offline corpora, the streamed console output, the commands."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from ragloom.planners.demo import (
    STDLIB_QUESTION,
    demo_corpus,
    hotpot_corpus,
    run_demo,
    stdlib_corpus,
)
from ragloom.retrievers.base import HashEmbedder
from ragloom.runtime import FakeLLM


def test_stdlib_corpus_holds_real_docstrings(tmp_path: Path) -> None:
    folder = stdlib_corpus(tmp_path, ("gzip", "statistics"))
    gzip_text = (folder / "gzip.txt").read_text()
    assert gzip_text.startswith("Module gzip") and "gzip.open:" in gzip_text
    assert "statistics.median:" in (folder / "statistics.txt").read_text()


def test_without_a_data_folder_the_demo_uses_the_stdlib(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RAGLOOM_DATA_DIR", str(tmp_path / "missing"))
    corpus = demo_corpus(tmp_path)
    assert "standard-library" in corpus.name and corpus.question == STDLIB_QUESTION
    assert len(list(corpus.folder.glob("*.txt"))) >= 20


def test_hotpot_corpus_writes_one_file_per_title(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    corpus = {"The Exies": ["The Exies are a band.", " Formed in 1997."], "A/B": ["x"]}
    (source / "hotpotqa_train_corpus.json").write_text(json.dumps(corpus))
    folder = hotpot_corpus(tmp_path / "out", source)
    texts = sorted(p.read_text() for p in folder.glob("*.txt"))
    assert texts == ["A/B: x", "The Exies: The Exies are a band. Formed in 1997."]


def test_demo_end_to_end_with_fakes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RAGLOOM_DATA_DIR", str(tmp_path / "missing"))
    plan = (
        '1. search(query="gzip compress files")\n2. search(query="median of data")\n'
        "3. join()<END_OF_PLAN>"
    )
    answer = "gzip [gzip.txt#0] compresses files; statistics [statistics.txt#0] gives the median."
    llm = FakeLLM([plan, answer])
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    result = run_demo(console, workdir=tmp_path, llm=llm, embedder=HashEmbedder(256))
    text = out.getvalue()
    assert result.answer == answer  # the citing answerer's sentence, not a JSON decision
    assert 'plan  1. search(query="gzip compress files")' in text  # the streamed plan lines
    assert "start task 1" in text and "done  task 2" in text  # the timeline
    assert "Task timeline" in text
    assert "Sources:" in text and result.sources and result.sources[0] in text
    assert any(s.startswith(("gzip", "statistics")) for s in result.sources)


@pytest.mark.parametrize("command", ["demo", "ask"])
def test_commands_are_registered(command: str) -> None:
    from ragloom.cli import app

    out = CliRunner().invoke(app, [command, "--help"])
    assert out.exit_code == 0, out.output
    assert "planner" in out.output


@pytest.mark.parametrize(
    ("backend", "ready", "auto", "want", "said"),
    [
        ("auto", True, "llamacpp", ("torch", {"quantization": "gguf-q8"}), "torch engine"),
        ("auto", False, "llamacpp", ("llamacpp", {}), "not ready here"),
        ("auto", False, "torch", ("torch", {}), "llama.cpp is not installed"),
        ("llamacpp", True, "llamacpp", ("llamacpp", {}), "asked for"),
    ],
)
def test_the_demo_takes_the_torch_engine_where_it_is_ready(
    monkeypatch, backend, ready, auto, want, said
) -> None:
    from ragloom.planners.demo import demo_llm
    from ragloom.runtime import factory

    loads = []
    monkeypatch.setattr(factory, "torch_engine_ready", lambda model: ready)
    monkeypatch.setattr(factory, "pick_backend", lambda name="auto": auto)
    monkeypatch.setattr(
        factory, "load_llm", lambda model, name, **kw: loads.append((model, name, kw)) or "llm"
    )
    llm, why = demo_llm("some-model", backend)
    assert llm == "llm" and loads == [("some-model", *want)]
    assert said in why


def test_torch_engine_ready_is_false_for_what_it_cannot_resolve(tmp_path) -> None:
    from ragloom.runtime.factory import torch_engine_ready

    assert not torch_engine_ready(str(tmp_path / "missing.gguf"))
