"""Linear layers: plain ``nn.Linear`` in the models, a transposed weight layout for decoding,
int8 variants through torch's own kernels. (The engine's default keeps a GGUF file's own
quantised weights instead: :mod:`ragloom.runtime.layers.gguf_linear`; the float32 layouts here
run where that does not apply.)

``choose_weight_layouts`` stores the weight of every linear layer (the LM head included) in
whichever layout runs a decode step faster on this CPU, timed once at load time per shape:

- ``"row"`` — ``nn.Linear``'s ``[out, in]``: a one-row product is ``out`` dot products;
- ``"transposed"`` — ``[in, out]`` (:class:`TransposedLinear`): ``in`` scaled row additions.

A decode step is memory-bound: it streams every weight once per token, and on the AVX2 CPUs
measured here MKL streams a wide ``[in, out]`` weight (gate/up, the 150k-row LM head) at up to
twice the bandwidth of the same weight ``[out, in]``. Both layouts compute the same float32
products (only the summation order differs); prefill GEMMs run as fast in either.

Steps of several rows (a batch of decodes, a prefill chunk) are another matter: there a weight
packed by oneDNN for an 8-row product ran 1.3-2x faster than either layout. With
``batch_copy=True`` a shape whose packed copy is at least 1.1x faster on 8 rows keeps one
(:class:`BatchPackedLinear`: one-row steps use the layout, others the packed copy), at the cost
of a second copy of that weight in memory.

``quantize_linears`` swaps the ``nn.Linear`` layers for one of:

- ``"int8"`` — weight-only int8 (:class:`Int8Linear`) for every layer but the LM head: int8
  weights with one scale per output channel, activations kept in bfloat16. Decode steps (few
  rows) run torch's ``_weight_int8pack_mm`` kernel, which streams a quarter of the float32
  weight bytes; longer prefill chunks dequantise the weight to bfloat16 once per call and use
  a bfloat16 GEMM.
- ``"int8-dynamic"`` — ``torch.ao``'s dynamic quantisation of every layer, the LM head included
  (int8 weights per channel *and* activations quantised per tensor on the fly, fbgemm GEMM).
  Fastest, but activation outliers (Qwen2.5 has large ones) cost accuracy whether or not the
  head is quantised; measured in ``benchmarks/engine.py``.

With ``"int8"`` the LM head stays float32 (in the fastest float layout, see above): quantising
it cost the most quality (on the engine benchmark's questions, Qwen2.5-0.5B's int8 greedy
tokens agreed with float32's for 45% of their length with an int8 head, 100% with a float32
one) and, since torch's int8 mat-vec is compute-bound on AVX2 CPUs, bought no speed (8.0 ->
10.8 tok/s with the head in float32). It does not quantise embeddings, norms or the KV cache,
and it does not do GPU quantisation.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from ragloom.errors import ConfigError
from ragloom.runtime.layers.embedding import LMHead

__all__ = [
    "BatchPackedLinear",
    "Int8Linear",
    "Quantization",
    "TransposedEmbedding",
    "TransposedLinear",
    "WeightLayout",
    "choose_weight_layouts",
    "quantize_linears",
]

Quantization = Literal["none", "int8", "int8-dynamic"]
WeightLayout = Literal["auto", "row", "transposed"]
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
        elif not isinstance(child, LMHead):  # the LM head stays float32
            _swap_linears(child)


class TransposedLinear(nn.Module):
    """A linear layer whose weight is kept transposed, ``[in, out]`` row-major.

    Args:
        linear: the layer to convert (its weight is copied transposed and not kept).

    >>> layer = nn.Linear(8, 4)
    >>> x = torch.randn(2, 8)
    >>> torch.allclose(TransposedLinear(layer)(x), layer(x), atol=1e-6)
    True
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight_t = linear.weight.detach().t().contiguous()
        self.weight_t = nn.Parameter(weight_t, requires_grad=False)
        bias = linear.bias
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T + b``."""
        rows = x.reshape(-1, self.in_features)
        out = (
            rows @ self.weight_t
            if self.bias is None
            else torch.addmm(self.bias, rows, self.weight_t)
        )
        return out.reshape(*x.shape[:-1], self.out_features)


class TransposedEmbedding(nn.Module):
    """A token embedding that reads its table from a tied :class:`TransposedLinear` head.

    Tied embeddings share one tensor; when the head is transposed the embedding looks its rows
    up as columns of the head's ``[hidden, vocab]`` weight, so the table is stored once.

    Args:
        head: the transposed LM head projection.
    """

    def __init__(self, head: TransposedLinear) -> None:
        super().__init__()
        self.head = [head]  # a list: not registered twice as a submodule

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[tokens]`` ids -> ``[tokens, hidden]`` vectors."""
        table = self.head[0].weight_t
        return table.index_select(1, input_ids.flatten()).t().contiguous()


