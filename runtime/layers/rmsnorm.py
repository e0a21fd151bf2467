"""RMSNorm, optionally fused with the residual add that precedes it.

Does not hold any other normalisation (no LayerNorm).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["RMSNorm"]

_EMPTY = torch.empty(0)


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
        # ragloom's compiled op (``add_rms_norm``) for float32 rows, or None: torch's path
        # (set by the model runner; see ragloom.runtime.layers.kernels)
        self.kernel: Any = None

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalise ``x + residual``; return ``(normed, new residual)``."""
        if (
            self.kernel is not None
            and x.dim() == 2
            and x.dtype == self.weight.dtype == torch.float32
        ):
            empty = _EMPTY if residual is None else residual
            normed, summed = self.kernel(x.contiguous(), empty, self.weight, self.eps)
            return normed, summed
        if residual is not None:
            x = x + residual
        dtype = x.dtype
        normed = torch.nn.functional.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * normed.to(dtype), x
