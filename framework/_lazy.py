"""Lazy imports of optional heavy dependencies, with an install hint when they are missing.

``import ragloom`` must stay light: torch, faiss, chromadb, ray and friends are imported only
when a feature that needs them is used, through :func:`require`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from ragloom.errors import MissingDependencyError

__all__ = ["lazy_getattr", "require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise a :class:`MissingDependencyError` naming the extra to install.

    >>> require("json", "core").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module!r} is needed for this feature but is not installed: "
            f"pip install 'ragloom[{extra}]'"
        ) from exc


def lazy_getattr(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that imports ``names[attr]`` on first access.

    ``names`` maps each public name to the module defining it; the value is cached in the
    package's namespace, so the import happens once.
    """
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