class BatchPackedLinear(nn.Module):
    """A linear layer with a second, oneDNN-packed copy of its weight for multi-row products.

    Args:
        one_row: the layer that runs one-row products (``nn.Linear`` or
            :class:`TransposedLinear`); it keeps its weight and bias.
        batch_rows: the row count the packed copy is tuned for.

    Raises:
        ConfigError: torch was built without oneDNN.

    >>> layer = nn.Linear(16, 8)
    >>> x = torch.randn(4, 16)
    >>> torch.allclose(BatchPackedLinear(layer)(x), layer(x), atol=1e-5)
    True
    """

    def __init__(self, one_row: nn.Linear | TransposedLinear, batch_rows: int = 8) -> None:
        super().__init__()
        if not torch.backends.mkldnn.is_available():
            raise ConfigError("BatchPackedLinear needs torch built with oneDNN (mkldnn)")
        self.one_row: nn.Linear | TransposedLinear = one_row
        self.in_features, self.out_features = one_row.in_features, one_row.out_features
        weight = _row_weight(one_row)
        # an opaque oneDNN tensor: a plain attribute, not a parameter (no state_dict, no .to)
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, batch_rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T + b``: one row through ``one_row``, more through the packed copy."""
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] == 1:
            return self.one_row(x)
        bias = self.one_row.bias
        out = torch.ops.mkldnn._linear_pointwise(rows, self.packed, bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)  # type: ignore[no-any-return]


def _row_weight(layer: nn.Linear | TransposedLinear) -> torch.Tensor:
    """``layer``'s weight as ``[out, in]`` (a view for a transposed layer)."""
    if isinstance(layer, TransposedLinear):
        return layer.weight_t.detach().t()
    return layer.weight.detach()


def choose_weight_layouts(
    model: nn.Module, layout: WeightLayout = "auto", rows: int = 1, batch_copy: bool = False
) -> dict[tuple[int, int], str]:
    """Store every ``nn.Linear`` of ``model`` in the faster layout for ``rows``-row products.

    With ``"auto"`` each distinct ``(out, in)`` shape is timed both ways on the model's own
    layers of that shape (several of them in turn, so the weights come from memory, not the
    cache, as in a real step); ``"row"`` keeps every layer as is, ``"transposed"`` transposes
    all. A tied embedding follows its head (:class:`TransposedEmbedding`). Changes ``model`` in
    place.

    Returns:
        the layout chosen per ``(out_features, in_features)`` shape.

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))
    >>> sorted(choose_weight_layouts(net, "transposed").items())
    [((4, 8), 'transposed'), ((8, 4), 'transposed')]
    >>> isinstance(net[0], TransposedLinear)
    True
    """
    if layout not in ("auto", "row", "transposed"):
        raise ConfigError(f"weight_layout must be 'auto', 'row' or 'transposed', got {layout!r}")
    owners = [
        (parent, name)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is nn.Linear
    ]
    by_shape: dict[tuple[int, int], list[nn.Linear]] = {}
    for parent, name in owners:
        layer = getattr(parent, name)
        by_shape.setdefault((layer.out_features, layer.in_features), []).append(layer)
    chosen = {
        shape: layout if layout != "auto" else _faster_layout(layers, rows)
        for shape, layers in by_shape.items()
    }
    if batch_copy and torch.backends.mkldnn.is_available():
        for shape, layers in by_shape.items():
            if _packed_is_faster(layers, chosen[shape]):
                chosen[shape] += "+packed"
    del by_shape  # from here each swap frees the weight it replaces: one layer's worth at most
    while owners:
        parent, name = owners.pop()
        child = getattr(parent, name)
        kind = chosen[(child.out_features, child.in_features)]
        one_row: nn.Linear | TransposedLinear = child
        if kind.startswith("transposed"):
            one_row = TransposedLinear(child)
            _retie_embeddings(model, child.weight, one_row)
        setattr(parent, name, BatchPackedLinear(one_row) if kind.endswith("+packed") else one_row)
    return chosen


