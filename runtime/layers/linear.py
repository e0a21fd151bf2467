"""Linear layers: plain ``nn.Linear`` in the models, int8 through torch's own quantisation.

``quantize_linears`` swaps every ``nn.Linear`` (the LM head included) for torch's dynamically
quantised int8 linear (int8 weights per output channel, activations quantised on the fly, fbgemm
GEMM): a quarter of the weight bytes to stream per decoded token on CPU. It does not quantise
embeddings, norms or the KV cache, and it does not do GPU quantisation.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import nn

from ragloom.errors import ConfigError

__all__ = ["Quantization", "quantize_linears"]

Quantization = Literal["none", "int8"]


def quantize_linears(model: nn.Module, mode: Quantization) -> nn.Module:
    """Return ``model`` with its linear layers quantised as ``mode`` says (in place).

    Args:
        model: a float32 model.
        mode: ``"none"`` (unchanged) or ``"int8"`` (dynamic int8, weights per channel).

    >>> quantize_linears(nn.Sequential(nn.Linear(4, 4)), "int8")[0].__class__.__name__
    'Linear'
    """
    if mode == "none":
        return model
    if mode != "int8":
        raise ConfigError(f"quantization must be 'none' or 'int8', got {mode!r}")
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise ConfigError("int8 quantisation needs a float32 model (dtype='float32')")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notice; the kernels are current
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        spec = {nn.Linear: per_channel_dynamic_qconfig}
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
