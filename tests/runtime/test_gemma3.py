"""The gemma3 architecture: sliding-window layers, per-head Q/K norms, four norms a layer.

A small random Gemma 3 (no download) runs in every checkout: the engine's greedy tokens equal
transformers' ``Gemma3ForCausalLM`` on the same weights for prompts longer than the window,
batched, chunked and prefix-cached, through the compiled and the torch attention paths. The
packaged Gemma 3 270M (not installed by ``make``: Gemma Terms of Use) checks the GGUF loader
against transformers' own loading of the file, where it is installed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from functools import cache
from pathlib import Path

import pytest
import torch
from _engine_models import transformers_from_gguf

from ragloom.errors import ModelError
from ragloom.runtime.constrained import json_grammar
from ragloom.runtime.engine.config import EngineConfig
from ragloom.runtime.engine.llm_engine import LLMEngine
from ragloom.runtime.engine.vocab import tokenizer_info
from ragloom.runtime.layers.attention import AttentionMetadata, PagedAttention, PrefillChunk
from ragloom.runtime.llm import SamplingParams
from ragloom.runtime.model_files import MODELS, resolve_model
from ragloom.runtime.models.config import ModelConfig
from ragloom.runtime.models.gemma3 import Gemma3ForCausalLM
from ragloom.runtime.models.gguf_loader import LoadedModel, _read_config, load_gguf
from ragloom.runtime.models.reference import hf_greedy, hf_reference

WINDOW = 8
TINY = ModelConfig(
    architecture="gemma3",
    vocab_size=96,
    hidden_size=64,
    intermediate_size=96,
    num_layers=6,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    rope_theta=1e6,
    rms_norm_eps=1e-6,
    context_length=256,
    tie_word_embeddings=False,  # (tied, this random model mostly repeats its last token)
    attention_bias=False,
    sliding_window=WINDOW,
    sliding_window_pattern=3,  # layers 2 and 5 global
    rope_local_theta=1e4,
    attention_scale=0.1,  # (not head_dim ** -0.5, so that the scale is carried through)
)
PROMPTS = [[2, 5, 9, 14], [2, *range(10, 29)], [2, *range(40, 70)]]  # 4, 20 and 31 tokens
NUM_TOKENS = 16


def tiny_loaded() -> LoadedModel:
    """A random Gemma 3 whose logits are far apart (weights of unit scale, not transformers'
    0.02), so that float32 rounding never decides a greedy token."""
    gen = torch.Generator().manual_seed(0)
    model = Gemma3ForCausalLM(TINY)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):  # (GGUF's 1 + w)
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
    return LoadedModel(model.eval(), TINY, None, (1,), Path("tiny-gemma3.gguf"))


@cache
def tiny_reference_tokens() -> tuple[tuple[int, ...], ...]:
    reference = hf_reference(tiny_loaded())
    return tuple(tuple(hf_greedy(reference, p, NUM_TOKENS)) for p in PROMPTS)


def tiny_engine(**settings: object) -> LLMEngine:
    return LLMEngine(copy.deepcopy(tiny_loaded()), EngineConfig(num_threads=1, **settings))


def greedy(engine: LLMEngine, prompts: list[list[int]], n: int = NUM_TOKENS) -> list[tuple]:
    engine.eos_token_ids = frozenset()  # (all n tokens, even past end-of-sequence)
    seqs = engine.generate(prompts, SamplingParams(max_tokens=n))
    return [tuple(s.completion_token_ids) for s in seqs]


def test_config_marks_every_patternth_layer_global():
    assert [TINY.is_local(i) for i in range(6)] == [True, True, False, True, True, False]
    assert TINY.scale == 0.1
    plain = dataclasses.replace(TINY, sliding_window=0, attention_scale=0.0)
    assert not any(plain.is_local(i) for i in range(6)) and plain.scale == 16**-0.5
    every = dataclasses.replace(TINY, sliding_window_pattern=0)
    assert all(every.is_local(i) for i in range(6))


def test_tiny_gemma3_layers_are_windowed_with_their_own_rotary():
    model = Gemma3ForCausalLM(TINY)
    windows = [layer.self_attn.attn.window for layer in model.model.layers]
    assert windows == [WINDOW, WINDOW, 0, WINDOW, WINDOW, 0]
    rotary = [layer.self_attn.rotary for layer in model.model.layers]
    local, glob = rotary[0], rotary[2]
    assert local is not glob
    assert all(r is (glob if i in (2, 5) else local) for i, r in enumerate(rotary))
    # (the local base turns slower: its lowest frequency is higher)
    assert local.cos[1, -1] < glob.cos[1, -1]


@pytest.mark.parametrize("layer_kernels", [True, False])
@pytest.mark.parametrize("budget", [512, 7])
def test_tiny_gemma3_engine_matches_transformers_past_the_window(layer_kernels, budget):
    """One batch of three prompts (two longer than the window), prefilled whole or in chunks
    of 7 tokens, then again with their prefixes cached: each time transformers' tokens."""
    engine = tiny_engine(layer_kernels=layer_kernels, max_num_batched_tokens=budget)
    want = list(tiny_reference_tokens())
    assert greedy(engine, PROMPTS) == want
    seqs = engine.generate(PROMPTS, SamplingParams(max_tokens=NUM_TOKENS))
    assert [tuple(s.completion_token_ids) for s in seqs] == want
    assert seqs[2].num_cached_tokens >= 24  # (its first three blocks came from the cache)


