"""Token embedding and the language-model head (logits only for the rows that need them).

The head may share its weight with the embedding (tied word embeddings).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LMHead", "VocabEmbedding"]


class VocabEmbedding(nn.Embedding):
    """Token id -> hidden vector."""

    def reset_parameters(self) -> None:
        """Random normal weights, except on the meta device, where a model is built to have its
        weights loaded: drawing them there goes through torch's reference ops, whose first use
        imports torch's compiler stack (1.6 s of a 4.4 s engine load)."""
        if not self.weight.is_meta:
            super().reset_parameters()


class LMHead(nn.Module):
    """Hidden vectors -> float32 logits over the vocabulary.

    Args:
        vocab_size: rows of the output projection.
        hidden_size: width of the hidden state.
    """

    def __init__(self, vocab_size: int, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, vocab_size, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits for every row of ``hidden`` (select the rows before calling)."""
        return self.proj(hidden).float()
