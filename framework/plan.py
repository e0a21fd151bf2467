"""Plans: tasks (tool calls with ``$N`` references to earlier results) forming a DAG.

A :class:`Task` is one numbered tool call; its dependencies are the ``$N`` / ``${N}``
references in its arguments (plus any given explicitly). A :class:`Plan` is a list of tasks
that :meth:`Plan.validate` checks (unique increasing ids, references only to earlier tasks, no
cycles, known tools, arguments that fit the tool's schema) and that can be drawn as Mermaid.
:func:`resolve_args` substitutes finished results into a task's arguments.

Argument keys: keyword arguments keep their names; positional arguments are mapped onto the
tool's parameter order when the parser has a registry, and are kept under the keys ``"0"``,
``"1"``, ... otherwise (:meth:`ragloom.tools.Tool.validate_args` maps those keys at call time).

A ``$N`` is taken as a reference wherever it appears in a string argument (as in LLMCompiler),
so a literal dollar amount such as ``"$5"`` inside a query reads as a reference to task 5.

This module does not parse plan text (:mod:`ragloom.plan_parser`) or run tasks
(:mod:`ragloom.tfu`).
"""

from __future__ import annotations

import graphlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pydantic

from ragloom._tool_schema import describe_errors
from ragloom.errors import PlanError, ToolError

if TYPE_CHECKING:
    from ragloom.tools import Tool, ToolRegistry

__all__ = ["Plan", "Task", "find_refs", "resolve_args"]

JOIN = "join"
_REF = re.compile(r"\$\{(\d+)\}|\$(\d+)")
_CONTAINERS = (list, tuple, set, frozenset)


@dataclass(frozen=True, slots=True)
class Task:
    """One numbered tool call of a plan.

    Attributes:
        id: the task's number in the plan (positive, increasing through the plan).
        tool: the tool's name (``"join"`` for the final marker).
        args: keyword arguments; positional ones under ``"0"``, ``"1"``... (see module doc).
        deps: ids this task waits for; the ``$N`` references in ``args`` are always added.
        line: 1-based line in the plan text it came from, if parsed.
        raw: the plan line as written (``""`` if built in code).

    >>> Task(2, "search", {"query": "about $1"}).deps
    frozenset({1})
    """

    id: int
    tool: str
    args: dict[str, Any] = field(default_factory=dict)
    deps: frozenset[int] = frozenset()
    line: int | None = None
    raw: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "deps", frozenset(self.deps) | find_refs(self.args))

    @property
    def is_join(self) -> bool:
        """Whether this is the ``join()`` marker that ends a plan."""
        return self.tool == JOIN

    def call_text(self) -> str:
        """The call as plan text: ``search('Eiffel Tower', k=3)``."""
        parts = [repr(v) if k.isdigit() else f"{k}={v!r}" for k, v in self.args.items()]
        return f"{self.tool}({', '.join(parts)})"


@dataclass(slots=True)
class Plan:
    """A DAG of tasks, in plan order.

    >>> plan = Plan([Task(1, "search", {"q": "a"}), Task(2, "search", {"q": "b"}),
    ...              Task(3, "math", {"expr": "$1 + $2"})])
    >>> plan.validate(); plan.critical_path()
    ([1, 3], 2.0)
    """

    tasks: list[Task]

    def validate(self, registry: ToolRegistry | None = None, *, known: Iterable[int] = ()) -> None:
        """Raise :class:`PlanError` naming the first task that is wrong, and how.

        Args:
            registry: when given, tool names and argument types are checked too.
            known: ids finished before this plan (earlier rounds) that tasks may refer to.
        """
        _check_cycles(self.tasks)
        external, seen = set(known), set[int]()
        previous = 0
        for task in self.tasks:
            where = {"task_id": task.id, "line": task.line}
            if task.id <= 0:
                raise PlanError(f"task ids must be positive, got {task.id}", **where)
            if task.id in seen:
                raise PlanError(f"task id {task.id} is used twice", **where)
            if task.id <= previous:
                raise PlanError(f"task ids must increase; {task.id} follows {previous}", **where)
            for dep in sorted(task.deps):
                if dep >= task.id:
                    raise PlanError(_forward(dep, task.id), **where)
                if dep not in seen and dep not in external:
                    raise PlanError(f"refers to ${dep}, which is not an earlier task", **where)
            if registry is not None and not task.is_join:
                check_task_args(_lookup(registry, task), task)
            seen.add(task.id)
            previous = task.id

    def critical_path(
        self, durations: Mapping[int, float] | None = None
    ) -> tuple[list[int], float]:
        """The longest dependency chain: (task ids along it, its total duration).

        Args:
            durations: seconds per task id (1.0 for each task not given).
        """
        by_id = {t.id: t for t in self.tasks}
        cost = {i: (durations or {}).get(i, 1.0) for i in by_id}
        best: dict[int, tuple[float, int | None]] = {}
        for tid in _topological(self.tasks):
            preds = [d for d in by_id[tid].deps if d in by_id]
            prev = max(preds, key=lambda d: best[d][0], default=None)
            best[tid] = ((best[prev][0] if prev is not None else 0.0) + cost[tid], prev)
        if not best:
            return [], 0.0
        last = max(best, key=lambda i: best[i][0])
        total = best[last][0]
        path: list[int] = []
        end: int | None = last
        while end is not None:
            path.append(end)
            end = best[end][1]
        return path[::-1], total

    def to_mermaid(self) -> str:
        """The DAG as a Mermaid flowchart (one node per task, one edge per dependency).

        >>> print(Plan([Task(1, "a"), Task(2, "b", {"x": "$1"})]).to_mermaid())
        flowchart TD
            t1["1. a()"]
            t2["2. b(x='$1')"]
            t1 --> t2
        """
        ids = {t.id for t in self.tasks}
        lines = ["flowchart TD"]
        lines += [f'    t{t.id}["{_mermaid_label(f"{t.id}. {t.call_text()}")}"]' for t in self]
        for task in self.tasks:
            lines += [f"    t{d} --> t{task.id}" for d in sorted(task.deps) if d in ids]
        return "\n".join(lines)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)


