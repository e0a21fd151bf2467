"""Retrieval sources: search with declared filters, and the source as a planner tool."""

from __future__ import annotations

import pytest

from ragloom.errors import ConfigError, RetrievalError, ToolError
from ragloom.retrievers._types import Chunk
from ragloom.retrievers.bm25 import BM25Retriever
from ragloom.retrievers.sources import RetrievalSource, render_hits
from ragloom.tools import Tool, ToolRegistry

CHUNKS = [
    Chunk("faq#0", "Returns are free within 30 days of delivery.", {"source": "faq", "lang": "en"}),
    Chunk("faq#1", "Shipping takes three to five working days.", {"source": "faq", "lang": "en"}),
    Chunk("faq#2", "Rücksendungen sind 30 Tage lang kostenlos.", {"source": "faq", "lang": "de"}),
    Chunk(
        "cat#0", "The red kettle boils water in two minutes.", {"source": "catalogue", "lang": "en"}
    ),
]


@pytest.fixture()
def source():
    return RetrievalSource(
        "shop_faq",
        "Answers about returns, shipping and payment in the online shop.",
        BM25Retriever(CHUNKS, stopwords=None),
        k=2,
        filters=["lang", "source"],
        examples=["how long does shipping take"],
    )


def test_search_uses_default_k_and_filters(source):
    hits = source.search("returns free days")
    assert len(hits) == 2 and hits[0].chunk.id == "faq#0"
    german = source.search("30 Tage kostenlos", k=5, lang="de")
    assert [h.chunk.id for h in german] == ["faq#2"]
    assert source.search("returns", lang=None)[0].chunk.id == "faq#0"  # None = no filter
    with pytest.raises(ConfigError, match="no filter \\['year'\\]"):
        source.search("returns", year=2020)


def test_tool_schema_and_rendered_output(source):
    tool = source.as_tool()
    assert isinstance(tool, Tool) and tool.name == "shop_faq"
    assert tool.parameters == ["query", "k", "lang", "source"]
    assert "how long does shipping take" in tool.description
    assert "lang, source" in tool.description
    out = tool.invoke({"0": "how long does shipping take", "k": 1})
    assert out.startswith("[1] faq#1 (source: faq, score ")
    assert "three to five working days" in out
    assert tool.invoke({"query": "kettle", "source": "catalogue"}).count("[") == 1


def test_tool_validates_arguments(source):
    tool = source.as_tool()
    with pytest.raises(ToolError, match="unexpected argument 'year'"):
        tool.validate_args({"query": "x", "year": 2020})
    with pytest.raises(ToolError, match="'k'"):
        tool.validate_args({"query": "x", "k": 0})
    with pytest.raises(ToolError, match="missing argument 'query'"):
        tool.validate_args({"k": 2})


def test_empty_result_is_an_explicit_observation(source):
    out = source.as_tool().invoke({"query": "quantum chromodynamics"})
    assert out == "No results in shop_faq for 'quantum chromodynamics'."


def test_errors_propagate_as_tool_errors():
    class Broken:
        def retrieve(self, query, k=5, where=None):
            raise RetrievalError("index file is gone")

    tool = RetrievalSource("broken", "never works", Broken()).as_tool()
    with pytest.raises(ToolError, match="tool 'broken': search failed: index file is gone"):
        tool.invoke({"query": "x"})


def test_hits_mode_and_registry(source):
    hits = source.as_tool(render=False).invoke({"query": "kettle"})
    assert [h.chunk.id for h in hits] == ["cat#0"]
    registry = ToolRegistry([source.as_tool()])
    assert "shop_faq(query: str, k: int = 2" in registry.render()


def test_typed_filters_and_bad_names():
    src = RetrievalSource("s", "d", BM25Retriever(CHUNKS), filters={"lang": str})
    assert src.as_tool().parameters == ["query", "k", "lang"]
    with pytest.raises(ConfigError, match="identifier"):
        RetrievalSource("order history", "d", BM25Retriever(CHUNKS))
    with pytest.raises(ConfigError, match="cannot be named"):
        RetrievalSource("s", "d", BM25Retriever(CHUNKS), filters=["k"])


def test_render_hits_cuts_passages():
    hits = BM25Retriever(CHUNKS).retrieve("kettle", k=1)
    assert render_hits(hits, max_chars=7).endswith("\nThe red")
    assert render_hits([]) == ""
