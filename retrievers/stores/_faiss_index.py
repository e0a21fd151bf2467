"""The Faiss side of :class:`~ragloom.retrievers.stores.FaissStore`: settings, index, search.

:class:`FaissSpec` validates the settings (and is saved with the index); :func:`new_index`
builds the Faiss index for them; :func:`search_params` turns a filter and ``k`` into Faiss
search parameters. Flat and HNSW indexes sit in an ``IndexIDMap2`` (int64 labels, reconstruct);
a trained IVF keeps its own ids with a hash direct map, which gives reconstruct and removal.
This module keeps no state and knows nothing about ids, documents or metadata.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np

from ragloom.errors import ConfigError

__all__ = ["FaissSpec", "IndexKind", "Metric", "auto_nlist", "new_index", "search_params"]

IndexKind = Literal["flat", "hnsw", "ivf"]
Metric = Literal["ip", "cosine", "l2"]
AUTO_TRAIN_SIZE = 1024  # vectors an IVF waits for when nlist is chosen automatically


@dataclass(frozen=True, kw_only=True, slots=True)
class FaissSpec:
    """The validated settings of one Faiss index (saved with it)."""

    dim: int
    index: IndexKind = "flat"
    metric: Metric = "ip"
    hnsw_m: int = 32
    ef_search: int = 64
    nlist: int | None = None
    nprobe: int | None = None

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ConfigError(f"dim must be >= 1, got {self.dim}")
        if self.index not in ("flat", "hnsw", "ivf"):
            raise ConfigError(f"index={self.index!r}: use 'flat', 'hnsw' or 'ivf'")
        if self.metric not in ("ip", "cosine", "l2"):
            raise ConfigError(f"metric={self.metric!r}: use 'ip', 'cosine' or 'l2'")
        for name in ("hnsw_m", "ef_search", "nlist", "nprobe"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")

    @property
    def train_size(self) -> int:
        """Vectors an IVF store collects before it trains (Faiss wants ~39 per cell)."""
        return 39 * self.nlist if self.nlist else AUTO_TRAIN_SIZE


def auto_nlist(spec: FaissSpec, num_samples: int) -> int:
    """IVF cells for ``num_samples`` training vectors: ``spec.nlist`` or ~sqrt(n).

    >>> auto_nlist(FaissSpec(dim=4, index="ivf"), 2000)
    44
    """
    nlist = spec.nlist or max(1, min(int(math.sqrt(num_samples)), num_samples // 39))
    return max(1, min(nlist, num_samples))


def new_index(faiss: ModuleType, spec: FaissSpec, *, trained: bool, nlist: int = 1) -> Any:
    """An empty index for ``spec``; an IVF that is not trained yet is an exact flat index."""
    metric = faiss.METRIC_L2 if spec.metric == "l2" else faiss.METRIC_INNER_PRODUCT
    if spec.index == "ivf" and trained:
        ivf = faiss.IndexIVFFlat(faiss.IndexFlat(spec.dim, metric), spec.dim, nlist, metric)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        return ivf
    if spec.index == "hnsw":
        inner = faiss.IndexHNSWFlat(spec.dim, spec.hnsw_m, metric)
    else:  # flat, or an IVF store still waiting to train
        inner = faiss.IndexFlat(spec.dim, metric)
    return faiss.IndexIDMap2(inner)  # the wrapper keeps a reference to ``inner``


def search_params(
    faiss: ModuleType, spec: FaissSpec, index: Any, trained: bool, k: int, allowed: Any
) -> Any:
    """Faiss search parameters: the filter as an id selector, HNSW breadth, IVF probes.

    ``allowed`` is None (no filter) or the labels that pass the filter. HNSW searches at least
    ``k`` wide; IVF probes ``spec.nprobe`` cells, by default a third of them.
    """
    selector = None if allowed is None else faiss.IDSelectorBatch(np.array(allowed, np.int64))
    if spec.index == "hnsw":
        return faiss.SearchParametersHNSW(sel=selector, efSearch=max(spec.ef_search, k))
    if spec.index == "ivf" and trained:
        nlist = faiss.extract_index_ivf(index).nlist
        nprobe = min(spec.nprobe or math.ceil(nlist / 3), nlist)
        return faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
    return faiss.SearchParameters(sel=selector)
