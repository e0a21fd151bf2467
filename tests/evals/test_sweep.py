"""Sweeps: declaration, shared work, generation cache, and kill-and-resume."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ragloom._config import data_dir
from ragloom.errors import ConfigError, EvalError
from ragloom.evals.pipeline import CellConfig, Workspace, run_cell
from ragloom.evals.results import ResultStore
from ragloom.evals.runner import make_embedder, pick_examples
from ragloom.evals.sweep import SweepConfig, run_sweep
from ragloom.runtime import FakeLLM

needs_data = pytest.mark.skipif(not (data_dir() / "covid_qa_deepset").is_dir(),
                                reason="shared data sets not present")
AXES = {"store": ["faiss", "chroma"], "retrieval": ["dense", "bm25"], "chunk_size": [400, 800]}
BASE = {"chunker": "chars", "chunk_overlap": 40, "top_k": 3}


def small_config(**overrides):
    settings = dict(dataset="covid_qa", num_questions=4, max_docs=3, generate=False,
                    embedder="hash", axes=AXES, base=BASE)
    settings.update(overrides)
    return SweepConfig(**settings)


def test_grid_sample_and_validation():
    config = small_config()
    cells = config.cells()
    assert len(cells) == 8 and len({c.cell_id for c in cells}) == 8
    sampled = small_config(sample=3, seed=1).cells()
    assert len(sampled) == 3 and set(sampled) <= set(cells)
    assert sampled == small_config(sample=3, seed=1).cells()  # seeded
    with pytest.raises(ConfigError, match="unknown sweep axes"):
        SweepConfig(axes={"stores": ["faiss"]})
    with pytest.raises(ConfigError, match="choose one of"):
        small_config(axes={"store": ["milvus"]}).cells()
    with pytest.raises(ConfigError, match="overlap"):
        CellConfig(chunk_size=100, chunk_overlap=100)


def test_yaml_round_trip(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(small_config().to_dict()))
    assert SweepConfig.from_yaml(path).cells() == small_config().cells()
    path.write_text("dataset: covid_qa\nchunks: 3\n")
    with pytest.raises(ConfigError, match="unknown settings"):
        SweepConfig.from_yaml(path)


@needs_data
def test_work_is_shared_between_cells():
    config = small_config()
    examples, corpus = pick_examples(config)
    assert len(corpus) == 3 and {g for e in examples for g in e.gold_ids} <= {p.id for p in corpus}
    shared = Workspace(corpus, make_embedder("hash"))
    naive = Workspace(corpus, make_embedder("hash"), shared=False)
    for cell in config.cells():
        a, b = run_cell(shared, cell, examples), run_cell(naive, cell, examples)
        assert [p.contexts for p in a.predictions] == [p.contexts for p in b.predictions]
    # 2 chunkings; indexes: (chunking x {faiss, chroma, bm25})
    assert shared.num_builds == {"chunk": 2, "embed": 2, "index": 6}
    assert naive.num_builds == {"chunk": 8, "embed": 4, "index": 8}


@needs_data
def test_generations_are_cached_by_prompt_and_params(tmp_path):
    from ragloom.evals.cache import CachedLLM, CompletionCache

    config = small_config()
    examples, corpus = pick_examples(config)
    fake = FakeLLM(lambda prompt: "An answer.")
    llm = CachedLLM(fake, CompletionCache(tmp_path / "gen.sqlite"))
    ws = Workspace(corpus, make_embedder("hash"), llm)
    cell = CellConfig(chunker="chars", chunk_size=400, chunk_overlap=40)
    first = run_cell(ws, cell, examples)
    assert [p.answer for p in first.predictions] == ["An answer."] * 4 and llm.num_calls == 4
    again = run_cell(ws, cell, examples)
    assert llm.num_calls == 4 and again.total_s[0] >= again.retrieval_s[0]
    run_cell(ws, CellConfig(chunker="chars", chunk_size=400, chunk_overlap=40,
                            temperature=0.7), examples)
    assert llm.num_calls == 8  # another temperature is another cache key
    assert "Question: " in fake.prompts[0] and "[1] " in fake.prompts[0]


@needs_data
def test_results_persist_and_a_different_config_is_refused(tmp_path):
    records = run_sweep(small_config(), tmp_path, progress=False)
    assert len(records) == 8
    for record in records:
        assert set(record.metrics) == {"recall_at_k", "mrr", "ndcg", "context_precision"}
        assert 0 <= record.metrics["recall_at_k"] <= 1 and record.retrieval_s > 0
    store = ResultStore(tmp_path / "results.sqlite")
    assert len(store.rows(records[0].cell_id)) == 4
    with pytest.raises(EvalError, match="different sweep config"):
        run_sweep(small_config(num_questions=3), tmp_path, progress=False)


def _count_cells(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0])
    except sqlite3.OperationalError:  # schema not created yet
        return 0


@needs_data
def test_killed_sweep_resumes_without_recomputing_or_losing_cells(tmp_path):
    config = small_config()
    config_path = tmp_path / "sweep.yaml"
    config_path.write_text(yaml.safe_dump(config.to_dict()))
    run_dir = tmp_path / "run"
    worker = Path(__file__).with_name("sweep_worker.py")
    proc = subprocess.Popen([sys.executable, str(worker), str(config_path), str(run_dir), "0.4"],
                            env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = run_dir / "results.sqlite"
    deadline = time.monotonic() + 90
    while _count_cells(db) < 2:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the worker finished no cell in time"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {r.cell_id: r for r in ResultStore(db).cells()}
    assert 2 <= len(before) < 8, "the kill must land mid-sweep"
    assert {r.pid for r in before.values()} == {proc.pid}

    started: list[str] = []
    records = run_sweep(config, run_dir, progress=False,
                        on_cell_start=lambda cell: started.append(cell.cell_id))
    assert not set(started) & set(before), "a finished cell was recomputed"
    assert set(started) | set(before) == {c.cell_id for c in config.cells()}
    assert len(records) == 8
    after = {r.cell_id: r for r in records}
    for cell_id, record in before.items():
        assert after[cell_id] == record  # untouched: same metrics, pid and finish time
    store = ResultStore(db)
    assert all(len(store.rows(cell_id)) == 4 for cell_id in after)


@needs_data
def test_document_budget_cuts_passages_and_keeps_answers_inside():
    config = small_config(num_questions=5, max_docs=2, max_doc_chars=3000)
    examples, corpus = pick_examples(config)
    assert len(corpus) == 2 and all(len(p.text) <= 3000 for p in corpus)
    texts = {p.id: p.text for p in corpus}
    for ex in examples:
        for span in ex.gold_spans:
            assert texts[span.doc_id][span.start:span.end] == ex.answers[0]
    with pytest.raises(ConfigError, match="only"):
        pick_examples(small_config(num_questions=500, max_docs=1))


def test_shipped_yaml_config_is_the_24_cell_benchmark_grid():
    path = Path(__file__).parents[2] / "evals" / "configs" / "covid_sweep.yaml"
    assert len(SweepConfig.from_yaml(path).cells()) == 24
