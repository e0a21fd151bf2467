"""The gated activations of MLPs on a fused gate/up tensor: ``silu(gate) * up`` (llama,
qwen2) and ``gelu_tanh(gate) * up`` (gemma3).

Holds no other activation functions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["GeluTanhAndMul", "SiluAndMul"]


class SiluAndMul(nn.Module):
    """Split the last dimension in halves ``[gate, up]`` and return ``silu(gate) * up``.

    >>> SiluAndMul()(torch.zeros(1, 4)).shape
    torch.Size([1, 2])
    """

    def __init__(self) -> None:
        super().__init__()
        # ragloom's compiled op (``silu_mul``: one pass instead of three tensors) for float32
        # rows, or None: torch's path (set by the model runner; see ragloom.runtime.layers.kernels)
        self.kernel: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the gated SiLU."""
        if (
            self.kernel is not None
            and x.dim() == 2
            and x.dtype == torch.float32
            and x.stride(1) == 1
        ):
            return self.kernel(x)
        gate, up = x.chunk(2, dim=-1)
        return torch.nn.functional.silu(gate) * up


class GeluTanhAndMul(nn.Module):
    """Split the last dimension in halves ``[gate, up]`` and return ``gelu(gate) * up``, with
    GELU's tanh approximation (transformers' ``gelu_pytorch_tanh``, as gemma3 runs it).

    >>> GeluTanhAndMul()(torch.zeros(1, 4)).shape
    torch.Size([1, 2])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the gated GELU."""
        gate, up = x.chunk(2, dim=-1)
        return torch.nn.functional.gelu(gate, approximate="tanh") * up
