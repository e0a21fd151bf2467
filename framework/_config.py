"""Where ragloom finds data sets and keeps its caches.

``RAGLOOM_DATA_DIR`` points at the shared data sets (default ``../shared/datasets`` relative to
the working directory); ``RAGLOOM_CACHE_DIR`` at the cache of converted model weights, embeddings
and judge calls (default ``~/.cache/ragloom``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "data_dir"]


def data_dir() -> Path:
    """The folder holding the shared data sets (it may not exist on a fresh clone)."""
    return Path(os.environ.get("RAGLOOM_DATA_DIR", "../shared/datasets")).expanduser().resolve()


def cache_dir(*parts: str) -> Path:
    """A folder under ragloom's cache root, created on first use."""
    root = Path(os.environ.get("RAGLOOM_CACHE_DIR", "~/.cache/ragloom")).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
