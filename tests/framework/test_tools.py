"""Tools: schemas from signatures, validation errors, sync/async calls, registry, LangChain."""

from __future__ import annotations

import asyncio

import pydantic
import pytest

from ragloom import Tool, ToolRegistry, tool
from ragloom._tool_schema import describe_errors
from ragloom.errors import ConfigError, ToolError, ToolTimeoutError


def search(query: str, k: int = 5) -> list[str]:
    """Search the web for pages.

    Args:
        query: what to look for.
    """
    return [f"{query}#{i}" for i in range(k)]


async def asearch(query: str, k: int = 2) -> list[str]:
    """Search, asynchronously."""
    await asyncio.sleep(0)
    return [query] * k


class Point(pydantic.BaseModel):
    x: float
    y: float


def norm(p: Point, scale: float | None = None) -> float:
    """Length of a point."""
    return (p.x**2 + p.y**2) ** 0.5 * (scale or 1)


def test_from_function_builds_schema_signature_and_description() -> None:
    t = Tool.from_function(search)
    assert t.name == "search" and t.description == "Search the web for pages."
    assert t.parameters == ["query", "k"]
    assert t.signature() == "search(query: str, k: int = 5)"
    assert Tool.from_function(norm).signature() == "norm(p: Point, scale: float | None = None)"


def test_validate_args_maps_positional_keys_and_coerces() -> None:
    t = Tool.from_function(search)
    assert t.validate_args({"0": "eiffel", "k": "3"}) == {"query": "eiffel", "k": 3}
    assert Tool.from_function(norm).validate_args({"p": {"x": 3, "y": 4}})["p"] == Point(x=3, y=4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"k": 2}, "missing argument 'query'"),
        ({"query": "a", "k": "many"}, "argument 'k'"),
        ({"query": "a", "limit": 3}, "unexpected argument 'limit'"),
        ({"0": "a", "1": 2, "2": 3}, "takes 2 positional"),
        ({"0": "a", "query": "b"}, "multiple values for argument 'query'"),
    ],
)
def test_validate_args_errors_name_tool_and_field(args: dict, message: str) -> None:
    with pytest.raises(ToolError, match=message) as info:
        Tool.from_function(search).validate_args(args)
    assert info.value.tool == "search" and "tool 'search'" in str(info.value)


class Capped(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    x: int
    factor: int = 2

    @pydantic.model_validator(mode="after")
    def cap(self) -> Capped:
        self.factor = min(self.factor, 10)
        return self


class Doubled(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    x: int

    def __init__(self, **data: object) -> None:
        super().__init__(**data)
        self.x *= 2


def _capped() -> Tool:
    return Tool("capped", "x times factor (at most 10)", Capped, func=lambda x, factor: x * factor)


def _doubled() -> Tool:
    return Tool("doubled", "2x, by its schema's own __init__", Doubled, func=lambda x: x)


@pytest.mark.parametrize(
    ("make", "args"),
    [
        (lambda: Tool.from_function(search), {"0": "q", "k": "3"}),
        (lambda: Tool.from_function(search), {"query": "q"}),
        (lambda: Tool.from_function(search), {"query": "q", "k": "x"}),
        (lambda: Tool.from_function(search), {"query": "q", "extra": 1}),
        (lambda: Tool.from_function(norm), {"p": {"x": 3, "y": "4"}, "scale": 2}),
        (lambda: Tool.from_function(norm), {"p": {"x": 3}}),
        (_capped, {"x": 1, "factor": 50}),
        (_capped, {"x": "1"}),
        (_doubled, {"x": 4}),
    ],
)
def test_validate_args_agrees_with_the_pydantic_model(make, args: dict) -> None:
    # validate_args skips building a model instance where that changes nothing; it must give
    # what the model gives (values in parameter order, model validators applied, same errors)
    t = make()
    try:
        model = t.args_schema.model_validate(t.bind(args))
    except pydantic.ValidationError as exc:
        with pytest.raises(ToolError) as info:
            t.validate_args(args)
        assert str(info.value) == f"tool {t.name!r}: {describe_errors(exc.errors())}"
        return
    got = t.validate_args(args)
    assert got == {f: getattr(model, f) for f in t.parameters}
    assert list(got) == t.parameters


def test_sync_and_async_invoke() -> None:
    assert Tool.from_function(search).invoke({"query": "q", "k": 2}) == ["q#0", "q#1"]
    assert Tool.from_function(asearch).invoke({"query": "q"}) == ["q", "q"]
    assert asyncio.run(Tool.from_function(search).ainvoke({"query": "q", "k": 1})) == ["q#0"]


async def test_invoke_inside_a_running_loop_points_to_ainvoke() -> None:
    with pytest.raises(ToolError, match="await ainvoke"):
        Tool.from_function(asearch).invoke({"query": "q"})
    assert await Tool.from_function(asearch).ainvoke({"query": "q", "k": 1}) == ["q"]


def test_own_timeout_applies_to_ainvoke() -> None:
    @tool(timeout=0.05)
    async def stall() -> None:
        """Never returns in time."""
        await asyncio.sleep(10)

    with pytest.raises(ToolTimeoutError, match="timed out after 0.05 s"):
        asyncio.run(stall.ainvoke({}))


def test_decorator_with_and_without_options() -> None:
    @tool
    def ping() -> str:
        """Ping."""
        return "pong"

    @tool(name="lookup", description="Look it up.", max_concurrency=2, retries=1)
    def find(key: str) -> str:
        return key

    assert isinstance(ping, Tool) and ping.invoke({}) == "pong"
    assert (find.name, find.description, find.max_concurrency, find.retries) == (
        "lookup",
        "Look it up.",
        2,
        1,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"retries": -1}, "retries"),
        ({"name": "not valid"}, "identifier"),
    ],
)
def test_bad_tool_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Tool.from_function(search, **kwargs)


