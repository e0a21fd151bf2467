"""Parse LLMCompiler plan text into tasks, whole (:func:`parse_plan`) or as it streams.

The format, one item per line::

    Thought: I need both populations first.
    1. search("population of Paris", k=3)
    2. search("population of Rome")
    3. math("$1 / $2")
    4. join()
    <END_OF_PLAN>

Task lines are ``N. tool(arguments)`` with Python literal arguments (strings, numbers,
booleans, ``None``, lists, tuples, dicts); ``$N`` / ``${N}`` may also appear unquoted and then
means the string ``"$N"``. Thought lines and blank lines are skipped; ``<END_OF_PLAN>`` ends
the plan (anything after it is ignored). Every other line is a :class:`PlanError` naming the
line. Ids must increase; a reference must point to an earlier task of this plan, or to an id
below the plan's first id (a task of an earlier round). Tasks after ``join()`` are refused.

Text is parsed with :mod:`ast` and :func:`ast.literal_eval`, never evaluated. This module does
not run tasks.
"""

from __future__ import annotations

import ast
import re
import warnings
from typing import TYPE_CHECKING, Any

from ragloom.errors import PlanError, ToolError
from ragloom.plan import Plan, Task, _forward, check_task_args

if TYPE_CHECKING:
    from ragloom.tools import ToolRegistry

__all__ = ["END_OF_PLAN", "StreamingPlanParser", "parse_plan"]

END_OF_PLAN = "<END_OF_PLAN>"
_TASK_LINE = re.compile(r"([0-9]+)\s*\.\s*(.*)", re.DOTALL)
_THOUGHT = re.compile(r"thought\s*:", re.IGNORECASE)
_REF_NAME = re.compile(r"__ragloom_ref_([0-9]+)__")
_REF_TOKEN = re.compile(r"\$\{([0-9]+)\}|\$([0-9]+)")
_PARSE_ERRORS = (SyntaxError, ValueError, TypeError, MemoryError, RecursionError)


def parse_plan(text: str, registry: ToolRegistry | None = None) -> Plan:
    """Parse a whole plan.

    Args:
        text: the planner's output.
        registry: when given, tool names and argument types are checked and positional
            arguments are named after the tool's parameters.

    Raises:
        PlanError: with ``.line`` set to the first bad line.

    >>> plan = parse_plan('1. search("Eiffel Tower", k=3)\\n2. join()')
    >>> [(t.id, t.tool, t.args) for t in plan]
    [(1, 'search', {'0': 'Eiffel Tower', 'k': 3}), (2, 'join', {})]
    """
    parser = StreamingPlanParser(registry)
    tasks = parser.feed(text)
    tasks += parser.close()
    return Plan(tasks)


class StreamingPlanParser:
    """Turn streamed plan text into tasks as soon as each task line is complete.

    A malformed line raises :class:`PlanError`; when the same ``feed`` call also completed good
    task lines before it, those tasks are returned first and the error is raised by the next
    ``feed`` or ``close`` call, so no parsed task is lost. After an error, nothing more is parsed.

    >>> p = StreamingPlanParser()
    >>> [t.raw for t in p.feed("1. search('a')\\n2. sea")]
    ["1. search('a')"]
    >>> [(t.id, t.deps) for t in p.feed("rch('$1')\\n")]
    [(2, frozenset({1}))]
    """

    def __init__(self, registry: ToolRegistry | None = None):
        self.registry = registry
        self._buffer = ""
        self._line = 0
        self._done = False
        self._joined = False
        self._first_id: int | None = None
        self._ids: set[int] = set()
        self._last_id = 0
        self._error: PlanError | None = None  # raised by the next call

    @property
    def done(self) -> bool:
        """Whether ``<END_OF_PLAN>`` was seen (later text is ignored)."""
        return self._done

    def feed(self, delta: str) -> list[Task]:
        """Add streamed text; returns the tasks whose lines completed (a line ends at ``\\n``)."""
        self._raise_pending()
        if self._done:
            return []
        self._buffer += delta
        end = self._buffer.find(END_OF_PLAN)
        if end >= 0:
            lines = self._buffer[:end].split("\n")
            self._buffer, self._done = "", True
        else:
            *lines, self._buffer = self._buffer.split("\n")
        return self._take_lines(lines)

    def close(self) -> list[Task]:
        """Flush the last line (the stream ended); ``PlanError`` if it is malformed."""
        self._raise_pending()
        if self._done:
            return []
        rest, self._buffer, self._done = self._buffer, "", True
        task = self._take(rest)
        return [task] if task is not None else []

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _take_lines(self, lines: list[str]) -> list[Task]:
        tasks: list[Task] = []
        for line in lines:
            try:
                task = self._take(line)
            except PlanError as exc:
                if not tasks:
                    raise
                self._error = exc  # hand out the good tasks first
                return tasks
            if task is not None:
                tasks.append(task)
        return tasks

    def _take(self, text: str) -> Task | None:
        self._line += 1
        try:
            return self._parse_line(text.strip())
        except PlanError:
            self._done = True  # the stream is broken from here on
            raise

    def _parse_line(self, raw: str) -> Task | None:
        if not raw or _THOUGHT.match(raw):
            return None
        match = _TASK_LINE.fullmatch(raw)
        if match is None:
            raise PlanError(
                f"expected '1. tool(arguments)', 'Thought: ...' or {END_OF_PLAN}, got {raw[:80]!r}",
                line=self._line,
            )
        try:
            task_id = int(match.group(1))
        except ValueError:  # more digits than int() accepts
            raise PlanError("task id is too long", line=self._line) from None
        name, args = parse_call(match.group(2), line=self._line)
        return self._check(Task(task_id, name, args, line=self._line, raw=raw))

    def _check(self, task: Task) -> Task:
        where = {"line": task.line, "task_id": task.id}
        if self._joined:
            raise PlanError("no task may follow join()", **where)
        if task.id <= self._last_id:
            raise PlanError(f"task ids must increase; {task.id} follows {self._last_id}", **where)
        first = self._first_id if self._first_id is not None else task.id
        for dep in sorted(task.deps):
            if dep >= task.id:
                raise PlanError(_forward(dep, task.id), **where)
            if dep >= first and dep not in self._ids:
                raise PlanError(f"refers to ${dep}, which is not a task of this plan", **where)
        if task.is_join:
            if task.args:
                raise PlanError("join() takes no arguments", **where)
            self._joined = True
        elif self.registry is not None:
            task = self._named(task)
        self._first_id, self._last_id = first, task.id
        self._ids.add(task.id)
        return task

    def _named(self, task: Task) -> Task:
        try:
            tool = self.registry.get(task.tool)  # type: ignore[union-attr]
        except ToolError as exc:
            raise PlanError(str(exc), line=task.line, task_id=task.id) from None
        check_task_args(tool, task)
        named = tool.bind(task.args)  # cannot fail: check_task_args bound them already
        return Task(task.id, task.tool, named, task.deps, line=task.line, raw=task.raw)


