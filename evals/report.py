"""Sweep reports: a table (Markdown, CSV, HTML) and plots of quality against latency.

``write_report(run_dir)`` reads ``results.sqlite`` and writes, next to it, ``report.md``,
``report.csv``, ``report.html`` (every metric plus mean retrieval and total latency per
question for each cell), ``quality_vs_latency.png`` (the Pareto front -- cells no other
cell beats on both quality and latency -- marked) and ``effects.png`` (each swept
hyper-parameter's mean effect on quality and latency). Reading results costs no model call.

This module does not run cells.
"""

from __future__ import annotations

import csv
import html
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragloom.errors import EvalError
from ragloom.evals.results import CellRecord, ResultStore

__all__ = [
    "axis_effects",
    "best_cell",
    "load_run",
    "pareto_front",
    "quality_metric",
    "swept_axes",
    "write_report",
]

_QUALITY_ORDER = ("answer_correctness", "faithfulness", "token_f1", "context_precision",
                  "ndcg", "recall_at_k")


def load_run(run_dir: str | Path) -> tuple[dict[str, Any], list[CellRecord]]:
    """The sweep config and finished cells of a run folder."""
    path = Path(run_dir) / "results.sqlite"
    if not path.is_file():
        raise EvalError(f"no sweep results at {path}; run `ragloom eval sweep` first")
    store = ResultStore(path)
    try:
        return store.meta("config") or {}, store.cells()
    finally:
        store.close()


def quality_metric(records: Sequence[CellRecord]) -> str:
    """The headline quality metric: the first of answer correctness, faithfulness, token F1,
    context precision, nDCG and recall@k that some cell defines."""
    for name in _QUALITY_ORDER:
        if any(not math.isnan(r.metrics.get(name, math.nan)) for r in records):
            return name
    raise EvalError("no cell has a quality metric to rank by")


def _latency(record: CellRecord) -> float:
    return record.total_s


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, quality) points no other point beats on both, by latency.

    >>> pareto_front([(1, 0.5), (2, 0.9), (3, 0.8), (0.5, 0.1)])
    [3, 0, 1]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if not math.isnan(points[i][1]) and points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def best_cell(records: Sequence[CellRecord], metric: str) -> CellRecord:
    """The cell with the highest ``metric`` (ties: the faster one)."""
    scored = [r for r in records if not math.isnan(r.metrics.get(metric, math.nan))]
    if not scored:
        raise EvalError(f"no cell has a value for {metric!r}")
    return max(scored, key=lambda r: (r.metrics[metric], -_latency(r)))


def swept_axes(records: Sequence[CellRecord]) -> list[str]:
    """Parameters that take more than one value across the cells."""
    keys = records[0].params.keys() if records else []
    return [k for k in keys if len({repr(r.params[k]) for r in records}) > 1]


def axis_effects(records: Sequence[CellRecord], metric: str) -> dict[str, dict[str, tuple[
        float, float]]]:
    """For each swept axis: value -> (mean ``metric``, mean total latency) over its cells."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for axis in swept_axes(records):
        groups: dict[str, list[CellRecord]] = defaultdict(list)
        for r in records:
            groups[str(r.params[axis])].append(r)
        out[axis] = {value: (_mean([r.metrics.get(metric, math.nan) for r in rs]),
                             _mean([_latency(r) for r in rs])) for value, rs in groups.items()}
    return out


def _mean(values: Sequence[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else math.nan


def _table(records: Sequence[CellRecord]) -> tuple[list[str], list[list[str]]]:
    axes = swept_axes(records) or list(records[0].params)
    metrics = sorted({m for r in records for m in r.metrics})
    header = ["cell", *axes, *metrics, "retrieval_ms", "total_ms"]
    rows = [[r.cell_id, *(str(r.params[a]) for a in axes),
             *(_fmt(r.metrics.get(m, math.nan)) for m in metrics),
             f"{1000 * r.retrieval_s:.2f}", f"{1000 * r.total_s:.2f}"] for r in records]
    return header, rows


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.4f}"


def _write_tables(out: Path, header: list[str], rows: list[list[str]], title: str) -> None:
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(row) + " |" for row in rows]
    (out / "report.md").write_text(f"# {title}\n\n" + "\n".join(md) + "\n")
    with (out / "report.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                    for row in rows)
    heads = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    (out / "report.html").write_text(
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<h1>{html.escape(title)}</h1><table border='1'><tr>{heads}</tr>{cells}</table>\n")


def write_report(run_dir: str | Path, metric: str | None = None) -> dict[str, Any]:
    """Write the tables and plots into ``run_dir``; return paths, best cell and metric."""
    run_dir = Path(run_dir)
    config, records = load_run(run_dir)
    if not records:
        raise EvalError(f"{run_dir} has no finished cell yet")
    metric = metric or quality_metric(records)
    header, rows = _table(records)
    best = best_cell(records, metric)
    _write_tables(run_dir, header, rows, f"Sweep on {config.get('dataset', '?')}: "
                                         f"{len(records)} cells, ranked by {metric}")
    from ragloom.evals._plots import plot_effects, plot_quality_vs_latency

    plot_quality_vs_latency(records, metric, run_dir / "quality_vs_latency.png")
    plot_effects(axis_effects(records, metric), metric, run_dir / "effects.png")
    return {"metric": metric, "best_cell": {"cell_id": best.cell_id, **best.params,
                                            metric: best.metrics[metric]},
            "files": [str(run_dir / n) for n in ("report.md", "report.csv", "report.html",
                                                 "quality_vs_latency.png", "effects.png")]}
