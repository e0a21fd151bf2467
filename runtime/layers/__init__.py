"""ragloom.runtime.layers: one module per layer of the embedded engine's models (RMSNorm,
rotary, paged attention, linear (transposed layout, int8, GGUF-quantised through ragloom's AVX2
kernel), embedding/LM head, activation); the compiled CPU kernels are built by ``kernels``.
Torch is imported on first use of a name."""

from __future__ import annotations

from ragloom._lazy import lazy_getattr

# public name -> module that defines it (imported on first use).
_LAZY: dict[str, str] = {
    "AttentionMetadata": "ragloom.runtime.layers.attention",
    "GGUFEmbedding": "ragloom.runtime.layers.gguf_linear",
    "GGUFLinear": "ragloom.runtime.layers.gguf_linear",
    "KernelUnavailableError": "ragloom.runtime.layers.kernels",
    "LMHead": "ragloom.runtime.layers.embedding",
    "PagedAttention": "ragloom.runtime.layers.attention",
    "RMSNorm": "ragloom.runtime.layers.rmsnorm",
    "RotaryEmbedding": "ragloom.runtime.layers.rotary",
    "SiluAndMul": "ragloom.runtime.layers.activation",
    "TransposedEmbedding": "ragloom.runtime.layers.linear",
    "TransposedLinear": "ragloom.runtime.layers.linear",
    "VocabEmbedding": "ragloom.runtime.layers.embedding",
    "choose_weight_layouts": "ragloom.runtime.layers.linear",
    "quantize_linears": "ragloom.runtime.layers.linear",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
