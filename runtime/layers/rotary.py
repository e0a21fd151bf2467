"""Rotary position embeddings (the "rotate half" / NeoX layout) from a precomputed table.

GGUF llama files store Q/K in the interleaved layout; the loader un-permutes them, so every
architecture here uses this one layout. No rope scaling variants (none of the packaged models use
one).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["RotaryEmbedding"]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotate queries and keys by their absolute positions.

    Args:
        head_dim: size of one attention head (all of it is rotated).
        max_position: positions the table covers.
        base: the rope frequency base (``rope_theta``).
    """

    def __init__(self, head_dim: int, max_position: int, base: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (
            base
            ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim)
        )
        freqs = torch.outer(torch.arange(max_position, dtype=torch.float32, device="cpu"), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos: torch.Tensor
        self.sin: torch.Tensor
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)
        self._step: tuple[torch.Tensor, torch.dtype, torch.Tensor, torch.Tensor] | None = None
        # ragloom's compiled op (``rotary``) for float32 queries and keys, or None: torch's
        # path (set by the model runner; see ragloom.runtime.layers.kernels)
        self.kernel: Any = None

    def forward(
        self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate ``q`` [tokens, heads, dim] and ``k`` [tokens, kv_heads, dim]."""
        if self.kernel is not None and _heads_contiguous(q) and _heads_contiguous(k):
            q_out, k_out = self.kernel(q, k, self.cos, self.sin, positions)
            return q_out, k_out
        step = self._step  # every layer of a step passes the same positions: gather once
        if step is None or step[0] is not positions or step[1] is not q.dtype:
            cos = self.cos[positions].unsqueeze(1).to(q.dtype)
            sin = self.sin[positions].unsqueeze(1).to(q.dtype)
            step = self._step = (positions, q.dtype, cos, sin)
        cos, sin = step[2], step[3]
        return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _heads_contiguous(x: torch.Tensor) -> bool:
    """Whether the kernel can read ``x`` [tokens, heads, dim] in place: float32, each head's
    values adjacent and heads one after another (a row may be part of a wider one, as in a
    fused QKV output; a transposed product's view is not)."""
    return x.dtype == torch.float32 and x.stride(2) == 1 and x.stride(1) == x.shape[2]
