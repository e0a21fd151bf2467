"""The qwen2 architecture (Qwen2 / Qwen2.5, Coder included) over the paged KV cache.

Qwen2 is llama with a bias on the Q/K/V projections (read from the config) and the NeoX rope
layout stored as is in GGUF, so its Q/K need no un-permuting. Everything else is shared with
:mod:`ragloom.runtime.models.llama`.
"""

from __future__ import annotations

from ragloom.runtime.models.llama import LlamaForCausalLM

__all__ = ["Qwen2ForCausalLM"]


class Qwen2ForCausalLM(LlamaForCausalLM):
    """A qwen2-architecture language model (``ModelConfig.attention_bias`` is True)."""

    permute_qk = False
