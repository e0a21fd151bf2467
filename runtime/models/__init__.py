"""ragloom.runtime.models: one file per architecture (``llama``, ``qwen2``), the GGUF loader
and the transformers reference twin. Names are imported on first use (torch is heavy)."""

from __future__ import annotations

from ragloom._lazy import lazy_getattr

# public name -> module that defines it (imported on first use).
_LAZY: dict[str, str] = {
    "LlamaForCausalLM": "ragloom.runtime.models.llama",
    "LoadedModel": "ragloom.runtime.models.gguf_loader",
    "ModelConfig": "ragloom.runtime.models.config",
    "Qwen2ForCausalLM": "ragloom.runtime.models.qwen2",
    "hf_greedy": "ragloom.runtime.models.reference",
    "hf_reference": "ragloom.runtime.models.reference",
    "load_gguf_linears": "ragloom.runtime.models.gguf_quant",
    "load_gguf": "ragloom.runtime.models.gguf_loader",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