def find_refs(value: Any) -> frozenset[int]:
    """Task ids referenced as ``$N`` / ``${N}`` anywhere in ``value`` (strings, lists, dicts).

    >>> sorted(find_refs({"a": "$1 and ${2}", "b": ["$3", 4]}))
    [1, 2, 3]
    """
    refs: set[int] = set()
    _collect_refs(value, refs)
    return frozenset(refs)


def _collect_refs(value: Any, refs: set[int]) -> None:
    if isinstance(value, str):
        if "$" in value:  # fast path: most arguments hold no reference
            refs.update(int(a or b) for a, b in _REF.findall(value))
    elif isinstance(value, dict):
        for item in value.values():
            _collect_refs(item, refs)
    elif isinstance(value, _CONTAINERS):
        for item in value:
            _collect_refs(item, refs)


def resolve_args(task: Task, results: Mapping[int, Any]) -> dict[str, Any]:
    """``task.args`` with every ``$N`` replaced by ``results[N]``.

    An argument that is exactly ``"$N"`` or ``"${N}"`` receives the object unchanged; inside a
    longer string the result is formatted with ``str()``. Works inside lists, tuples and dicts.

    >>> resolve_args(Task(3, "f", {"x": "$1", "y": ["n=${2}!"]}), {1: [1, 2], 2: 7})
    {'x': [1, 2], 'y': ['n=7!']}
    """
    if not task.deps:  # no $N anywhere (deps include every reference)
        return dict(task.args)
    missing = sorted(d for d in find_refs(task.args) if d not in results)
    if missing:
        raise PlanError(f"no result for ${missing[0]}", task_id=task.id, line=task.line)
    return {k: _substitute(v, results) for k, v in task.args.items()}


def check_task_args(tool: Tool, task: Task) -> None:
    """Raise :class:`PlanError` if the task's arguments cannot fit the tool's schema.

    Arguments that hold a ``$N`` reference are checked by name only: their type is known
    once the referenced task has finished.
    """
    where = {"task_id": task.id, "line": task.line}
    try:
        named = tool.bind(task.args)
    except ToolError as exc:
        raise PlanError(str(exc), **where) from None
    pending = {k for k, v in named.items() if find_refs(v)}
    try:
        tool.args_schema.model_validate(named)
    except pydantic.ValidationError as exc:
        errors = [
            err
            for err in exc.errors()
            if not (err["loc"] and err["loc"][0] in pending)
            or err["type"] in ("extra_forbidden", "missing")
        ]
        if errors:
            raise PlanError(describe_errors(errors), **where) from None


def _forward(dep: int, task_id: int) -> str:
    if dep == task_id:
        return f"refers to ${dep}, itself"
    return f"refers to ${dep}, a later task (forward reference)"


def _lookup(registry: ToolRegistry, task: Task) -> Tool:
    try:
        return registry.get(task.tool)
    except ToolError as exc:
        raise PlanError(str(exc), task_id=task.id, line=task.line) from None


def _substitute(value: Any, results: Mapping[int, Any]) -> Any:
    if isinstance(value, str):
        if "$" not in value:
            return value
        exact = _REF.fullmatch(value)
        if exact:
            return results[int(exact.group(1) or exact.group(2))]
        return _REF.sub(lambda m: str(results[int(m.group(1) or m.group(2))]), value)
    if isinstance(value, dict):
        return {k: _substitute(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, results) for v in value]
    if isinstance(value, tuple):
        return tuple(_substitute(v, results) for v in value)
    return value


def _check_cycles(tasks: list[Task]) -> None:
    try:
        _topological(tasks)
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        path = " -> ".join(f"${i}" for i in cycle)
        raise PlanError(f"dependency cycle {path}", task_id=cycle[0]) from None


def _topological(tasks: list[Task]) -> list[int]:
    ids = {t.id for t in tasks}
    sorter = graphlib.TopologicalSorter({t.id: [d for d in t.deps if d in ids] for t in tasks})
    return list(sorter.static_order())


def _mermaid_label(text: str) -> str:
    return (
        text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
    )
