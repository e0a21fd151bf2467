"""The README's Python cannot rot: its quickstart runs, and every other Python block compiles
and imports only names that exist. Also: the notebooks agree with their generator script.

A fenced block whose info string is exactly ``python`` is executed (all of them in order, in
one namespace, in a temporary working directory). ``python no-test`` blocks need a server, a
GPU, a folder of the user's own documents or a long model run; they are compiled, and each of
their ``from X import Y`` lines is resolved.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```", re.S | re.M)


def python_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, source) of every fenced block whose language is python."""
    blocks = [(m["info"].strip(), m["body"]) for m in FENCE.finditer(text)]
    return [(info, body) for info, body in blocks if info.split(" ")[0] == "python"]


def test_python_blocks_are_found() -> None:
    blocks = python_blocks("x\n```python\nprint(1)\n```\n```python no-test\nimport y\n```\n")
    assert blocks == [("python", "print(1)\n"), ("python no-test", "import y\n")]


def test_readme_quickstart_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runnable = [body for info, body in python_blocks(README.read_text()) if info == "python"]
    assert runnable, "the README has no runnable ```python block"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    for n, body in enumerate(runnable):
        exec(compile(body, f"README.md python block {n + 1}", "exec"), namespace)
    result = namespace["result"]
    assert "Rhine" in result.answer  # type: ignore[attr-defined]
    assert (tmp_path / "timeline.png").stat().st_size > 0


def test_readme_other_blocks_compile_and_import() -> None:
    others = [body for info, body in python_blocks(README.read_text()) if info != "python"]
    missing = []
    for body in others:
        tree = ast.parse(body)  # a syntax error fails here
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = importlib.import_module(node.module)
                missing += [
                    f"{node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)
                ]
    assert not missing, f"README imports names that do not exist: {missing}"


def test_readme_keeps_the_benchmarks_section() -> None:
    assert re.search(r"^## Benchmarks$", README.read_text(), re.M)


def test_notebooks_match_their_generator() -> None:
    """``notebooks/_build.py`` writes the .ipynb files; the committed ones must be its output."""
    spec = importlib.util.spec_from_file_location("_build", ROOT / "notebooks" / "_build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    for name in build.NOTEBOOKS:
        stored = nbformat.writes(nbformat.read(ROOT / "notebooks" / name, as_version=4))
        assert stored == nbformat.writes(build.build(name)), (
            f"notebooks/{name} differs from notebooks/_build.py: run `python notebooks/_build.py`"
        )
