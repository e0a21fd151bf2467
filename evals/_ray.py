"""The Ray executor of sweeps (private; Ray is imported only here, only when used).

Cells are grouped by (chunking, store); each group is one Ray task that rebuilds the
workspace from the config and runs its cells in order, so the group still chunks, embeds
and indexes once. Workers write each finished cell to the shared ``results.sqlite``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragloom._config import cache_dir, data_dir
from ragloom._lazy import require
from ragloom.evals.pipeline import CellConfig

__all__ = ["run_on_ray"]


def _group(config: Any, cells: Sequence[CellConfig], run_dir: str, shared: bool) -> list[str]:
    from ragloom.evals.sweep import run_cells

    return run_cells(config, cells, Path(run_dir), shared=shared, progress=False)


def run_on_ray(config: Any, cells: Sequence[CellConfig], run_dir: Path, *, shared: bool,
               progress: bool) -> list[str]:
    """Fan the cells out over Ray (connecting to, or starting, a local Ray) and wait."""
    ray = require("ray", "distributed")
    from tqdm.auto import tqdm

    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    groups: dict[tuple[str, str], list[CellConfig]] = defaultdict(list)
    for cell in cells:
        groups[(cell.chunk_spec, cell.store)].append(cell)
    # workers may start in another folder: hand them the resolved data and cache folders
    env = {"RAGLOOM_DATA_DIR": str(data_dir()), "RAGLOOM_CACHE_DIR": str(cache_dir())}
    task = ray.remote(_group).options(runtime_env={"env_vars": env})
    pending = [task.remote(config, group, str(run_dir), shared) for group in groups.values()]
    done: list[str] = []
    with tqdm(total=len(cells), desc="sweep cells (ray)", disable=not progress) as bar:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            finished = ray.get(ready[0])
            done.extend(finished)
            bar.update(len(finished))
    return done