def test_the_window_decides_the_tokens():
    """With every layer attending to the whole context every prompt's tokens change (the
    shortest one's once its decode passes 8 tokens): the equality above rests on the window."""
    engine = tiny_engine()
    for module in engine.runner.model.modules():
        if isinstance(module, PagedAttention):
            module.window = 0
    got = greedy(engine, PROMPTS)
    assert all(a != b for a, b in zip(got, tiny_reference_tokens(), strict=True))


def _brute_force(q_pos: list[int], k_pos: list[int], window: int) -> torch.Tensor:
    return torch.tensor([[0 <= q - k < window for k in k_pos] for q in q_pos])


def test_windowed_metadata_keeps_the_last_keys_of_each_query():
    slots = torch.arange(100, 120)
    decode_slots = torch.stack([slots, slots.roll(3)])
    lengths = torch.tensor([20, 5])
    chunk = PrefillChunk(2, 8, slots[:14], torch.ones(6, 14, dtype=torch.bool))
    meta = AttentionMetadata(
        torch.arange(8), 2, decode_slots, None, lengths, prefills=[chunk]
    )
    narrow = meta.windowed(6)
    assert narrow is meta.windowed(6)  # (once per step and window)
    assert narrow.decode_lengths.tolist() == [6, 5]
    assert narrow.decode_slots[0].tolist() == list(range(114, 120))
    assert narrow.decode_slots[1, :5].tolist() == decode_slots[1, :5].tolist()
    assert narrow.decode_mask.view(2, -1).sum(1).tolist() == [6, 5]
    (windowed,) = narrow.prefills  # queries at 8..13 over keys 3..13
    assert windowed.context_slots.tolist() == slots[3:14].tolist()
    assert torch.equal(windowed.mask, _brute_force(list(range(8, 14)), list(range(3, 14)), 6))
    assert meta.windowed(64) is meta  # (no query reaches past a wide window)


def test_loader_refuses_settings_the_engine_does_not_run():
    class Field:
        def __init__(self, value: object) -> None:
            self.value, self.data = value, [0] * 8

        def contents(self) -> object:
            return self.value

    class Reader:
        tensors: list[object] = []

        def __init__(self, **fields: object) -> None:
            base = {
                "general.architecture": "llama",
                "llama.embedding_length": 64,
                "llama.attention.head_count": 4,
                "llama.feed_forward_length": 96,
                "llama.block_count": 2,
                "llama.attention.layer_norm_rms_epsilon": 1e-6,
                "tokenizer.ggml.tokens": None,
            }
            self.fields = {k: Field(v) for k, v in {**base, **fields}.items()}

    assert _read_config(Reader(), Path("ok.gguf")).head_dim == 16
    with pytest.raises(ModelError, match=r"llama.rope.scaling.type = 'yarn' is not supported"):
        _read_config(Reader(**{"llama.rope.scaling.type": "yarn"}), Path("x.gguf"))
    with pytest.raises(ModelError, match="a rotary over 8 of 16 dims"):
        _read_config(Reader(**{"llama.rope.dimension_count": 8}), Path("x.gguf"))


