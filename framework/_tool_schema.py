"""Argument schemas for tools: a pydantic model from a function's signature, type names for
prompts, and validation errors as one readable line.

This module does not call tools (:mod:`ragloom.tools`).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Any

import pydantic

from ragloom.errors import ConfigError

__all__ = ["describe_errors", "first_paragraph", "schema_from_signature", "type_name"]


def schema_from_signature(fn: Callable[..., Any], name: str) -> type[pydantic.BaseModel]:
    """A pydantic model of ``fn``'s parameters (unannotated ones accept anything; extra
    arguments are refused); ``ConfigError`` for ``*args``/``**kwargs`` or positional-only ones.
    """
    if not name.isidentifier():
        raise ConfigError(f"tool name must be an identifier, got {name!r}")
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to the raw annotations
        hints = getattr(fn, "__annotations__", {})
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"tool {name!r}: *args/**kwargs cannot be described to a planner")
        if param.kind is param.POSITIONAL_ONLY:
            raise ConfigError(f"tool {name!r}: positional-only parameters are not supported")
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
    config = pydantic.ConfigDict(arbitrary_types_allowed=True, extra="forbid")
    return pydantic.create_model(f"{name}_args", __config__=config, **fields)


def first_paragraph(fn: Callable[..., Any]) -> str:
    """The first paragraph of ``fn``'s docstring on one line ("" if it has none)."""
    doc = inspect.getdoc(fn) or ""
    return " ".join(doc.split("\n\n")[0].split())


def type_name(annotation: Any) -> str:
    """An annotation as written in a signature.

    >>> type_name(int), type_name(list[str]), type_name(float | None)
    ('int', 'list[str]', 'float | None')
    """
    if annotation is None or annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def describe_errors(errors: Iterable[Any]) -> str:
    """pydantic validation errors as one line naming each field and its problem."""
    problems = []
    for err in errors:
        field = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        if err["type"] == "extra_forbidden":
            problems.append(f"unexpected argument {field!r}")
        elif err["type"] == "missing":
            problems.append(f"missing argument {field!r}")
        else:
            problems.append(f"argument {field!r}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(problems)
