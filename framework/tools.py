"""Tools: typed Python functions (sync or async) or LangChain tools behind one interface.

A :class:`Tool` carries a name, a description for the planner's prompt and a pydantic argument
schema built from the function's signature; :meth:`Tool.validate_args` checks a call against it
and :meth:`Tool.ainvoke` runs it (sync functions in a thread pool). A :class:`ToolRegistry`
looks tools up by name and renders their numbered descriptions for prompts.

This module does not schedule tasks or resolve ``$N`` references (that is :mod:`ragloom.tfu`
and :mod:`ragloom.plan`), and it imports LangChain only inside :meth:`Tool.from_langchain`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from concurrent.futures import Executor
from typing import Any, overload

import pydantic
from pydantic_core import SchemaValidator

from ragloom._sync import run_sync
from ragloom._tool_schema import (
    describe_errors,
    first_paragraph,
    schema_from_signature,
    type_name,
)
from ragloom.errors import ConfigError, ToolError, ToolTimeoutError

__all__ = ["Tool", "ToolRegistry", "tool"]

AsyncFn = Callable[..., Coroutine[Any, Any, Any]]


class Tool:
    """A callable the planner can use, with a pydantic argument schema.

    Build one with :meth:`from_function` (or the :func:`tool` decorator) or
    :meth:`from_langchain`. Exactly one of ``func`` (sync) and ``coroutine`` (async) is set.

    Attributes:
        name: the name the plan text calls the tool by (an identifier).
        description: one paragraph shown to the planner.
        args_schema: pydantic model of the keyword arguments, in parameter order.
        timeout: seconds a call may take before it fails with ``ToolTimeoutError``.
        max_concurrency: the most calls of this tool that run at once in one run.
        retries: extra attempts after a failed call (overrides the run's retry policy).

    Example:
        >>> def add(a: int, b: int = 1) -> int:
        ...     "Add two integers."
        ...     return a + b
        >>> t = Tool.from_function(add)
        >>> t.signature(), t.invoke({"a": 2})
        ('add(a: int, b: int = 1)', 3)
    """

    def __init__(
        self,
        name: str,
        description: str,
        args_schema: type[pydantic.BaseModel],
        *,
        func: Callable[..., Any] | None = None,
        coroutine: AsyncFn | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        retries: int = 0,
    ):
        if not name.isidentifier():
            raise ConfigError(f"tool name must be an identifier, got {name!r}")
        if (func is None) == (coroutine is None):
            raise ConfigError(f"tool {name!r}: give exactly one of func= and coroutine=")
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"tool {name!r}: timeout must be > 0 seconds, got {timeout}")
        if max_concurrency is not None and max_concurrency < 1:
            raise ConfigError(f"tool {name!r}: max_concurrency must be >= 1, got {max_concurrency}")
        if retries < 0:
            raise ConfigError(f"tool {name!r}: retries must be >= 0, got {retries}")
        self.name = name
        self.description = description
        self.args_schema = args_schema
        self._params = tuple(args_schema.model_fields)  # (pydantic's accessor is slow)
        self._fields = _fields_validator(args_schema)  # built here, as pydantic builds its own
        self.func = func
        self.coroutine = coroutine
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.retries = retries

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        retries: int = 0,
    ) -> Tool:
        """Wrap a typed function; the schema comes from its signature, the text from its doc.

        Unannotated parameters accept anything; ``*args``/``**kwargs`` are refused.
        """
        tool_name = str(name or getattr(fn, "__name__", ""))
        schema = schema_from_signature(fn, tool_name)
        text = description if description is not None else first_paragraph(fn)
        is_async = inspect.iscoroutinefunction(fn)
        return cls(
            tool_name,
            text,
            schema,
            func=None if is_async else fn,
            coroutine=fn if is_async else None,
            timeout=timeout,
            max_concurrency=max_concurrency,
            retries=retries,
        )

    @classmethod
    def from_langchain(cls, base_tool: Any) -> Tool:
        """Wrap a LangChain ``BaseTool`` (its name, description and input schema)."""
        from langchain_core.tools import BaseTool

        if not isinstance(base_tool, BaseTool):
            raise ConfigError(f"from_langchain needs a langchain BaseTool, got {base_tool!r}")
        schema = base_tool.get_input_schema()
        if not (isinstance(schema, type) and issubclass(schema, pydantic.BaseModel)):
            raise ConfigError(f"tool {base_tool.name!r}: needs a pydantic v2 args_schema")
        if getattr(base_tool, "coroutine", None) is not None:  # async-only StructuredTool

            async def acall(**kwargs: Any) -> Any:
                return await base_tool.ainvoke(kwargs)

            return cls(base_tool.name, base_tool.description, schema, coroutine=acall)

        def call(**kwargs: Any) -> Any:
            return base_tool.invoke(kwargs)

        return cls(base_tool.name, base_tool.description, schema, func=call)

    # --- calling ---------------------------------------------------------------------------

    @property
    def parameters(self) -> list[str]:
        """Parameter names in order (positional plan arguments map onto these)."""
        return list(self._params)

    def validate_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """Check ``args`` against the schema; returns keyword arguments ready for the call.

        Keys ``"0"``, ``"1"``, ... are positional arguments and map onto the parameter order.

        Raises:
            ToolError: naming the tool and the offending field.

        >>> Tool.from_function(lambda q, k=3: q, name="s").validate_args({"0": "x"})
        {'q': 'x', 'k': 3}
        """
        named = self.bind(args) if any(map(str.isdigit, args)) else args  # (not copied)
        try:
            if self._fields is not None:
                values: dict[str, Any] = self._fields.validate_python(named)[0]
                return values
            model = self.args_schema.__pydantic_validator__.validate_python(named)
        except pydantic.ValidationError as exc:
            raise ToolError(describe_errors(exc.errors()), tool=self.name) from None
        values = model.__dict__
        return {field: values[field] for field in self._params}

    def bind(self, args: dict[str, Any]) -> dict[str, Any]:
        """Map positional keys (``"0"``, ``"1"``...) onto parameter names; no type checks."""
        params = self._params
        named: dict[str, Any] = {}
        for key, value in args.items():
            if key.isdigit():
                index = int(key)
                if index >= len(params):
                    raise ToolError(
                        f"takes {len(params)} positional argument(s), got more", tool=self.name
                    )
                key = params[index]
            if key in named:
                raise ToolError(f"got multiple values for argument {key!r}", tool=self.name)
            named[key] = value
        return named

    async def ainvoke(self, args: dict[str, Any], *, executor: Executor | None = None) -> Any:
        """Validate ``args`` and run the tool; sync functions run in ``executor``'s threads.

        The tool's own ``timeout`` applies (``ToolTimeoutError``).
        """
        kwargs = self.validate_args(args)
        return await with_timeout(self.acall(kwargs, executor), self.timeout, self.name)

    def invoke(self, args: dict[str, Any]) -> Any:
        """Validate ``args`` and run the tool in this thread (an async tool on a loop of its
        own, through :func:`ragloom.run_sync`).

        Raises:
            ToolError: an async tool (or one with a timeout) is invoked from inside a running
                event loop; ``await ainvoke(args)`` there instead.
        """
        kwargs = self.validate_args(args)
        if self.timeout is None and self.coroutine is None:
            return self.call(kwargs)
        if _loop_running():
            raise ToolError("invoke() inside a running event loop: await ainvoke()", tool=self.name)
        return run_sync(self.ainvoke(kwargs))

    async def acall(self, kwargs: dict[str, Any], executor: Executor | None = None) -> Any:
        """Run the tool on already validated keyword arguments (no timeout)."""
        if self.coroutine is not None:
            return await self.coroutine(**kwargs)
        assert self.func is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, functools.partial(self.func, **kwargs))

    def call(self, kwargs: dict[str, Any]) -> Any:
        """Run the tool synchronously on validated keyword arguments (used by remote workers)."""
        if self.coroutine is not None:
            return run_sync(self.coroutine(**kwargs))
        assert self.func is not None
        return self.func(**kwargs)

    # --- rendering -------------------------------------------------------------------------

    def signature(self) -> str:
        """``name(param: type = default, ...)`` for prompts.

        >>> Tool.from_function(lambda query, k=5: 0, name="search").signature()
        'search(query: Any, k: Any = 5)'
        """
        parts = []
        for field, info in self.args_schema.model_fields.items():
            text = f"{field}: {type_name(info.annotation)}"
            if not info.is_required():
                text += f" = {info.get_default(call_default_factory=True)!r}"
            parts.append(text)
        return f"{self.name}({', '.join(parts)})"

    def __repr__(self) -> str:
        return f"Tool({self.signature()})"


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    retries: int = 0,
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    retries: int = 0,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Decorator form of :meth:`Tool.from_function` (bare ``@tool`` or ``@tool(timeout=5)``).

    >>> @tool(max_concurrency=2)
    ... async def fetch(url: str) -> str:
    ...     "Fetch a page."
    ...     return url
    >>> fetch.signature(), fetch.max_concurrency
    ('fetch(url: str)', 2)
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool.from_function(
            f,
            name=name,
            description=description,
            timeout=timeout,
            max_concurrency=max_concurrency,
            retries=retries,
        )

    return wrap(fn) if fn is not None else wrap


class ToolRegistry:
    """Tools by name, in registration order.

    >>> reg = ToolRegistry([lambda x: x])
    Traceback (most recent call last):
    ...
    ragloom.errors.ConfigError: tool name must be an identifier, got '<lambda>'
    """

    def __init__(self, tools: Iterable[Tool | Callable[..., Any]] = ()):
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.register(t)

    def register(self, t: Tool | Callable[..., Any]) -> Tool:
        """Add a tool (a plain function is wrapped); a second tool of the same name is refused."""
        item = t if isinstance(t, Tool) else Tool.from_function(t)
        if item.name in self._tools:
            raise ConfigError(f"tool {item.name!r} is registered twice")
        if item.name == "join":
            raise ConfigError("'join' is reserved for the plan's final marker task")
        self._tools[item.name] = item
        return item

    def get(self, name: str) -> Tool:
        """The tool called ``name``; ``ToolError`` listing the known names if there is none."""
        try:
            return self._tools[name]
        except KeyError:
            known = ", ".join(self._tools) or "(none)"
            raise ToolError(f"unknown tool {name!r}; known: {known}", tool=name) from None

    @property
    def names(self) -> list[str]:
        """Tool names in registration order."""
        return list(self._tools)

    def render(self) -> str:
        """Numbered tool descriptions for prompts: ``1. search(query: str): Search...``."""
        lines = []
        for number, item in enumerate(self._tools.values(), 1):
            text = " ".join(item.description.split())
            line = f"{number}. {item.signature()}"
            lines.append(f"{line}: {text}" if text else line)
        return "\n".join(lines)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)


def _fields_validator(schema: type[pydantic.BaseModel]) -> SchemaValidator | None:
    """A validator of ``schema``'s fields alone, returning ``(values, extra, fields set)`` with
    the values in field order: the model's own field validation without building a model
    instance (about 3x faster). ``None`` where the model does more than validate its fields
    (model validators, its own ``__init__``, ``model_post_init``) or its core schema is not the
    usual shape.
    """
    if schema.__pydantic_decorators__.model_validators or schema.__pydantic_post_init__:
        return None
    try:
        core: Any = schema.__pydantic_core_schema__
        outer = core if core["type"] == "model" else core.get("schema", {})
        if outer.get("type") != "model" or outer["schema"]["type"] != "model-fields":
            return None
        if outer.get("custom_init") or outer.get("post_init"):  # the model runs its own code
            return None
        fields = outer["schema"]
        if core["type"] == "definitions":  # nested models: keep their shared definitions
            fields = {"type": "definitions", "schema": fields, "definitions": core["definitions"]}
        elif core["type"] != "model":
            return None
        return SchemaValidator(fields, outer.get("config"))
    except Exception:  # an incomplete model or an unfamiliar schema: the model validates
        return None


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def with_timeout(awaitable: Awaitable[Any], timeout: float | None, name: str) -> Any:
    """Await with a timeout that raises :class:`ToolTimeoutError` naming the tool."""
    if timeout is None:
        return await awaitable
    try:
        async with asyncio.timeout(timeout):
            return await awaitable
    except TimeoutError:
        raise ToolTimeoutError(f"timed out after {timeout:g} s", tool=name) from None
