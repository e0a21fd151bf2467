"""Lazy imports of optional heavy dependencies, with an install hint when they are missing.

``import ragloom`` must stay light: torch, faiss, chromadb, ray and friends are imported only
when a feature that needs them is used, through :func:`require`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ragloom.errors import MissingDependencyError

__all__ = ["require"]


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
