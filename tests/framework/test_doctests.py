"""The examples in the DAG runtime's docstrings run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "ragloom._tool_schema",
    "ragloom.plan",
    "ragloom.plan_parser",
    "ragloom.tfu",
    "ragloom.tools",
    "ragloom.trace",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
