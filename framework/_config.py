"""Where ragloom finds data sets and keeps its caches.

``RAGLOOM_DATA_DIR`` points at the shared data sets (default ``../shared/datasets`` relative to
the working directory, else beside the source checkout); ``RAGLOOM_CACHE_DIR`` at the cache of
converted model weights, embeddings and judge calls (default ``~/.cache/ragloom``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "data_dir"]


def data_dir() -> Path:
    """The folder holding the shared data sets (it may not exist on a fresh clone).

    ``RAGLOOM_DATA_DIR`` wins; otherwise ``../shared/datasets`` from the working directory, and
    failing that the ``shared/datasets`` folder beside a source checkout of ragloom (so a notebook
    kernel started in another folder still finds the data).
    """
    if "RAGLOOM_DATA_DIR" in os.environ:
        return Path(os.environ["RAGLOOM_DATA_DIR"]).expanduser().resolve()
    here = Path("../shared/datasets").resolve()
    if here.is_dir():
        return here
    beside_checkout = Path(__file__).resolve().parents[2] / "shared" / "datasets"
    return beside_checkout if beside_checkout.is_dir() else here


def cache_dir(*parts: str) -> Path:
    """A folder under ragloom's cache root, created on first use."""
    root = Path(os.environ.get("RAGLOOM_CACHE_DIR", "~/.cache/ragloom")).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