def parse_call(text: str, *, line: int | None = None) -> tuple[str, dict[str, Any]]:
    """Parse ``tool(arg, key=value)`` into the tool name and its arguments (positional keys
    ``"0"``, ``"1"``...). Unquoted ``$N`` becomes the string ``"$N"``.

    >>> parse_call('math("$1 + 2", $2, scale=[1, ${3}])')
    ('math', {'0': '$1 + 2', '1': '$2', 'scale': [1, '$3']})
    """
    try:
        # an unknown escape such as "\$" keeps its backslash, as Python reads it, whatever the
        # warning filters (as an error, the DeprecationWarning would turn it into a PlanError)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (DeprecationWarning, SyntaxWarning))
            tree = ast.parse(_quote_refs(text), mode="eval")
    except _PARSE_ERRORS as exc:
        raise PlanError(f"not a tool call: {_reason(exc)} in {text[:80]!r}", line=line) from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise PlanError(f"expected tool(arguments), got {text[:80]!r}", line=line)
    args: dict[str, Any] = {}
    for index, node in enumerate(call.args):
        args[str(index)] = _literal(node, line)
    for keyword in call.keywords:
        if keyword.arg is None:
            raise PlanError("**kwargs are not allowed in a plan", line=line)
        args[keyword.arg] = _literal(keyword.value, line)
    return call.func.id, args


def _literal(node: ast.expr, line: int | None) -> Any:
    if isinstance(node, ast.Starred):
        raise PlanError("*args are not allowed in a plan", line=line)
    node = _RefToString().visit(node)
    try:
        return ast.literal_eval(node)
    except _PARSE_ERRORS as exc:
        text = ast.unparse(node) if not isinstance(exc, RecursionError) else "(nested too deep)"
        raise PlanError(f"argument {text[:60]!r} is not a literal value", line=line) from None


class _RefToString(ast.NodeTransformer):
    def visit_Name(self, node: ast.Name) -> ast.AST:
        match = _REF_NAME.fullmatch(node.id)
        return ast.Constant(f"${match.group(1)}") if match else node


def _quote_refs(text: str) -> str:
    """Replace ``$N`` / ``${N}`` outside string literals with a placeholder name."""
    out: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        if quote is not None:
            if ch == "\\":
                out.append(text[i : i + 2])
                i += 2
                continue
            if text.startswith(quote, i):
                out.append(quote)
                i += len(quote)
                quote = None
                continue
        elif ch in "'\"":
            quote = ch * 3 if text.startswith(ch * 3, i) else ch
            out.append(quote)
            i += len(quote)
            continue
        elif ch == "$" and (ref := _REF_TOKEN.match(text, i)):
            out.append(f"__ragloom_ref_{ref.group(1) or ref.group(2)}__")
            i = ref.end()
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return exc.msg
    return type(exc).__name__
