"""The engine's one validated configuration object.

Says how big the paged KV cache is, how many tokens a step may run (chunked prefill), how many
sequences may run at once, and the numeric format of the weights. Imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ragloom.errors import ConfigError

__all__ = ["EngineConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    """Settings of the embedded engine.

    Attributes:
        block_size: token slots per KV block, also the prefix-cache granularity: a prompt
            reuses a cached prefix in whole blocks. 8 rather than vLLM's 16: the eight chat
            prompts of ``benchmarks/engine.py``'s batch run prefill 194 rows instead of 250,
            with no change in decode speed.
        kv_cache_tokens: token slots in the paged KV cache (rounded down to whole blocks).
        max_num_seqs: sequences that may run at once (continuous batching width).
        max_num_batched_tokens: tokens one step may run (the chunked-prefill budget); running
            decodes are scheduled first, so a long prompt never stalls them.
        max_model_len: longest prompt + completion; None takes the model's context length,
            capped at ``kv_cache_tokens``.
        dtype: ``"float32"`` (exact dequantised weights) or ``"bfloat16"``.
        quantization: ``"auto"`` (``"gguf"`` where it applies: a float32 engine on a model
            loaded from a GGUF file, on a CPU where the kernel builds; else ``"none"``),
            ``"none"`` (float32 linear layers), ``"gguf"`` (the linear layers keep the GGUF
            file's own quantised weights, decoded exactly to the float32 values, and run
            ragloom's AVX2 kernel: the float32 products from a quarter of the bytes),
            ``"gguf-q8"`` (the same weights; the linear layers quantise their inputs to int8
            per 32 inputs and take integer dot products, as llama.cpp does: on an AVX2 CPU
            single streams ~1.1-1.2x and batched steps and prefill ~1.3-1.7x faster than
            ``"gguf"``; the numbers change slightly, so greedy tokens may part from the float32
            model's),
            ``"int8"`` (weight-only int8 re-quantisation, bfloat16 activations, the LM head
            kept float32) or ``"int8-dynamic"`` (torch.ao dynamic int8, every linear
            layer); float32 models only.
        num_threads: torch CPU threads; None uses the cores that other processes leave idle.
        weight_layout: how float linear weights are stored — ``"auto"`` (per shape, the
            layout that runs a one-row decode product faster on this CPU, timed at load),
            ``"row"`` (``[out, in]``, as ``nn.Linear``) or ``"transposed"`` (``[in, out]``).
            Quantised layers keep their own format.
        batch_weight_copy: also keep a oneDNN-packed copy of each float weight shape whose
            multi-row products (batched decodes, prefill chunks) it runs at least 1.1x faster
            (timed at load). Faster continuous batching for up to twice the memory of those
            weights; False keeps one copy of every weight.
        layer_kernels: run decode attention, RMSNorm, rotary embeddings and the MLP activation
            through ragloom's compiled CPU kernels where they build (float32 tensors; see
            :mod:`ragloom.runtime.layers.kernels`); False always runs torch's paths.

    >>> EngineConfig(block_size=16, kv_cache_tokens=4096).num_kv_blocks
    256
    """

    block_size: int = 8
    kv_cache_tokens: int = 16384
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 512
    max_model_len: int | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"
    quantization: Literal["auto", "none", "gguf", "gguf-q8", "int8", "int8-dynamic"] = "auto"
    num_threads: int | None = None
    weight_layout: Literal["auto", "row", "transposed"] = "auto"
    batch_weight_copy: bool = True
    layer_kernels: bool = True

    def __post_init__(self) -> None:
        for name in ("block_size", "kv_cache_tokens", "max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.kv_cache_tokens < self.block_size:
            raise ConfigError("kv_cache_tokens must hold at least one block")
        if self.dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        if self.quantization not in ("auto", "none", "gguf", "gguf-q8", "int8", "int8-dynamic"):
            raise ConfigError(
                "quantization must be 'auto', 'none', 'gguf', 'gguf-q8', 'int8' or "
                f"'int8-dynamic', got {self.quantization!r}"
            )
        if self.weight_layout not in ("auto", "row", "transposed"):
            raise ConfigError(
                f"weight_layout must be 'auto', 'row' or 'transposed', got {self.weight_layout!r}"
            )
        if self.quantization not in ("auto", "none") and self.dtype != "float32":
            raise ConfigError(f"quantization={self.quantization!r} needs dtype='float32'")
        if self.max_model_len is not None and self.max_model_len > self.kv_cache_tokens:
            raise ConfigError(
                f"max_model_len {self.max_model_len} exceeds kv_cache_tokens "
                f"{self.kv_cache_tokens}: one sequence must fit in the KV cache"
            )

    @property
    def num_kv_blocks(self) -> int:
        """Blocks in the KV cache."""
        return self.kv_cache_tokens // self.block_size
