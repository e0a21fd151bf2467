"""Hyper-parameter sweeps over RAG pipelines: declared in Python or YAML, resumable, shared.

A :class:`SweepConfig` names a data set, the axes to sweep (any :class:`CellConfig` field:
store, retrieval, chunker, chunk_size, chunk_overlap, top_k, rerank, temperature, crag) and
whether to take the full grid or a random sample of it. :func:`run_sweep` runs every cell
not yet finished in the run folder's ``results.sqlite`` (so a killed sweep resumes where it
stopped), sharing chunks, embeddings, indexes and generations between cells, locally or
fanned out over Ray (one task per chunking, so each worker still shares its index).

YAML::

    dataset: covid_qa
    num_questions: 10
    axes:
      store: [faiss, chroma]
      chunk_size: [128, 256]
    generate: false

This module does not render reports (see :mod:`ragloom.evals.report`).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ragloom.errors import ConfigError, EvalError
from ragloom.evals._metrics_registry import CLASSIC, build_metrics
from ragloom.evals.pipeline import CellConfig, Workspace
from ragloom.evals.results import CellRecord, ResultStore
from ragloom.evals.runner import make_embedder, make_llm, pick_examples, score_cell

__all__ = ["SweepConfig", "run_sweep"]

_FIELDS = {f.name for f in dataclasses.fields(CellConfig)}


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepConfig:
    """A sweep: data, axes, sampling and what to measure.

    Attributes:
        dataset: a name from :data:`ragloom.evals.DATASETS`.
        num_questions: questions drawn (seeded) from the data set.
        max_docs: index at most this many passages: the drawn questions' gold passages
            plus distractors (questions are drawn only while their gold fits).
        max_doc_chars: cut every passage to this many characters (for quick runs); only
            questions whose answer spans lie inside are drawn.
        axes: CellConfig field -> values to sweep.
        base: CellConfig field -> fixed value for fields not swept.
        sample: take this many random grid points (None: the full grid).
        seed: seed for question and grid sampling, and for generation.
        generate: generate answers (False: retrieval metrics only, no LLM).
        max_tokens: generation budget per answer.
        model: the generation model for ``load_llm``.
        embedder: ``"minilm"`` (default embedder, disk-cached) or ``"hash"`` (tests).
        metrics: metric names (see ``ragloom.evals._metrics_registry``).
        judge_model: the judge for judged metrics (None: the generation model).
    """

    dataset: str = "covid_qa"
    num_questions: int = 10
    max_docs: int | None = None
    max_doc_chars: int | None = None
    axes: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    base: Mapping[str, Any] = field(default_factory=dict)
    sample: int | None = None
    seed: int = 0
    generate: bool = True
    max_tokens: int = 48
    model: str = "qwen2.5-coder-0.5b-instruct"
    embedder: Literal["minilm", "hash"] = "minilm"
    metrics: tuple[str, ...] = CLASSIC
    judge_model: str | None = None

    def __post_init__(self) -> None:
        unknown = (set(self.axes) | set(self.base)) - _FIELDS
        if unknown:
            raise ConfigError(f"unknown sweep axes {sorted(unknown)}; "
                              f"choose from {sorted(_FIELDS)}")
        empty = [name for name, values in self.axes.items() if not values]
        if empty:
            raise ConfigError(f"sweep axes {empty} have no values")
        if self.num_questions < 1 or (self.sample is not None and self.sample < 1):
            raise ConfigError("num_questions and sample must be at least 1")
        object.__setattr__(self, "metrics", tuple(self.metrics))

    @classmethod
    def from_yaml(cls, path: str | Path) -> SweepConfig:
        """Read a YAML file whose keys are this class's fields."""
        import yaml

        try:
            raw = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read sweep config {path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"sweep config {path} must be a mapping of settings")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - fields
        if unknown:
            raise ConfigError(f"{path}: unknown settings {sorted(unknown)}; use {sorted(fields)}")
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable settings."""
        out = dataclasses.asdict(self)
        out["axes"] = {k: list(v) for k, v in self.axes.items()}
        out["base"], out["metrics"] = dict(self.base), list(self.metrics)
        return out

    def cells(self) -> list[CellConfig]:
        """The grid (or its seeded random sample), duplicates removed, in grid order."""
        names = sorted(self.axes)
        grid = [dict(zip(names, values, strict=True))
                for values in itertools.product(*(self.axes[n] for n in names))]
        cells = list({c.cell_id: c for c in (CellConfig(**{**self.base, **point})
                                              for point in grid)}.values())
        if self.sample is not None and self.sample < len(cells):
            keep = set(random.Random(self.seed).sample(range(len(cells)), self.sample))
            cells = [c for i, c in enumerate(cells) if i in keep]
        return cells


def _open_run(config: SweepConfig, run_dir: Path) -> ResultStore:
    store = ResultStore(run_dir / "results.sqlite")
    stored = store.meta("config")
    if stored is not None and stored != config.to_dict():
        raise EvalError(f"{run_dir} holds results of a different sweep config; "
                        "resume with the same config or use a new run folder")
    store.set_meta("config", config.to_dict())
    return store


def _group_key(cell: CellConfig) -> tuple[str, str]:
    return cell.chunk_spec, cell.store


def run_cells(config: SweepConfig, cells: Sequence[CellConfig], run_dir: Path, *,
              shared: bool = True, llm: Any = None, embedder: Any = None, judge: Any = None,
              progress: bool = True, on_cell_start: Callable[[CellConfig], None] | None = None
              ) -> list[str]:
    """Run ``cells`` in this process and write each to the results file as it finishes."""
    from tqdm.auto import tqdm

    store = ResultStore(run_dir / "results.sqlite")
    examples, corpus = pick_examples(config)
    embedder = embedder or make_embedder(config.embedder)
    if llm is None and config.generate:
        llm = make_llm(config.model)
    ws = Workspace(corpus, embedder,
                   llm if config.generate or _needs_llm(cells) else None, shared=shared,
                   max_tokens=config.max_tokens, seed=config.seed)
    if judge is None and config.judge_model is None and llm is not None:
        from ragloom.evals.judge import Judge

        judge = Judge(getattr(llm, "llm", llm))  # the generation model judges too
    metrics = build_metrics(config.metrics, judge=judge, embedder=embedder,
                            judge_model=config.judge_model or config.model,
                            generate=config.generate)
    for ex in examples:  # warm the query cache: every cell then times the search alone
        embedder.embed_query(ex.question)
    done = []
    for cell in tqdm(sorted(cells, key=_group_key), desc="sweep cells", disable=not progress):
        if on_cell_start:
            on_cell_start(cell)
        record, rows = score_cell(ws, cell, examples, metrics, generate=config.generate)
        store.write_cell(record, rows)
        done.append(cell.cell_id)
    store.close()
    return done


def _needs_llm(cells: Sequence[CellConfig]) -> bool:
    return any(c.rerank or c.crag for c in cells)


def run_sweep(config: SweepConfig, run_dir: str | Path, *, executor: str = "local",
              shared: bool = True, llm: Any = None, embedder: Any = None, judge: Any = None,
              progress: bool = True, on_cell_start: Callable[[CellConfig], None] | None = None
              ) -> list[CellRecord]:
    """Run (or resume) a sweep; return every finished cell of the run folder.

    Args:
        config: the sweep.
        run_dir: the run folder (``results.sqlite`` inside); reuse it to resume.
        executor: ``"local"`` or ``"ray"`` (Ray imported only then).
        shared: share chunks/embeddings/indexes between cells (False: the naive baseline).
        llm, embedder, judge: override the models the config names (local executor only).
        progress: show progress bars.
        on_cell_start: called before each cell is computed (local executor).
    """
    run_dir = Path(run_dir)
    store = _open_run(config, run_dir)
    finished = store.finished_ids()
    todo = [c for c in config.cells() if c.cell_id not in finished]
    if todo and executor == "local":
        run_cells(config, todo, run_dir, shared=shared, llm=llm, embedder=embedder,
                  judge=judge, progress=progress, on_cell_start=on_cell_start)
    elif todo and executor == "ray":
        from ragloom.evals._ray import run_on_ray

        run_on_ray(config, todo, run_dir, shared=shared, progress=progress)
    elif executor not in ("local", "ray"):
        raise ConfigError(f"executor must be 'local' or 'ray', got {executor!r}")
    records = store.cells()
    store.close()
    return records
