"""Bad input to the engine gets a clear error from ragloom's error tree; nothing crashes."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from _engine_models import SMOL, fresh_engine, smol_llm

from ragloom.errors import ConfigError, ContextWindowError, ModelError
from ragloom.runtime.engine.config import EngineConfig
from ragloom.runtime.llm import SamplingParams
from ragloom.runtime.model_files import resolve_model
from ragloom.runtime.models.gguf_loader import load_gguf


@pytest.mark.model
def test_prompt_longer_than_the_context_window():
    engine = fresh_engine(kv_cache_tokens=256)
    with pytest.raises(ContextWindowError, match="300 tokens but the context window is 256"):
        engine.add_request(list(range(300)), SamplingParams())
    with pytest.raises(ContextWindowError):
        smol_llm().generate(["word " * 9000])
    with pytest.raises(ContextWindowError):  # the first, valid request is cancelled, not leaked
        smol_llm().score(["Hi", "word " * 9000], [" there"])
    deadline = time.monotonic() + 120
    while smol_llm().engine.has_work() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not smol_llm().engine.has_work()


@pytest.mark.model
def test_generation_stops_at_the_context_window_with_length():
    engine = fresh_engine(kv_cache_tokens=64)
    seq = engine.generate([list(range(100, 150))], SamplingParams(max_tokens=100))[0]
    assert seq.finish_reason == "length" and seq.num_tokens == 64


@pytest.mark.parametrize("max_tokens", [0, -3])
def test_max_tokens_must_be_positive(max_tokens):
    with pytest.raises(ConfigError, match="max_tokens"):
        SamplingParams(max_tokens=max_tokens)


@pytest.mark.model
def test_empty_prompt():
    with pytest.raises(ConfigError, match="empty"):
        fresh_engine().add_request([], SamplingParams())


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"block_size": 0}, "block_size"),
        ({"kv_cache_tokens": 8, "block_size": 16}, "one block"),
        ({"max_model_len": 4096, "kv_cache_tokens": 1024}, "max_model_len"),
        ({"quantization": "int4"}, "quantization"),
        ({"quantization": "int8", "dtype": "bfloat16"}, "float32"),
    ],
)
def test_engine_config_is_validated(settings, match):
    with pytest.raises(ConfigError, match=match):
        EngineConfig(**settings)


def test_unknown_model_path(tmp_path):
    from ragloom.runtime.torch_llm import TorchLLM

    with pytest.raises(ModelError, match="no-such-model"):
        TorchLLM("no-such-model")
    with pytest.raises(ModelError, match="missing.gguf"):
        load_gguf(tmp_path / "missing.gguf")


def test_corrupt_gguf_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGLOOM_CACHE_DIR", str(tmp_path / "cache"))
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + b"\xff" * 4096)
    with pytest.raises(ModelError, match="garbage.gguf"):
        load_gguf(garbage)
    truncated = tmp_path / "truncated.gguf"
    with resolve_model(SMOL).open("rb") as src, truncated.open("wb") as dst:
        dst.write(src.read(2 << 20))  # the first 2 MiB of a 98 MiB file
    with pytest.raises(ModelError, match="truncated.gguf"):
        load_gguf(truncated)
    assert not any((tmp_path / "cache").rglob("model.safetensors"))  # nothing half-written kept


def _tiny_config(tied: bool) -> Any:
    from ragloom.runtime.models.config import ModelConfig

    shape = dict(vocab_size=8, hidden_size=4, intermediate_size=8, num_layers=2, head_dim=4)
    return ModelConfig(
        architecture="qwen2",
        num_heads=1,
        num_kv_heads=1,
        rope_theta=1e4,
        rms_norm_eps=1e-6,
        context_length=16,
        tie_word_embeddings=tied,
        attention_bias=True,
        **shape,
    )


def _fake_reader(names: list[str]) -> Any:
    from gguf import GGMLQuantizationType

    f32 = GGMLQuantizationType.F32
    tensors = [
        SimpleNamespace(name=n, data=np.full(4, i, np.float32), shape=[4], tensor_type=f32)
        for i, n in enumerate(names)
    ]
    return SimpleNamespace(tensors=tensors)


@pytest.mark.parametrize("tied", [True, False])
def test_one_name_table_serves_both_gguf_loaders(tied):
    from ragloom.runtime.models.gguf_loader import _dequantize, tensor_sources
    from ragloom.runtime.models.gguf_quant import _sources

    cfg = _tiny_config(tied)
    names = ["token_embd.weight", "output_norm.weight"] + ([] if tied else ["output.weight"])
    names += [f"blk.{i}.{n}" for i in range(2) for n in _BLOCK_TENSORS]
    state = _dequantize(_fake_reader(names), cfg, permute_qk=False)
    assert set(state) == set(tensor_sources(cfg, set(names)))
    assert ("lm_head.proj.weight" in state) is not tied
    qkv = state["model.layers.1.self_attn.qkv_proj.weight"]  # rows stacked q, k, v
    assert qkv.view(3, 4)[:, 0].tolist() == [names.index(f"blk.1.attn_{x}.weight") for x in "qkv"]
    linears = _sources(cfg, set(names))
    head = ["token_embd.weight"] if tied else ["output.weight"]
    assert linears["lm_head.proj"] == head
    assert ("model.embed_tokens" in linears) is not tied
    assert linears["model.layers.0.mlp.gate_up_proj"] == [
        "blk.0.ffn_gate.weight",
        "blk.0.ffn_up.weight",
    ]
    assert len(linears) == 1 + (not tied) + 4 * 2  # head (+ embedding), four per layer


def test_gguf_lacking_a_tensor_names_it():
    from ragloom.runtime.models.gguf_loader import _dequantize

    names = ["token_embd.weight", "output_norm.weight"]
    names += [f"blk.{i}.{n}" for i in range(2) for n in _BLOCK_TENSORS if n != "ffn_down.weight"]
    with pytest.raises(ModelError, match=r"no tensor 'blk.0.ffn_down.weight' \(and 1 more\)"):
        _dequantize(_fake_reader(names), _tiny_config(True), permute_qk=False)


_BLOCK_TENSORS = [
    "attn_norm.weight",
    "ffn_norm.weight",
    *(f"attn_{x}.{p}" for x in "qkv" for p in ("weight", "bias")),
    "attn_output.weight",
    "ffn_gate.weight",
    "ffn_up.weight",
    "ffn_down.weight",
]
