"""Reports (tables, Pareto front, plots) and the `ragloom eval` commands."""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml
from typer.testing import CliRunner

from ragloom._config import data_dir
from ragloom.cli import app as root
from ragloom.errors import EvalError
from ragloom.evals.report import axis_effects, best_cell, pareto_front, write_report
from ragloom.evals.results import CellRecord

needs_data = pytest.mark.skipif(not (data_dir() / "covid_qa_deepset").is_dir(),
                                reason="shared data sets not present")


def record(cell_id, quality, latency, **params):
    return CellRecord(cell_id, params, {"ndcg": quality}, latency / 2, latency, 1.0, 2, 1, 0.0)


def test_pareto_front_and_best_cell_hand_checked():
    points = [(1.0, 0.5), (2.0, 0.9), (3.0, 0.8), (0.5, 0.1), (2.0, 0.95), (1.5, math.nan)]
    assert pareto_front(points) == [3, 0, 4]  # (2.0, 0.9) is beaten by (2.0, 0.95)
    records = [record("a", 0.5, 1.0, k=1), record("b", 0.9, 2.0, k=2), record("c", 0.9, 1.5, k=2)]
    assert best_cell(records, "ndcg").cell_id == "c"  # tie on quality: the faster one
    effects = axis_effects(records, "ndcg")
    assert effects == {"k": {"1": (0.5, 1.0), "2": (0.9, 1.75)}}
    with pytest.raises(EvalError, match="no cell has a value"):
        best_cell(records, "faithfulness")


@needs_data
def test_cli_sweep_then_report(tmp_path):
    config = {"dataset": "covid_qa", "num_questions": 3, "max_docs": 3, "generate": False,
              "embedder": "hash", "axes": {"chunk_size": [400, 800], "top_k": [2, 4]},
              "base": {"chunker": "chars", "chunk_overlap": 40}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    runner = CliRunner()
    out = runner.invoke(root, ["eval", "sweep", str(path), "--run-dir", str(run_dir)])
    assert out.exit_code == 0, out.output
    assert "4 cells finished" in out.output
    out = runner.invoke(root, ["eval", "report", str(run_dir)])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output.strip().splitlines()[-1])
    assert summary["best_cell"]["chunk_size"] in (400, 800)
    with (run_dir / "report.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["cell", "chunk_size", "top_k", "context_precision", "mrr", "ndcg",
                       "recall_at_k", "retrieval_ms", "total_ms"]
    assert len(rows) == 5
    for name in ("report.md", "report.html", "quality_vs_latency.png", "effects.png"):
        assert (run_dir / name).stat().st_size > 0
    assert write_report(run_dir)["metric"] == "context_precision"


def test_report_of_an_empty_folder_names_the_problem(tmp_path):
    out = CliRunner().invoke(root, ["eval", "report", str(tmp_path)])
    assert out.exit_code != 0 and isinstance(out.exception, EvalError)
    assert "no sweep results" in str(out.exception)
