"""Retrieval sources: a named, described retriever that planners call as a tool.

An application registers several sources ("product_catalogue", "order_history", "faq"), each
with its own description, default ``k``, declared metadata filters and example queries; the
REAPER planner routes among them by these descriptions, and the LLMCompiler planner calls them
as ordinary tools. :meth:`RetrievalSource.as_tool` builds the :class:`~ragloom.tools.Tool`.

This module does not build indexes (see :mod:`ragloom.retrievers.index`) or plan anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ragloom.errors import ConfigError, ToolError
from ragloom.retrievers._types import Hit

if TYPE_CHECKING:
    from ragloom.retrievers.base import Retriever
    from ragloom.tools import Tool

__all__ = ["RetrievalSource", "render_hits"]

FilterValue = str | int | float | bool


def render_hits(hits: Sequence[Hit], *, max_chars: int | None = None) -> str:
    """Hits as numbered passages for an LLM: id, source, score, then the text.

    >>> from ragloom.retrievers._types import Chunk
    >>> print(render_hits([Hit(Chunk("a.md#0", "Masks work.", {"source": "a.md"}), 0.91)]))
    [1] a.md#0 (source: a.md, score 0.910)
    Masks work.
    """
    blocks = []
    for n, hit in enumerate(hits, start=1):
        text = hit.chunk.text if max_chars is None else hit.chunk.text[:max_chars]
        source = hit.chunk.metadata.get("source", "?")
        blocks.append(f"[{n}] {hit.chunk.id} (source: {source}, score {hit.score:.3f})\n{text}")
    return "\n\n".join(blocks)


class RetrievalSource:
    """A named retriever with a description, a default ``k`` and declared metadata filters.

    Args:
        name: an identifier (the tool name planners write), e.g. ``"covid_papers"``.
        description: what the source holds and when to use it (shown to the planner).
        retriever: anything with ``retrieve(query, k, where)``.
        k: default number of hits.
        filters: metadata fields a caller may filter on (equality); a sequence of names
            (values may be str, int, float or bool) or a mapping name -> type.
        examples: example queries, shown to the planner.
        max_chars: cut each passage to this many characters in the rendered tool output.

    >>> source = RetrievalSource("faq", "Shop FAQ: returns, shipping.", retriever)  # doctest: +SKIP
    >>> source.search("how do I return an item", k=3)  # doctest: +SKIP
    """

    def __init__(
        self,
        name: str,
        description: str,
        retriever: Retriever,
        *,
        k: int = 5,
        filters: Sequence[str] | Mapping[str, Any] = (),
        examples: Sequence[str] = (),
        max_chars: int | None = None,
    ) -> None:
        if not name.isidentifier():
            suggestion = "_".join(name.split()) or "source"
            raise ConfigError(f"source name must be an identifier (e.g. {suggestion!r}): {name!r}")
        if k <= 0:
            raise ConfigError(f"source {name!r}: k must be positive, got {k}")
        types = dict(filters) if isinstance(filters, Mapping) else dict.fromkeys(filters, Any)
        clash = sorted({"query", "k"} & set(types))
        if clash:
            raise ConfigError(f"source {name!r}: filters cannot be named {clash}")
        self.name = name
        self.description = description
        self.retriever = retriever
        self.k = k
        self.filters: dict[str, Any] = types
        self.examples = list(examples)
        self.max_chars = max_chars

    def search(self, query: str, k: int | None = None, **filters: FilterValue | None) -> list[Hit]:
        """Retrieve hits for ``query``; declared filters given as keywords must match exactly.

        Filters whose value is None are ignored (a planner may pass them empty).

        Raises:
            ConfigError: a filter was not declared for this source, or ``k`` is not positive.
        """
        unknown = sorted(set(filters) - set(self.filters))
        if unknown:
            raise ConfigError(
                f"source {self.name!r} has no filter {unknown}; declared: {sorted(self.filters)}"
            )
        k = self.k if k is None else k
        if k <= 0:
            raise ConfigError(f"source {self.name!r}: k must be positive, got {k}")
        where = {key: value for key, value in filters.items() if value is not None}
        return self.retriever.retrieve(query, k=k, where=where or None)

    def tool_description(self) -> str:
        """The description the planner sees: the source's, its filters and example queries."""
        parts = [self.description.strip()]
        parts.append(f"Returns up to k passages (default {self.k}) with their ids and sources.")
        if self.filters:
            parts.append(f"Optional exact-match filters: {', '.join(self.filters)}.")
        if self.examples:
            parts.append("Example queries: " + "; ".join(repr(e) for e in self.examples) + ".")
        return " ".join(parts)

    def as_tool(self, *, render: bool = True) -> Tool:
        """This source as a :class:`~ragloom.tools.Tool` named after it.

        The tool's pydantic schema has ``query: str``, ``k: int`` (1..100, default ``self.k``)
        and one optional field per declared filter. With ``render=True`` (the default) it
        returns the hits rendered for an LLM by :func:`render_hits` -- or, when nothing
        matches, an explicit ``"No results ..."`` observation; with ``render=False`` it
        returns the ``list[Hit]``. Any error while searching surfaces as a
        :class:`~ragloom.errors.ToolError` naming the source.
        """
        import pydantic

        from ragloom.tools import Tool

        fields: dict[str, Any] = {
            "query": (str, pydantic.Field(description="what to search for")),
            "k": (int, pydantic.Field(self.k, ge=1, le=100, description="number of passages")),
        }
        for key, kind in self.filters.items():
            annotation = (FilterValue if kind is Any else kind) | None
            fields[key] = (annotation, pydantic.Field(None, description=f"only where {key} is"))
        config = pydantic.ConfigDict(extra="forbid")
        schema = pydantic.create_model(f"{self.name}_args", __config__=config, **fields)
        return Tool(self.name, self.tool_description(), schema, func=self._tool_call(render))

    def _tool_call(self, render: bool) -> Any:
        def call(query: str, k: int = self.k, **filters: FilterValue | None) -> Any:
            try:
                hits = self.search(query, k, **filters)
            except ToolError:
                raise
            except Exception as exc:
                raise ToolError(f"search failed: {exc}", tool=self.name) from exc
            if not render:
                return hits
            if not hits:
                return f"No results in {self.name} for {query!r}."
            return render_hits(hits, max_chars=self.max_chars)

        return call

    def __repr__(self) -> str:
        return f"RetrievalSource({self.name!r}, k={self.k}, filters={list(self.filters)})"
