"""The planners benchmark's scoring against hand-worked BFCL-style examples, and its readers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _planners_data import Case, args_ok, bfcl, ident, schema_function, score_calls  # noqa: E402

from ragloom._config import data_dir  # noqa: E402
from ragloom.tools import Tool  # noqa: E402

GOLD = [("area", {"length": [7.0], "breadth": [3.0], "unit": ["", "m"]}), ("circle", {"r": [5]})]


def test_args_follow_bfcl_accepted_values() -> None:
    assert args_ok({"length": 7, "breadth": 3.0}, GOLD[0][1])  # ints match floats; unit optional
    assert args_ok({"length": 7, "breadth": 3, "unit": "M"}, GOLD[0][1])  # case-insensitive
    assert not args_ok({"length": 7}, GOLD[0][1])  # a required value is missing
    assert not args_ok({"length": 7, "breadth": 3, "colour": "red"}, GOLD[0][1])  # unknown
    assert not args_ok({"length": 8, "breadth": 3}, GOLD[0][1])


def test_parallel_calls_match_in_any_order_and_repeats_count_once() -> None:
    case = Case("c", "q", {}, GOLD)
    good = [("circle", {"r": 5}), ("area", {"length": 7, "breadth": 3})]
    assert score_calls(good, case) == (True, True)
    assert score_calls([*good, good[0]], case) == (True, True)  # an exact repeat
    assert score_calls([("circle", {"r": 6}), good[1]], case) == (True, False)
    assert score_calls([good[0]], case) == (False, False)  # a call is missing
    assert score_calls([], Case("i", "q", {}, [])) == (True, True)  # irrelevance: no call


def test_schema_functions_become_tools_with_typed_arguments() -> None:
    schema = {
        "properties": {"side": {"type": "integer"}, "unit": {"type": "string"}},
        "required": ["side"],
    }
    tool = Tool.from_function(schema_function("sq_area", "Area of a square.", schema))
    assert tool.parameters == ["side", "unit"]
    assert tool.invoke({"side": 3}) == "sq_area done"
    assert ident("math.hypot") == "math_hypot"


@pytest.mark.skipif(not (data_dir() / "bfcl_v4_from_bfcl_eval_wheel").exists(), reason="no data")
def test_bfcl_reader_keeps_gold_calls_and_identifier_names() -> None:
    case = bfcl(data_dir() / "bfcl_v4_from_bfcl_eval_wheel", "parallel_multiple", 2)[1]
    assert [name for name, _ in case.gold] == ["area_rectangle_calculate", "area_circle_calculate"]
    assert set(case.tools) == set(case.schemas) and all(n.isidentifier() for n in case.tools)