class SentencePieceStub:
    """What ``tokenizer_info`` reads of a transformers tokenizer, for a SentencePiece vocab."""

    pieces = ["<pad>", "<eos>", "<bos>", "<0x0A>", "<0x41>", "\u2581the", "é", "{", "\u2581"]
    added_tokens_decoder: dict[int, object] = {}
    all_special_ids = [0, 1, 2]

    def get_vocab(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.pieces)}

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.pieces[i] for i in ids]


def test_sentencepiece_tokens_spell_their_own_bytes():
    """Gemma's vocabulary: ``▁`` is a space, ``<0xNN>`` one byte, the rest UTF-8 (not GPT-2's
    stand-in characters, which would read ``é`` as the single byte 0xE9)."""
    info = tokenizer_info(SentencePieceStub(), 1, 9)
    assert info.vocab[3:] == [b"\n", b"A", b" the", "é".encode(), b"{", b" "]
    assert info.vocab[:3] == [b"<pad>", b"<eos>", b"<bos>"] and info.special_token_ids == (0, 1, 2)


# --- the packaged Gemma 3 270M, where installed ----------------------------------------------

GEMMA = "gemma3-270m"
needs_gemma = pytest.mark.skipif(
    not MODELS[GEMMA].is_installed(), reason=f"install it with: {MODELS[GEMMA].pip}"
)


@cache
def hf_gemma() -> torch.nn.Module:
    """Gemma 3 270M as transformers itself loads the GGUF file (its own tensor mapping)."""
    from transformers import Gemma3ForCausalLM as HFGemma3
    from transformers import Gemma3TextConfig

    return transformers_from_gguf(GEMMA, Gemma3TextConfig, HFGemma3)


@pytest.mark.model
@needs_gemma
def test_gemma3_270m_engine_matches_transformers_loading_the_file():
    """32 greedy tokens of three prompts, and of a 700-token prompt (past the 512-key window)
    prefilled in chunks: the engine on the file's own weights (the exact kernel) gives the
    tokens of transformers' own loading of the file; int8 activations give each prompt in a
    batch its tokens alone."""
    loaded = load_gguf(resolve_model(GEMMA))
    tokenizer = loaded.tokenizer
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    prompts = [
        tokenizer(text).input_ids
        for text in ("The capital of France is", "def fibonacci(n):", "Once upon a time,")
    ]
    prompts.append(tokenizer(readme).input_ids[:700])
    want = [hf_greedy(hf_gemma(), p, 32) for p in prompts]
    config = EngineConfig(num_threads=1, quantization="gguf", max_num_batched_tokens=256)
    engine = LLMEngine(loaded, config)
    assert [list(t) for t in greedy(engine, prompts, 32)] == want
    config = EngineConfig(num_threads=1, quantization="gguf-q8", max_num_batched_tokens=256)
    q8 = LLMEngine(load_gguf(resolve_model(GEMMA)), config)
    assert greedy(q8, prompts[2:]) == [greedy(q8, [p])[0] for p in prompts[2:]]


@pytest.mark.model
@needs_gemma
def test_gemma3_270m_writes_valid_json_under_a_schema():
    """Constrained decoding over a SentencePiece vocabulary: the base model's greedy text under
    a JSON schema ends by itself, parses and validates. (Bounded strings: with an unbounded
    integer this base model writes zeros until ``max_tokens``.)"""
    from ragloom.runtime.torch_llm import TorchLLM

    llm = TorchLLM(GEMMA, num_threads=1)
    text = {"type": "string", "maxLength": 24}
    schema = {
        "type": "object",
        "properties": {"city": text, "country": text, "is_capital": {"type": "boolean"}},
        "required": ["city", "country", "is_capital"],
        "additionalProperties": False,
    }
    params = SamplingParams(max_tokens=64, grammar=json_grammar(schema))
    (out,) = llm.generate(["The largest city in France, as JSON:"], params)
    assert out.finish_reason == "stop"
    value = json.loads(out.text)
    assert set(value) == {"city", "country", "is_capital"}
    assert isinstance(value["is_capital"], bool) and len(value["city"]) <= 24
