"""Reference equality: the paged, batched, prefix-cached engine's greedy tokens equal a plain
HF transformers forward pass on the same weights, for the first 32 tokens of several prompts.

SmolLM2 (llama) is checked against a reference built entirely by transformers (its own GGUF
dequantisation and tensor mapping), so the loader is tested too; Qwen2.5-0.5B (qwen2) against
transformers' Qwen2 on the engine's converted weights.
"""

from __future__ import annotations

from functools import cache

import pytest
import torch
from _engine_models import PROMPTS, SMOL, chat_ids, smol_llm, transformers_from_gguf

from ragloom.runtime.engine.config import EngineConfig
from ragloom.runtime.engine.llm_engine import LLMEngine
from ragloom.runtime.layers.gguf_linear import GGUFLinear
from ragloom.runtime.llm import SamplingParams
from ragloom.runtime.model_files import resolve_model
from ragloom.runtime.models.gguf_loader import load_gguf
from ragloom.runtime.models.reference import hf_greedy, hf_reference

pytestmark = pytest.mark.model
NUM_TOKENS = 32


@cache
def hf_smol():
    """SmolLM2 as transformers itself loads it from the GGUF file."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return transformers_from_gguf(SMOL, LlamaConfig, LlamaForCausalLM)


def engine_greedy(engine: LLMEngine, prompts: list[list[int]]) -> list[list[int]]:
    params = SamplingParams(max_tokens=NUM_TOKENS)
    engine.eos_token_ids = frozenset()  # compare all 32 tokens, even past end-of-sequence
    return [s.completion_token_ids for s in engine.generate(prompts, params)]


@pytest.mark.parametrize("layout", ["row", "transposed", "transposed+packed", "gguf"])
def test_smollm2_engine_matches_transformers_for_32_greedy_tokens(layout, monkeypatch):
    if layout.endswith("+packed"):  # every shape keeps a oneDNN copy for multi-row steps
        monkeypatch.setattr("ragloom.runtime.layers.linear._packed_is_faster", lambda *a: True)
    prompts = [chat_ids(q) for q in PROMPTS]
    if layout == "gguf":  # the file's own Q4_1/Q8_0 weights through the AVX2 kernel
        config = EngineConfig(num_threads=1, quantization="gguf")
    else:
        config = EngineConfig(
            num_threads=1, weight_layout=layout.split("+")[0], batch_weight_copy="+" in layout
        )
    engine = LLMEngine(load_gguf(resolve_model(SMOL)), config)
    if layout == "gguf":  # (Q4_1's codes of 0..15 are held two to a byte)
        layers = [m for m in engine.runner.model.modules() if isinstance(m, GGUFLinear)]
        assert sum(m.nibbles for m in layers) > len(layers) / 2
    got = engine_greedy(engine, prompts)  # one batch: paged, mixed lengths
    want = [hf_greedy(hf_smol(), p, NUM_TOKENS) for p in prompts]
    assert got == want


def test_int8_activations_keep_batches_equal_to_single_runs():
    """``quantization="gguf-q8"`` changes the numbers, but each row is quantised on its own
    and attends on its own: a batch of mixed-length requests gives each the tokens it gets
    alone, with or without its prompt in the prefix cache."""
    prompts = [chat_ids(q) for q in PROMPTS]
    config = EngineConfig(num_threads=1, quantization="gguf-q8")
    engine = LLMEngine(load_gguf(resolve_model(SMOL)), config)
    layers = [m for m in engine.runner.model.modules() if isinstance(m, GGUFLinear)]
    assert layers and all(m.int8_activations for m in layers)
    assert sum(m.nibbles for m in layers) > len(layers) / 2
    together = engine_greedy(engine, prompts)
    alone = [engine_greedy(engine, [p])[0] for p in prompts]  # prefix-cache hits
    assert together == alone
    assert all(len(t) == NUM_TOKENS for t in together)
    cold = []  # and each computed from nothing (prefill attention as one causal chunk)
    for p in prompts:
        engine.scheduler.block_manager.evict_cached()
        cold.append(engine_greedy(engine, [p])[0])
    assert cold == together


def test_score_matches_transformers_log_probabilities():
    prompt, choice = "The capital of France is", " Paris, the city of light"
    llm = smol_llm()
    head = llm.encode(prompt)
    tail = llm.tokenizer.encode(choice, add_special_tokens=False)
    with torch.inference_mode():
        logits = hf_smol()(torch.tensor([head + tail])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    want = sum(float(logp[len(head) - 1 + i, t]) for i, t in enumerate(tail))
    assert llm.score([prompt], [choice])[0][0] == pytest.approx(want, abs=1e-3)


def test_qwen2_engine_matches_transformers_for_32_greedy_tokens():
    loaded = load_gguf(resolve_model("qwen2.5-coder-0.5b-instruct"))
    question = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
    text = loaded.tokenizer.apply_chat_template(
        question, add_generation_prompt=True, tokenize=False
    )
    ids = loaded.tokenizer.encode(text)
    ref = hf_reference(loaded)
    want = hf_greedy(ref, ids, NUM_TOKENS)
    del ref
    engine = LLMEngine(loaded, EngineConfig(num_threads=1, kv_cache_tokens=1024))
    assert engine_greedy(engine, [ids]) == [want]
    del engine, loaded
    # the file's own Q5_0/Q8_0/Q4_K/Q6_K weights through the AVX2 kernel: the same tokens
    native = load_gguf(resolve_model("qwen2.5-coder-0.5b-instruct"))
    config = EngineConfig(num_threads=1, kv_cache_tokens=1024, quantization="gguf")
    engine = LLMEngine(native, config)
    kinds = [type(m) for m in engine.runner.model.modules()]
    assert kinds.count(GGUFLinear) == 4 * native.config.num_layers + 1  # 4 per layer + head
    assert torch.nn.Linear not in kinds
    assert engine_greedy(engine, [ids]) == [want]
