"""``ragloom eval ...`` commands: run a sweep from YAML, and report a run folder.

Imports nothing heavy at module level; the commands import what they use.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

__all__ = ["app"]

app = typer.Typer(add_completion=False)
eval_app = typer.Typer(name="eval", help="Evaluate RAG pipelines: sweeps and reports.",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("sweep")
def sweep(
    config: Path = typer.Argument(..., help="YAML sweep config (see ragloom.evals.sweep)."),
    run_dir: Path | None = typer.Option(None, help="Results folder (default runs/<config>)."),
    executor: str = typer.Option("local", help="'local' or 'ray'."),
    naive: bool = typer.Option(False, help="Recompute chunks/embeddings/indexes per cell."),
    report: bool = typer.Option(True, help="Write the report when the sweep is done."),
) -> None:
    """Run (or resume) the sweep declared in CONFIG; finished cells are skipped."""
    from ragloom.evals.report import write_report
    from ragloom.evals.sweep import SweepConfig, run_sweep

    settings = SweepConfig.from_yaml(config)
    folder = run_dir or Path("runs") / config.stem
    records = run_sweep(settings, folder, executor=executor, shared=not naive)
    typer.echo(f"{len(records)} cells finished in {folder}")
    if report and records:
        typer.echo(json.dumps(write_report(folder)["best_cell"]))


@eval_app.command("report")
def report(
    run_dir: Path = typer.Argument(..., help="A sweep's results folder."),
    metric: str | None = typer.Option(None, help="Rank by this metric (default: headline)."),
) -> None:
    """Write report.md/.csv/.html and the plots into RUN_DIR; print the best cell."""
    from ragloom.evals.report import write_report

    summary = write_report(run_dir, metric)
    typer.echo((run_dir / "report.md").read_text())
    typer.echo(json.dumps({"best_cell": summary["best_cell"], "files": summary["files"]}))
