"""Every notebook in notebooks/ runs top to bottom headless, and is stored without outputs."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    dirty = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.outputs or c.execution_count)
    ]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; strip them before committing"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_headless(path: Path, tmp_path: Path) -> None:
    from nbclient import NotebookClient

    from ragloom._config import data_dir

    nb = nbformat.read(path, as_version=4)
    needs = nb.metadata.get("ragloom", {}).get("needs_data", [])
    missing = [name for name in needs if not (data_dir() / name).is_dir()]
    if missing:
        pytest.skip(f"{path.name} needs data sets {missing} under {data_dir()}")
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("RAGLOOM_DATA_DIR", str(data_dir()))  # the kernel runs in tmp_path
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors, f"{path.name} raised: {errors[0].get('ename')}: {errors[0].get('evalue')}"
