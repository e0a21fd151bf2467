"""The llama architecture (SmolLM2, Llama 2/3, ...) over the paged KV cache.

Q/K/V and gate/up projections are fused into one matmul each (fewer, larger GEMMs on CPU). The
model runs packed tokens of many sequences at once: ``forward(input_ids, positions, meta)``
returns hidden states, ``compute_logits`` turns selected rows into logits. Weight loading lives
in :mod:`ragloom.runtime.models.gguf_loader`.
"""

from __future__ import annotations

import torch
from torch import nn

from ragloom.runtime.layers.activation import SiluAndMul
from ragloom.runtime.layers.attention import AttentionMetadata, PagedAttention
from ragloom.runtime.layers.embedding import LMHead, VocabEmbedding
from ragloom.runtime.layers.rmsnorm import RMSNorm
from ragloom.runtime.layers.rotary import RotaryEmbedding
from ragloom.runtime.models.config import ModelConfig

__all__ = ["LlamaForCausalLM"]


class LlamaAttention(nn.Module):
    """Self-attention: fused QKV projection, rotary, paged attention (within ``window`` keys
    if given), output projection."""

    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding, window: int = 0) -> None:
        super().__init__()
        self.q_size = cfg.num_heads * cfg.head_dim
        self.kv_size = cfg.num_kv_heads * cfg.head_dim
        self.head_dim = cfg.head_dim
        qkv_out = self.q_size + 2 * self.kv_size
        self.qkv_proj = nn.Linear(cfg.hidden_size, qkv_out, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.q_size, cfg.hidden_size, bias=False)
        self.rotary = rotary
        self.attn = PagedAttention(
            cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, scale=cfg.scale, window=window
        )

    def forward(
        self, positions: torch.Tensor, x: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """Attend over ``x`` [tokens, hidden]."""
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(-1, self.q_size // self.head_dim, self.head_dim)
        k = k.view(-1, self.kv_size // self.head_dim, self.head_dim)
        v = v.view(-1, self.kv_size // self.head_dim, self.head_dim)
        q, k = self.rotary(positions, q, k)
        return self.o_proj(self.attn(q, k, v, meta).flatten(1))


class LlamaMLP(nn.Module):
    """Gated MLP: ``down(act(gate(x), up(x)))`` with gate and up fused; ``act`` is
    ``silu(gate) * up`` unless given (gemma3: :class:`GeluTanhAndMul`)."""

    def __init__(self, cfg: ModelConfig, act: nn.Module | None = None) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.act = SiluAndMul() if act is None else act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP."""
        return self.down_proj(self.act(self.gate_up_proj(x)))


class LlamaDecoderLayer(nn.Module):
    """Pre-norm decoder layer with the residual add fused into the norms."""

    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = LlamaAttention(cfg, rotary)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = LlamaMLP(cfg)

    def forward(
        self,
        positions: torch.Tensor,
        x: torch.Tensor,
        residual: torch.Tensor | None,
        meta: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(layer output, residual)``; their sum is the new residual stream."""
        h, residual = self.input_layernorm(x, residual)
        h = self.self_attn(positions, h, meta)
        h, residual = self.post_attention_layernorm(h, residual)
        return self.mlp(h), residual


class LlamaModel(nn.Module):
    """Embedding, decoder layers and the final norm."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        max_position = min(cfg.context_length, 32768)
        rotary = RotaryEmbedding(cfg.head_dim, max_position, cfg.rope_theta)
        self.embed_tokens = VocabEmbedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(cfg, rotary) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """Hidden states of the packed tokens."""
        x = self.embed_tokens(input_ids)
        residual = None
        for layer in self.layers:
            x, residual = layer(positions, x, residual, meta)
        return self.norm(x, residual)[0]


class LlamaForCausalLM(nn.Module):
    """A llama-architecture language model.

    Args:
        cfg: the model's shape.
    """

    permute_qk = True  # GGUF stores llama Q/K rows interleaved for llama.cpp's rope
    base_model: type[nn.Module] = LlamaModel  # (the decoder stack under the LM head)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = self.base_model(cfg)
        self.lm_head = LMHead(cfg.vocab_size, cfg.hidden_size)
        if cfg.tie_word_embeddings:
            self.lm_head.proj.weight = self.embed_tokens().weight

    def embed_tokens(self) -> nn.Embedding:
        """The token embedding (which a tied LM head shares)."""
        embedding = self.model.embed_tokens
        assert isinstance(embedding, nn.Embedding)
        return embedding

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """Hidden states ``[tokens, hidden]`` of the packed step."""
        return self.model(input_ids, positions, meta)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 logits for the given hidden rows."""
        return self.lm_head(hidden)

    def attention_layers(self) -> list[PagedAttention]:
        """The paged-attention modules, in layer order (the runner hands them the KV cache)."""
        return [m for m in self.modules() if isinstance(m, PagedAttention)]
