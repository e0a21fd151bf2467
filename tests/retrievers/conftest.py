"""Shared fixtures of the retriever tests: the packaged MiniLM model is loaded once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2 embedder (torch backend), loaded once per test session."""
    from ragloom.retrievers.embeddings import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """all-MiniLM-L6-v2's fast tokenizer."""
    from ragloom.retrievers.embeddings import load_tokenizer

    return load_tokenizer()