def _retie_embeddings(model: nn.Module, weight: torch.Tensor, head: TransposedLinear) -> None:
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Embedding) and child.weight is weight:
                setattr(parent, name, TransposedEmbedding(head))


@torch.inference_mode()
def _faster_layout(layers: list[nn.Linear], rows: int) -> str:
    """Time ``rows``-row products through ``layers`` in both layouts; the faster one's name."""
    weights = _sample(layers)
    transposed = [w.t().contiguous() for w in weights]
    x = torch.randn(rows, weights[0].shape[1], dtype=weights[0].dtype)
    best = _race(
        {
            "row": lambda: [torch.nn.functional.linear(x, w) for w in weights],
            "transposed": lambda: [torch.mm(x, w) for w in transposed],
        },
        sum(w.numel() * w.element_size() for w in weights),
    )
    # row unless transposed is clearly faster: timing noise must not flip a near tie
    return "transposed" if best["transposed"] < 0.9 * best["row"] else "row"


@torch.inference_mode()
def _packed_is_faster(layers: list[nn.Linear], layout: str, rows: int = 8) -> bool:
    """Whether a oneDNN-packed copy runs ``rows``-row products 1.1x faster than ``layout``
    (False where oneDNN cannot pack this dtype on this CPU: bfloat16 without AVX-512, say)."""
    weights = _sample(layers)
    x = torch.randn(rows, weights[0].shape[1], dtype=weights[0].dtype)
    try:
        packed = [torch.ops.mkldnn._reorder_linear_weight(w, rows) for w in weights]
        torch.ops.mkldnn._linear_pointwise(x, packed[0], None, "none", [], "")
    except RuntimeError:
        return False
    transposed = [w.t().contiguous() for w in weights] if layout == "transposed" else []
    best = _race(
        {
            "plain": lambda: (
                [torch.mm(x, w) for w in transposed]
                if transposed
                else [torch.nn.functional.linear(x, w) for w in weights]
            ),
            "packed": lambda: [
                torch.ops.mkldnn._linear_pointwise(x, p, None, "none", [], "") for p in packed
            ],
        },
        sum(w.numel() * w.element_size() for w in weights),
    )
    return best["packed"] * 1.1 < best["plain"]


def _race(
    runs: dict[str, Callable[[], object]], nbytes: int, rounds: int = 5, min_bytes: int = 256 << 20
) -> dict[str, float]:
    """Best time of each run over ``rounds`` rounds that take turns (so a burst of load on a
    shared CPU hits them alike); a round repeats a run until it has read ``min_bytes``, so no
    timing is shorter than a scheduler tick."""
    repeat = min(64, max(1, -(-min_bytes // nbytes)))
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(repeat):
                run()
            best[name] = min(best[name], (time.perf_counter() - start) / repeat)
    return best


def _sample(layers: list[nn.Linear], min_bytes: int = 64 << 20) -> list[torch.Tensor]:
    """Weights of enough of ``layers`` that, streamed in turn, they do not stay in the cache."""
    weights: list[torch.Tensor] = []
    for layer in layers:
        weights.append(layer.weight.detach())
        if sum(w.numel() * w.element_size() for w in weights) >= min_bytes:
            break
    return weights
