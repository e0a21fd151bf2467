"""Chunking policies: offsets point exactly into the source text, windows and overlaps hold."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragloom.errors import ConfigError, RetrievalError
from ragloom.retrievers.chunking import (
    FixedCharChunker,
    FixedTokenChunker,
    SemanticChunker,
    SentenceChunker,
    chunk_documents,
    make_chunker,
    split_sentences,
)
from ragloom.retrievers.loaders import Document

TEXT = (
    "The virus spreads through droplets. Masks reduce transmission in crowded rooms! "
    "Does ventilation help? Studies, e.g. the 2020 trials, say yes.\n\n"
    "Vaccines train the immune system. Boosters restore waning antibodies.\n\n"
    "Bananas are rich in potassium. Apples keep well in cold storage."
)
DOC = Document("notes.txt", TEXT, {"source": "notes.txt", "type": "text"})


def check_offsets(doc, chunks):
    assert chunks, "no chunks"
    for i, chunk in enumerate(chunks):
        meta = chunk.metadata
        assert doc.text[meta["start"] : meta["end"]] == chunk.text
        assert meta["chunk_index"] == i and chunk.id == f"{doc.id}#{i}"
        assert meta["source"] == doc.metadata.get("source", doc.id) and meta["doc_id"] == doc.id
    starts = [c.metadata["start"] for c in chunks]
    assert starts == sorted(starts)


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=300), st.integers(1, 40), st.data())
def test_char_windows_cover_text_with_overlap(text, size, data):
    overlap = data.draw(st.integers(0, size - 1))
    doc = Document("d", text)
    chunks = FixedCharChunker(size, overlap).split(doc)
    if not text.strip():
        assert chunks == []
        return
    check_offsets(doc, chunks)
    assert all(len(c.text) <= size for c in chunks)
    spans = [(c.metadata["start"], c.metadata["end"]) for c in chunks]
    covered = set().union(*(range(a, b) for a, b in spans))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


def test_char_chunker_overlap_exact():
    chunks = FixedCharChunker(40, 10).split(DOC)
    check_offsets(DOC, chunks)
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        assert prev.metadata["end"] - nxt.metadata["start"] == 10


def test_token_chunker_counts_tokens_of_the_embedding_tokenizer(minilm_tokenizer):
    chunker = FixedTokenChunker(16, 4, tokenizer=minilm_tokenizer)
    chunks = chunker.split(DOC)
    check_offsets(DOC, chunks)
    lengths = [len(minilm_tokenizer(c.text, add_special_tokens=False)["input_ids"]) for c in chunks]
    assert max(lengths) == 16 and all(n <= 16 for n in lengths)
    total = len(minilm_tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    assert len(chunks) == -(-(total - 4) // 12)  # windows of 16 stepping by 12
    assert chunks[-1].metadata["end"] == len(TEXT.rstrip())


def test_sentence_splitter_keeps_abbreviations():
    spans = split_sentences(TEXT)
    sentences = [TEXT[a:b] for a, b in spans]
    assert sentences[3] == "Studies, e.g. the 2020 trials, say yes."
    assert sentences[0] == "The virus spreads through droplets."
    assert len(sentences) == 8


def test_sentence_chunker_packs_whole_sentences_with_overlap():
    chunks = SentenceChunker(120, overlap_sentences=1).split(DOC)
    check_offsets(DOC, chunks)
    ends = {b for _, b in split_sentences(TEXT)}
    starts = {a for a, _ in split_sentences(TEXT)}
    for c in chunks:
        assert len(c.text) <= 120
        assert c.metadata["start"] in starts and c.metadata["end"] in ends
    # each chunk starts with the previous chunk's last sentence
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        assert prev.metadata["start"] < nxt.metadata["start"] < prev.metadata["end"]


def test_sentence_chunker_cuts_an_overlong_sentence():
    doc = Document("d", "x" * 25 + ". Short one.")
    chunks = SentenceChunker(10).split(doc)
    check_offsets(doc, chunks)
    assert [len(c.text) for c in chunks] == [10, 10, 6, 10]


class TopicEmbedder:
    """A fake embedder: one axis per topic word, so topic shifts are known exactly."""

    model_name = "topics"
    dim = 3
    WORDS = (
        ("virus", "masks", "ventilation", "studies", "vaccines", "boosters"),
        ("bananas",),
        ("apples",),
    )

    def embed(self, texts):
        rows = []
        for text in texts:
            low = text.lower()
            v = np.array([sum(w in low for w in ws) for ws in self.WORDS], dtype=np.float32) + 1e-3
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows)

    def embed_query(self, text):
        return self.embed([text])[0]


@pytest.mark.parametrize(
    ("breakpoint", "threshold"),
    [("percentile", 80), ("std", 1.0), ("iqr", 1.0), ("gradient", 80)],
)
def test_semantic_chunker_breaks_at_topic_shift(breakpoint, threshold):
    chunker = SemanticChunker(TopicEmbedder(), breakpoint, threshold, buffer=0)
    chunks = chunker.split(DOC)
    check_offsets(DOC, chunks)
    assert any(c.text.startswith("Bananas") for c in chunks), [c.text for c in chunks]
    assert not any("Boosters" in c.text and "Bananas" in c.text for c in chunks)


def test_semantic_chunker_with_real_embeddings(minilm):
    chunks = SemanticChunker(minilm, "percentile", 70, max_chars=200).split(DOC)
    check_offsets(DOC, chunks)
    assert 2 <= len(chunks) <= 8 and all(len(c.text) <= 200 for c in chunks)


def test_make_chunker_specs():
    assert make_chunker("chars:1000:100") == FixedCharChunker(1000, 100)
    assert make_chunker({"kind": "sentences", "max_chars": 800}) == SentenceChunker(800)
    tokens = make_chunker("fixed_tokens:256:32")
    assert isinstance(tokens, FixedTokenChunker) and (tokens.size, tokens.overlap) == (256, 32)
    semantic = make_chunker("semantic:std:2.5", embedder=TopicEmbedder())
    assert isinstance(semantic, SemanticChunker)
    assert (semantic.breakpoint, semantic.threshold) == ("std", 2.5)
    for bad in ["chars", "chars:x", "paragraphs:3", "chars:10:10", "semantic:median"]:
        with pytest.raises(ConfigError):
            make_chunker(bad, embedder=TopicEmbedder())


def test_chunk_documents_rejects_duplicate_ids():
    chunks = chunk_documents([DOC, Document("other", "Hi there.")], SentenceChunker(500))
    assert [c.id for c in chunks][-1] == "other#0"
    with pytest.raises(RetrievalError, match="duplicate chunk id"):
        chunk_documents([DOC, DOC], SentenceChunker(500))


def test_token_chunker_default_tokenizer_matches_transformers(minilm_tokenizer):
    light = FixedTokenChunker(16, 4).split(DOC)  # tokenizers' own Tokenizer, no torch
    heavy = FixedTokenChunker(16, 4, tokenizer=minilm_tokenizer).split(DOC)
    assert [c.metadata for c in light] == [c.metadata for c in heavy]


def test_token_chunker_from_a_folder_without_tokenizer_json(tmp_path, minilm_tokenizer):
    import shutil

    from ragloom.retrievers.embeddings import default_model_path

    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(default_model_path() / name, tmp_path / name)  # no tokenizer.json
    chunks = FixedTokenChunker(16, 4, tokenizer=str(tmp_path)).split(DOC)
    heavy = FixedTokenChunker(16, 4, tokenizer=minilm_tokenizer).split(DOC)
    assert [c.metadata for c in chunks] == [c.metadata for c in heavy]
