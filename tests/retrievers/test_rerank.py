"""Rerankers: a tiny cross-encoder built here (mechanics, not quality) and the LLM reranker."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ragloom.errors import ConfigError, ModelError, RetrievalError
from ragloom.retrievers._types import Chunk, Hit
from ragloom.retrievers.rerank import (
    CrossEncoderReranker,
    LLMReranker,
    Reranker,
    RerankingRetriever,
    reorder,
)
from ragloom.runtime import FakeLLM

PASSAGES = [
    "Bananas are rich in potassium.",
    "Masks reduce the spread of respiratory viruses.",
    "The stock market fell on Monday.",
    "Surgical masks filter droplets.",
]


def make_hits(texts=PASSAGES):
    return [Hit(Chunk(f"c{i}", t, {"source": "s"}), 1.0 - i / 10, i) for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory, minilm_tokenizer):
    """A randomly initialised 2-layer BERT classifier with MiniLM's vocabulary, saved to disk."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=minilm_tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,  # type: ignore[call-arg]  # a PretrainedConfig keyword
    )
    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    return folder, model


def test_cross_encoder_ranks_by_the_model_logits(tiny_cross_encoder, minilm_tokenizer):
    import torch

    folder, model = tiny_cross_encoder
    reranker = CrossEncoderReranker(folder, batch_size=2)
    assert isinstance(reranker, Reranker)
    query = "do masks help?"
    hits = make_hits()
    out = reranker.rerank(query, hits)
    # reference: the same model's logits computed directly with transformers
    enc = minilm_tokenizer([query] * 4, PASSAGES, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits[:, 0].numpy()
    expected = [f"c{i}" for i in np.argsort(-logits, kind="stable")]
    assert [h.chunk.id for h in out] == expected
    assert [h.rank for h in out] == [0, 1, 2, 3]
    scores = [h.score for h in out]
    assert scores == sorted(scores, reverse=True)
    np.testing.assert_allclose(sorted(scores), sorted(1 / (1 + np.exp(-logits))), atol=1e-5)
    first = next(h for h in out if h.chunk.id == "c0")
    assert first.extra == {"retrieval_score": 1.0, "retrieval_rank": 0}
    assert len(reranker.rerank(query, hits, top_k=2)) == 2
    assert reranker.rerank(query, []) == []


def test_cross_encoder_missing_folder(tmp_path):
    with pytest.raises(ModelError, match="no cross-encoder folder"):
        CrossEncoderReranker(tmp_path / "absent")


def relevance_scores(prompt, choice):
    """log P(choice): ' yes' likely when the passage mentions masks."""
    passage = prompt.split("Question:")[0]
    relevant = "masks" in passage.lower()
    p_yes = 0.9 if relevant else 0.2
    return math.log(p_yes if choice == " yes" else 1 - p_yes)


def test_llm_reranker_scores_yes_no_in_batches():
    llm = FakeLLM(scores=relevance_scores)
    reranker = LLMReranker(llm, batch_size=3)
    out = reranker.rerank("do masks help?", make_hits(), top_k=3)
    assert [h.chunk.id for h in out] == ["c1", "c3", "c0"]
    np.testing.assert_allclose([h.score for h in out], np.log([0.9, 0.9, 0.2]), atol=1e-9)
    assert len(llm.prompts) == 0  # scoring does not generate
    assert reranker.num_scored == 4


def test_llm_reranker_calls_score_once_per_batch():
    calls = []

    class Recording(FakeLLM):
        def score(self, prompts, choices):
            calls.append((len(prompts), tuple(choices)))
            return super().score(prompts, choices)

    LLMReranker(Recording(scores=relevance_scores), batch_size=3).rerank("q", make_hits())
    assert calls == [(3, (" yes", " no")), (1, (" yes", " no"))]


def test_llm_reranker_errors():
    with pytest.raises(RetrievalError, match="cannot score continuations"):
        LLMReranker(FakeLLM()).rerank("q", make_hits())
    with pytest.raises(ConfigError, match="must contain"):
        LLMReranker(FakeLLM(), prompt="no placeholders")
    bad = FakeLLM(scores=relevance_scores)
    bad.score = lambda prompts, choices: [[0.0]]  # type: ignore[method-assign]
    with pytest.raises(RetrievalError, match="returned"):
        LLMReranker(bad).rerank("q", make_hits())


def test_reorder_keeps_retrieval_order_on_ties():
    out = reorder(make_hits(), [0.5, 0.5, 0.9, 0.5])
    assert [h.chunk.id for h in out] == ["c2", "c0", "c1", "c3"]
    with pytest.raises(RetrievalError):
        reorder(make_hits(), [1.0])


def test_reranking_retriever_fetches_more_then_cuts():
    class ListRetriever:
        def __init__(self):
            self.asked = []

        def retrieve(self, query, k=5, where=None):
            self.asked.append((k, where))
            return make_hits()[:k]

    inner = ListRetriever()
    retriever = RerankingRetriever(inner, LLMReranker(FakeLLM(scores=relevance_scores)), fetch_k=4)
    hits = retriever.retrieve("masks?", k=2, where={"source": "s"})
    assert inner.asked == [(4, {"source": "s"})]
    assert [h.chunk.id for h in hits] == ["c1", "c3"]


@pytest.mark.model
def test_llm_reranker_on_a_real_packaged_model():
    """Mechanics on SmolLM2 (llama.cpp): scores are log P(yes | yes or no) from the real logits."""
    from ragloom.runtime import load_llm

    llm = load_llm("smollm2")
    reranker = LLMReranker(llm, batch_size=2, max_passage_chars=200)
    hits = make_hits(PASSAGES[:2])
    out = reranker.rerank("Do masks help?", hits)
    prompts = [reranker.prompt.format(query="Do masks help?", passage=p) for p in PASSAGES[:2]]
    raw = llm.score(prompts, [" yes", " no"])
    expected = {f"c{i}": yes - np.logaddexp(yes, no) for i, (yes, no) in enumerate(raw)}
    assert {h.chunk.id: pytest.approx(h.score, abs=1e-6) for h in out} == expected
    assert all(h.score < 0 for h in out)


def test_llm_reranker_chat_mode_sends_messages_and_scores_yes_no():
    seen = []

    class Recording(FakeLLM):
        def score(self, prompts, choices):
            seen.append((prompts, tuple(choices)))
            return [[math.log(0.8 if "Masks" in p[0]["content"] else 0.1), math.log(0.2)]
                    for p in prompts]  # fmt: skip

    out = LLMReranker(Recording(), chat=True).rerank("do masks help?", make_hits())
    assert out[0].chunk.id == "c1"
    prompts, choices = seen[0]
    assert choices == ("Yes", "No") and prompts[0][0]["role"] == "user"
    assert not prompts[0][0]["content"].endswith("Answer:")
    np.testing.assert_allclose(out[0].score, math.log(0.8), atol=1e-9)
