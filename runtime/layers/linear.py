"""Linear layers: plain ``nn.Linear`` in the models, int8 variants through torch's own kernels.

``quantize_linears`` swaps every ``nn.Linear`` (the LM head included) for one of:

- ``"int8"`` — weight-only int8 (:class:`Int8Linear`): int8 weights with one scale per output
  channel, activations kept in bfloat16. Decode steps (few rows) run torch's
  ``_weight_int8pack_mm`` kernel, which streams a quarter of the float32 weight bytes; longer
  prefill chunks dequantise the weight to bfloat16 once per call and use a bfloat16 GEMM.
- ``"int8-dynamic"`` — ``torch.ao``'s dynamic quantisation (int8 weights per channel *and*
  activations quantised per tensor on the fly, fbgemm GEMM). Fastest, but activation outliers
  (Qwen2.5 has large ones) cost accuracy; measured in ``benchmarks/engine.py``.

It does not quantise embeddings, norms or the KV cache, and it does not do GPU quantisation.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import nn

from ragloom.errors import ConfigError

__all__ = ["Int8Linear", "Quantization", "quantize_linears"]

Quantization = Literal["none", "int8", "int8-dynamic"]
_DECODE_ROWS = 16  # at most this many rows: the int8 mat-vec kernel; more: a bfloat16 GEMM


class Int8Linear(nn.Module):
    """A linear layer with int8 weights (per-output-channel scales) and bfloat16 activations.

    Args:
        linear: the float layer to quantise (its weight is not kept).

    >>> layer = Int8Linear(nn.Linear(64, 4))
    >>> layer(torch.randn(2, 64)).shape
    torch.Size([2, 4])
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        self.weight_int8 = nn.Parameter(
            torch.round(weight / scales[:, None]).to(torch.int8), requires_grad=False
        )
        self.scales = nn.Parameter(scales.to(torch.bfloat16), requires_grad=False)
        # subtle: torch's CPU int8 mat-vec kernel crashed here on some widths that are not a
        # multiple of 64 (8, 24, 40); every llama/qwen2 width is one, others take the GEMM path
        self.use_kernel = weight.shape[1] % 64 == 0
        bias = linear.bias
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T + b``, returned in ``x``'s dtype."""
        rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
        if rows.shape[0] <= _DECODE_ROWS and self.use_kernel:  # decode
            out = torch._weight_int8pack_mm(rows, self.weight_int8, self.scales)
        else:  # prefill chunk
            weight = self.weight_int8.to(torch.bfloat16) * self.scales[:, None]
            out = torch.nn.functional.linear(rows, weight)
        out = out.to(x.dtype).reshape(*x.shape[:-1], -1)
        return out if self.bias is None else out + self.bias


def quantize_linears(model: nn.Module, mode: Quantization) -> nn.Module:
    """Return ``model`` with its linear layers quantised as ``mode`` says (in place).

    Args:
        model: a float32 model.
        mode: ``"none"`` (unchanged), ``"int8"`` (weight-only) or ``"int8-dynamic"``.

    >>> quantize_linears(nn.Sequential(nn.Linear(4, 4)), "int8")[0].__class__.__name__
    'Int8Linear'
    """
    if mode == "none":
        return model
    if mode not in ("int8", "int8-dynamic"):
        raise ConfigError(f"quantization must be 'none', 'int8' or 'int8-dynamic', got {mode!r}")
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise ConfigError("int8 quantisation needs a float32 model (dtype='float32')")
    if mode == "int8":
        _swap_linears(model)
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notice; the kernels are current
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        spec = {nn.Linear: per_channel_dynamic_qconfig}
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)


def _swap_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child))
        else:
            _swap_linears(child)
