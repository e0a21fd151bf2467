"""Matplotlib figures of a sweep report (private; matplotlib imported inside, Agg backend)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragloom.evals.results import CellRecord

__all__ = ["plot_effects", "plot_quality_vs_latency"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_quality_vs_latency(records: Sequence[CellRecord], metric: str, path: Path) -> None:
    """Scatter of quality against mean latency per question, Pareto front joined and labelled."""
    from ragloom.evals.report import pareto_front

    plt = _pyplot()
    points = [(1000 * r.total_s, r.metrics.get(metric, math.nan)) for r in records]
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=18, alpha=0.6, label="cells")
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "r-o", ms=5,
            label="Pareto front")
    for i in front:
        ax.annotate(records[i].cell_id[:6], points[i], fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel("mean latency per question (ms)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs latency ({len(records)} cells)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_effects(effects: dict[str, dict[str, tuple[float, float]]], metric: str,
                 path: Path) -> None:
    """One panel per swept axis: mean quality (bars) and mean latency (line) per value."""
    plt = _pyplot()
    axes_names = list(effects) or ["(nothing swept)"]
    fig, panels = plt.subplots(1, len(axes_names), figsize=(3.2 * len(axes_names), 3.4),
                               squeeze=False)
    for panel, name in zip(panels[0], axes_names, strict=True):
        values = effects.get(name, {})
        labels = list(values)
        panel.bar(labels, [values[v][0] for v in labels], color="tab:blue", alpha=0.7)
        panel.set_title(name, fontsize=9)
        panel.set_ylabel(metric, fontsize=8)
        panel.tick_params(labelsize=7)
        twin = panel.twinx()
        twin.plot(labels, [1000 * values[v][1] for v in labels], "r-o", ms=4)
        twin.set_ylabel("latency (ms)", fontsize=8, color="r")
        twin.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
