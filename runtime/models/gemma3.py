"""The gemma3 architecture (Gemma 3 text models) over the paged KV cache.

What sets it apart from :mod:`ragloom.runtime.models.llama`:

- five of every six layers attend within a sliding window (512 keys for Gemma 3 270M/1B) with
  a rotary base of 10,000; every sixth attends to the whole context with the file's base;
- each head's queries and keys are RMS-normalised before the rotary;
- the attention and MLP outputs are RMS-normalised again before their residual adds (four
  norms a layer);
- the MLP gates with GELU's tanh approximation;
- the token embeddings are scaled by ``sqrt(hidden_size)``.

GGUF stores Gemma's norm weights as ``1 + w`` (llama.cpp adds the one that transformers'
``Gemma3RMSNorm`` adds at run time), so the shared :class:`RMSNorm` runs them as they are. The
rotary is NeoX-style, stored as is: no Q/K un-permuting.
"""

from __future__ import annotations

import torch
from torch import nn

from ragloom.runtime.layers.activation import GeluTanhAndMul
from ragloom.runtime.layers.attention import AttentionMetadata
from ragloom.runtime.layers.embedding import VocabEmbedding
from ragloom.runtime.layers.rmsnorm import RMSNorm
from ragloom.runtime.layers.rotary import RotaryEmbedding
from ragloom.runtime.models.config import ModelConfig
from ragloom.runtime.models.llama import LlamaAttention, LlamaForCausalLM, LlamaMLP

__all__ = ["Gemma3ForCausalLM"]


class Gemma3Attention(LlamaAttention):
    """llama's attention with per-head Q/K norms before the rotary (windowed on a local
    layer)."""

    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding, window: int) -> None:
        super().__init__(cfg, rotary, window)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)

    def forward(
        self, positions: torch.Tensor, x: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """Attend over ``x`` [tokens, hidden]."""
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        d = self.head_dim
        q = self.q_norm(q.reshape(-1, d))[0].view(-1, self.q_size // d, d)  # (rows of one head)
        k = self.k_norm(k.reshape(-1, d))[0].view(-1, self.kv_size // d, d)
        q, k = self.rotary(positions, q, k)
        v = v.reshape(-1, self.kv_size // d, d)
        return self.o_proj(self.attn(q, k, v, meta).flatten(1))


class Gemma3DecoderLayer(nn.Module):
    """Norms before and after both the attention and the MLP; the residual adds are fused
    into the norms before them, as in llama's layer."""

    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding, window: int) -> None:
        super().__init__()
        eps = cfg.rms_norm_eps
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps)
        self.self_attn = Gemma3Attention(cfg, rotary, window)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps)
        self.pre_feedforward_layernorm = RMSNorm(cfg.hidden_size, eps)
        self.mlp = LlamaMLP(cfg, GeluTanhAndMul())
        self.post_feedforward_layernorm = RMSNorm(cfg.hidden_size, eps)

    def forward(
        self,
        positions: torch.Tensor,
        x: torch.Tensor,
        residual: torch.Tensor | None,
        meta: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(layer output, residual)``; their sum is the new residual stream."""
        h, residual = self.input_layernorm(x, residual)
        h = self.post_attention_layernorm(self.self_attn(positions, h, meta))[0]
        h, residual = self.pre_feedforward_layernorm(h, residual)
        return self.post_feedforward_layernorm(self.mlp(h))[0], residual


class Gemma3Model(nn.Module):
    """Scaled embedding, decoder layers (local and global) and the final norm."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        max_position = min(cfg.context_length, 32768)
        glob = RotaryEmbedding(cfg.head_dim, max_position, cfg.rope_theta)
        local = RotaryEmbedding(cfg.head_dim, max_position, cfg.rope_local_theta or cfg.rope_theta)
        self.embed_tokens = VocabEmbedding(cfg.vocab_size, cfg.hidden_size)
        self.normalizer = cfg.hidden_size**0.5
        self.layers = nn.ModuleList(
            Gemma3DecoderLayer(cfg, local, cfg.sliding_window)
            if cfg.is_local(i)
            else Gemma3DecoderLayer(cfg, glob, 0)
            for i in range(cfg.num_layers)
        )
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """Hidden states of the packed tokens."""
        x = self.embed_tokens(input_ids)
        x = x * torch.tensor(self.normalizer, dtype=x.dtype)  # (rounded to x's dtype first)
        residual = None
        for layer in self.layers:
            x, residual = layer(positions, x, residual, meta)
        return self.norm(x, residual)[0]


class Gemma3ForCausalLM(LlamaForCausalLM):
    """A gemma3-architecture language model (text only).

    Args:
        cfg: the model's shape (``sliding_window``, ``sliding_window_pattern``,
            ``rope_local_theta`` and ``attention_scale`` set).
    """

    permute_qk = False
    base_model = Gemma3Model
