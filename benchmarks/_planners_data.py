"""Data and scoring for benchmarks/planners.py: MetaTool, BFCL v4, HotpotQA/MuSiQue.

Readers take the original files as they are (``data_dir()``); scoring follows BFCL's
AST checker in spirit: every gold parameter must be present with an accepted value (``""``
among the accepted values means it may be omitted), no unknown parameters, strings compared
case- and punctuation-insensitively, numbers by value. Calls of a parallel case are matched
one to one, in any order.
"""

from __future__ import annotations

import csv
import inspect
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TYPES = {"string": str, "integer": int, "float": float, "number": float, "boolean": bool,
         "array": list, "dict": dict, "object": dict, "tuple": list, "any": Any}  # fmt: skip


@dataclass
class Case:
    """One routing query: the question, candidate tools, and the gold calls."""

    id: str
    question: str
    tools: dict[str, str]  # identifier name -> description
    gold: list[tuple[str, dict[str, list[Any]]]] = field(default_factory=list)  # (name, params)
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> JSON schema
    original: dict[str, str] = field(default_factory=dict)  # identifier -> original name


def ident(name: str) -> str:
    """A tool name usable in a plan: ``math.hypot`` -> ``math_hypot``."""
    return re.sub(r"\W", "_", name)


def metatool_single(root: Path, n: int, seed: int = 0) -> tuple[list[Case], dict[str, str]]:
    """``n`` single-tool queries (seeded sample) and the 199 tool descriptions.

    Tool names become identifiers (``PDF&URLTool`` -> ``PDF_URLTool``) in both.
    """
    tools = json.loads((root / "plugin_des.json").read_text())
    with (root / "all_clean_data.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["Tool"] in tools]
    sample = random.Random(seed).sample(rows, n)
    cases = [
        Case(f"metatool-{i}", r["Query"], {}, [(ident(r["Tool"]), {})])
        for i, r in enumerate(sample)
    ]
    return cases, {ident(k): v for k, v in tools.items()}


def metatool_multi(root: Path, n: int, seed: int = 0) -> tuple[list[Case], dict[str, str]]:
    """``n`` multi-tool queries and their tool descriptions (``big_tool_des.json``)."""
    tools = json.loads((root / "big_tool_des.json").read_text())
    rows = [
        r
        for r in json.loads((root / "multi_tool_query_golden.json").read_text())
        if all(t in tools for t in r["tool"])
    ]
    sample = random.Random(seed).sample(rows, n)
    cases = [
        Case(f"metatool-multi-{i}", r["query"], {}, [(ident(t), {}) for t in r["tool"]])
        for i, r in enumerate(sample)
    ]
    return cases, {ident(k): v for k, v in tools.items()}


def bfcl(root: Path, category: str, n: int) -> list[Case]:
    """The first ``n`` cases of a BFCL v4 category, with gold calls (none for irrelevance)."""
    rows = [json.loads(line) for line in (root / f"BFCL_v4_{category}.json").open()][:n]
    answers = root / "possible_answer" / f"BFCL_v4_{category}.json"
    gold = {}
    if answers.exists():
        gold = {g["id"]: g["ground_truth"] for g in map(json.loads, answers.open())}
    cases = []
    for row in rows:
        functions = row["function"]
        original = {ident(f["name"]): f["name"] for f in functions}
        calls = [
            (ident(name), params)
            for call in gold.get(row["id"], [])
            for name, params in call.items()
        ]
        cases.append(Case(
            id=row["id"],
            question=row["question"][0][-1]["content"],
            tools={ident(f["name"]): f["description"] for f in functions},
            gold=calls,
            schemas={ident(f["name"]): f["parameters"] for f in functions},
            original=original,
        ))  # fmt: skip
    return cases


def schema_function(name: str, description: str, schema: dict[str, Any] | None) -> Any:
    """A Python function whose signature follows a BFCL JSON schema (for ``Tool.from_function``).

    It returns a short acknowledgement; the benchmark scores the calls, not their results.
    """
    params = []
    props = (schema or {}).get("properties", {})
    required = set((schema or {}).get("required", []))
    for pname, spec in props.items():
        if not pname.isidentifier():
            continue
        annotation: Any = TYPES.get(spec.get("type", "any"), Any)
        default = inspect.Parameter.empty if pname in required else None
        if default is None and annotation is not Any:
            annotation = annotation | None
        params.append(
            inspect.Parameter(
                pname, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
        )
    params.sort(key=lambda p: p.default is not inspect.Parameter.empty)

    def call(**kwargs: Any) -> str:
        return f"{name} done"

    call.__name__ = name
    call.__doc__ = description
    call.__signature__ = inspect.Signature(params, return_annotation=str)  # type: ignore[attr-defined]
    call.__annotations__ = {p.name: p.annotation for p in params} | {"return": str}
    return call


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return re.sub(r"[\s,./\-_*^'\"]", "", value.lower())
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list | tuple):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def args_ok(args: dict[str, Any], accepted: dict[str, list[Any]]) -> bool:
    """Whether a call's arguments fit BFCL's accepted values.

    >>> args_ok({"side1": 5, "side2": 4.0}, {"side1": [5], "side2": [4], "flag": ["", True]})
    True
    >>> args_ok({"city": "Paris"}, {"city": ["London"]})
    False
    """
    if any(k not in accepted for k in args if args[k] is not None):
        return False
    for key, values in accepted.items():
        if args.get(key) is None:
            if "" not in values:
                return False
        elif _norm(args[key]) not in [_norm(v) for v in values if v != ""]:
            return False
    return True


def score_calls(calls: list[tuple[str, dict[str, Any]]], case: Case) -> tuple[bool, bool]:
    """(tool selection correct, arguments correct) for predicted calls against the gold.

    Tool selection: the multiset of called tool names equals the gold's (for irrelevance: no
    call at all). Arguments: additionally every gold call is matched one to one by a predicted
    call with acceptable arguments. Exact repeats of a call (same tool, same arguments) count
    once, for every system alike: they add nothing (small models in ReAct loops repeat).
    """
    calls = list(
        {json.dumps([n, a], sort_keys=True, default=str): (n, a) for n, a in calls}.values()
    )
    names_ok = Counter(n for n, _ in calls) == Counter(n for n, _ in case.gold)
    if not names_ok:
        return False, False
    left = list(calls)
    for name, accepted in case.gold:
        match = next((c for c in left if c[0] == name and args_ok(c[1], accepted)), None)
        if match is None:
            return True, False
        left.remove(match)
    return True, True
