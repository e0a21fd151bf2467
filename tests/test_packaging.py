"""The package surface: light imports, complete sorted exports, every package installed."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = (
    "torch",
    "faiss",
    "chromadb",
    "ray",
    "sentence_transformers",
    "transformers",
    "openai",
    "cyllama",
    "langchain",
    "langgraph.graph",
    "langgraph.pregel",
)
PACKAGES = ["ragloom", "ragloom.planners", "ragloom.retrievers", "ragloom.runtime", "ragloom.evals"]


def test_import_is_light() -> None:
    code = (
        "import sys, ragloom, ragloom.planners, ragloom.retrievers, ragloom.runtime, ragloom.evals;"
        f"heavy = [m for m in sys.modules if m.startswith({HEAVY!r})];"
        "print(','.join(sorted(heavy)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import ragloom pulled in heavy modules: {out.stdout}"


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_resolvable(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported), f"{name}.__all__ is not sorted"
    assert len(set(exported)) == len(exported), f"{name}.__all__ has duplicates"
    for attr in exported:
        assert getattr(module, attr) is not None, f"{name}.{attr} does not resolve"


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_complete(name: str) -> None:
    """Every public class or function defined in a package's public modules is exported."""
    module = importlib.import_module(name)
    folder = Path(module.__file__).parent
    missing = []
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_") or path.stem in {"cli", "errors"}:
            continue
        sub = importlib.import_module(f"{name}.{path.stem}")
        for attr in getattr(sub, "__all__", []):
            if attr not in module.__all__:
                missing.append(f"{path.stem}.{attr}")
    assert not missing, f"{name}.__all__ lacks public names of its modules: {missing}"


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    dirs = {v: k for k, v in config["package-dir"].items()}
    found = set()
    for folder, package in dirs.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *rel.parts]))
    assert found <= listed, f"packages missing from pyproject: {sorted(found - listed)}"


def test_cli_help_lists_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ragloom.cli", "--help"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "version" in out.stdout
