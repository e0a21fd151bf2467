"""The gated activation of llama-style MLPs: ``silu(gate) * up`` on a fused gate/up tensor.

Holds no other activation functions.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SiluAndMul"]


class SiluAndMul(nn.Module):
    """Split the last dimension in halves ``[gate, up]`` and return ``silu(gate) * up``.

    >>> SiluAndMul()(torch.zeros(1, 4)).shape
    torch.Size([1, 2])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the gated SiLU."""
        gate, up = x.chunk(2, dim=-1)
        return torch.nn.functional.silu(gate) * up