def test_varargs_are_refused() -> None:
    def spread(*items: str) -> None:
        return None

    with pytest.raises(ConfigError, match=r"\*args"):
        Tool.from_function(spread)


def test_registry_get_render_and_errors() -> None:
    registry = ToolRegistry([search, Tool.from_function(asearch, max_concurrency=1)])
    assert registry.names == ["search", "asearch"] and len(registry) == 2
    assert "search" in registry and "nope" not in registry
    assert [t.name for t in registry] == ["search", "asearch"]
    assert registry.render() == (
        "1. search(query: str, k: int = 5): Search the web for pages.\n"
        "2. asearch(query: str, k: int = 2): Search, asynchronously."
    )
    with pytest.raises(ToolError, match="unknown tool 'nope'; known: search, asearch"):
        registry.get("nope")
    with pytest.raises(ConfigError, match="registered twice"):
        registry.register(search)
    with pytest.raises(ConfigError, match="reserved"):
        registry.register(Tool.from_function(search, name="join"))


def test_langchain_tools_are_wrapped() -> None:
    from langchain_core.tools import StructuredTool
    from langchain_core.tools import tool as lc_tool

    @lc_tool
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    async def _shout(text: str) -> str:
        return text.upper()

    shout = StructuredTool.from_function(coroutine=_shout, name="shout", description="Shout.")
    wrapped = Tool.from_langchain(multiply)
    assert wrapped.signature() == "multiply(a: int, b: int)"
    assert wrapped.description == "Multiply two integers."
    assert wrapped.invoke({"0": 6, "1": 7}) == 42
    with pytest.raises(ToolError, match="argument 'b'"):
        wrapped.validate_args({"a": 1, "b": "x"})
    async_wrapped = Tool.from_langchain(shout)
    assert async_wrapped.coroutine is not None
    assert asyncio.run(async_wrapped.ainvoke({"text": "hi"})) == "HI"
    with pytest.raises(ConfigError, match="BaseTool"):
        Tool.from_langchain(search)


# --- conformance: every kind of tool behaves the same ----------------------------------------


def _sync_fn():
    def scale(x: int, factor: int = 2) -> int:
        """Multiply x by factor."""
        return x * factor

    return Tool.from_function(scale)


def _async_fn():
    async def scale(x: int, factor: int = 2) -> int:
        """Multiply x by factor."""
        await asyncio.sleep(0)
        return x * factor

    return Tool.from_function(scale)


def _langchain_sync():
    from langchain_core.tools import tool as lc_tool

    @lc_tool
    def scale(x: int, factor: int = 2) -> int:
        """Multiply x by factor."""
        return x * factor

    return Tool.from_langchain(scale)


def _langchain_async():
    from langchain_core.tools import StructuredTool

    async def scale(x: int, factor: int = 2) -> int:
        """Multiply x by factor."""
        return x * factor

    return Tool.from_langchain(StructuredTool.from_function(coroutine=scale))


@pytest.fixture(params=[_sync_fn, _async_fn, _langchain_sync, _langchain_async])
def scale_tool(request) -> Tool:
    return request.param()


async def test_conformance_schema_validation_and_calls(scale_tool: Tool) -> None:
    from ragloom import Task, TaskFetchingUnit

    assert scale_tool.name == "scale" and scale_tool.description == "Multiply x by factor."
    assert scale_tool.signature() == "scale(x: int, factor: int = 2)"
    assert scale_tool.validate_args({"0": "3"}) == {"x": 3, "factor": 2}
    with pytest.raises(ToolError, match="argument 'x'"):
        scale_tool.validate_args({"x": "three"})
    assert await scale_tool.ainvoke({"x": 4, "factor": 3}) == 12
    out = await TaskFetchingUnit(ToolRegistry([scale_tool])).run(
        [Task(1, "scale", {"x": 5}), Task(2, "scale", {"x": "$1", "factor": 10})]
    )
    assert out[2].value == 100 and out[2].args == {"x": 10, "factor": 10}
