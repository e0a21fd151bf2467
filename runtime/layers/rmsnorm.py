"""RMSNorm, optionally fused with the residual add that precedes it.

Does not hold any other normalisation (no LayerNorm).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RMSNorm"]


class RMSNorm(nn.Module):
    """``x / rms(x) * weight``, computed in float32 like the reference implementations.

    Args:
        hidden_size: width of the normalised dimension.
        eps: added to the mean square before the root.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalise ``x + residual``; return ``(normed, new residual)``."""
        if residual is not None:
            x = x + residual
        dtype = x.dtype
        normed = torch.nn.functional.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * normed.to(dtype), x
