"""The classifier router: send a query to the single source whose description it resembles most.

This is the design REAPER is compared with: no LLM call to route, one embedding of the query,
cosine similarity to each source's profile (its description, plus its examples when given,
embedded once), and one retrieval from the winner. It cannot split a question over two sources
or chain retrievals. The same class routes over plain tool descriptions (``from_descriptions``),
which the benchmark uses on MetaTool and BFCL.

This module does not generate answers (pair it with :class:`~ragloom.planners.reaper.
CitingAnswerer`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ragloom.errors import ConfigError

if TYPE_CHECKING:
    from ragloom.retrievers import RetrievalSource
    from ragloom.retrievers._types import Embedder, Hit

__all__ = ["ClassifierRouter"]


class ClassifierRouter:
    """Route each query to the most similar source by embedding similarity.

    Args:
        sources: the retrieval sources (anything with ``name``, ``description`` and
            ``search(query)``; ``examples`` are added to the description's profile).
        embedder: an :class:`~ragloom.retrievers.Embedder` (L2-normalised vectors).

    Example:
        >>> from ragloom.retrievers.base import HashEmbedder
        >>> router = ClassifierRouter.from_descriptions(
        ...     {"weather": "weather forecast rain sun", "stocks": "stock prices shares"},
        ...     HashEmbedder())
        >>> router.route_name("will it rain tomorrow")
        'weather'
    """

    def __init__(self, sources: Sequence[Any], embedder: Embedder) -> None:
        if not sources:
            raise ConfigError("ClassifierRouter needs at least one source")
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ConfigError(f"source names must be unique, got {names}")
        self.sources = list(sources)
        self.names = names
        self.embedder = embedder
        profiles = [_profile(s) for s in sources]
        self.matrix = np.asarray(embedder.embed(profiles), dtype=np.float32)

    @classmethod
    def from_descriptions(
        cls, descriptions: Mapping[str, str], embedder: Embedder
    ) -> ClassifierRouter:
        """A router over named descriptions only (no search), e.g. tools to choose from."""
        from types import SimpleNamespace

        items = [SimpleNamespace(name=n, description=d) for n, d in descriptions.items()]
        return cls(items, embedder)

    def scores(self, query: str) -> dict[str, float]:
        """Cosine similarity of the query to every source, by name."""
        vector = np.asarray(self.embedder.embed_query(query), dtype=np.float32)
        return dict(zip(self.names, (self.matrix @ vector).tolist(), strict=True))

    def ranked(self, query: str, top: int | None = None) -> list[str]:
        """Source names, most similar first (the first ``top`` of them)."""
        scores = self.scores(query)
        return sorted(scores, key=lambda n: -scores[n])[:top]

    def route_name(self, query: str) -> str:
        """The name of the single most similar source."""
        return self.ranked(query, 1)[0]

    def route(self, query: str) -> RetrievalSource:
        """The single most similar source."""
        return self.sources[self.names.index(self.route_name(query))]

    def search(self, query: str) -> list[Hit]:
        """Retrieve from the routed source only."""
        return list(self.route(query).search(query))


def _profile(source: Any) -> str:
    examples = getattr(source, "examples", None) or ()
    return "\n".join([f"{source.name}: {source.description}", *map(str, examples)])
