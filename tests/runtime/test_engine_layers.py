"""Engine layers against plain torch: int8 linear, sampler filters (no model needed)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ragloom.errors import ConfigError
from ragloom.runtime.engine.sampler import top_p_filter
from ragloom.runtime.layers.linear import (
    BatchPackedLinear,
    Int8Linear,
    TransposedEmbedding,
    TransposedLinear,
    choose_weight_layouts,
    quantize_linears,
)


@pytest.mark.parametrize(("rows", "width"), [(1, 64), (3, 128), (40, 64), (2, 8), (2, 40)])
def test_int8_linear_is_close_to_float(rows, width):
    torch.manual_seed(0)  # few rows: the int8 mat-vec kernel; many, or odd widths: a bf16 GEMM
    layer = nn.Linear(width, 48)
    x = torch.randn(rows, width)
    want = layer(x)
    got = Int8Linear(layer)(x)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert (got - want).norm() / want.norm() < 0.02


def test_quantize_linears_swaps_every_linear_and_checks_mode():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 2)))
    quantize_linears(model, "int8")
    inner = model[2]
    assert isinstance(inner, nn.Sequential)
    assert isinstance(model[0], Int8Linear) and isinstance(inner[0], Int8Linear)
    with pytest.raises(ConfigError, match="int4"):
        quantize_linears(nn.Linear(2, 2), "int4")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="float32"):
        quantize_linears(nn.Linear(2, 2).to(torch.bfloat16), "int8")


def test_int8_keeps_the_lm_head_in_float32():
    from ragloom.runtime.layers.embedding import LMHead

    model = nn.ModuleDict({"body": nn.Linear(16, 16), "head": LMHead(50, 16)})
    quantize_linears(model, "int8")
    assert isinstance(model["body"], Int8Linear)
    assert type(model["head"].proj) is nn.Linear


def test_top_p_keeps_the_smallest_set_with_the_mass():
    probs = torch.tensor([0.1, 0.5, 0.15, 0.25])
    assert top_p_filter(probs.clone(), 0.7).tolist() == pytest.approx([0, 0.5, 0, 0.25])
    assert top_p_filter(probs.clone(), 1.0).tolist() == pytest.approx(probs.tolist())
    assert top_p_filter(probs.clone(), 0.01).tolist() == pytest.approx([0, 0.5, 0, 0])


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.mid = nn.Linear(16, 16)
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.mid(self.embed(ids)))


@pytest.mark.parametrize("rows", [1, 5])
def test_transposed_linear_computes_the_same_product(rows):
    torch.manual_seed(0)
    layer = nn.Linear(24, 40)
    x = torch.randn(rows, 3, 24)
    got = TransposedLinear(layer)(x)
    assert got.shape == (rows, 3, 40)
    assert torch.allclose(got, layer(x), atol=1e-5)
    assert TransposedLinear(layer).weight_t.is_contiguous()


def test_transposing_a_tied_head_moves_the_embedding_onto_it():
    torch.manual_seed(0)
    model = _Tied()
    ids = torch.tensor([3, 7, 7, 49])
    want = model(ids)
    params = sum(p.numel() for p in model.parameters())
    chosen = choose_weight_layouts(model, "transposed")
    assert chosen == {(16, 16): "transposed", (50, 16): "transposed"}
    assert isinstance(model.head, TransposedLinear) and isinstance(model.embed, TransposedEmbedding)
    assert sum(p.numel() for p in model.parameters()) == params  # the table is stored once
    assert torch.allclose(model(ids), want, atol=1e-5)


def test_row_layout_keeps_the_model_and_auto_picks_a_layout_per_shape():
    model = _Tied()
    assert set(choose_weight_layouts(model, "row").values()) == {"row"}
    assert type(model.head) is nn.Linear and type(model.embed) is nn.Embedding
    chosen = choose_weight_layouts(_Tied(), "auto")
    assert set(chosen) == {(16, 16), (50, 16)} and set(chosen.values()) <= {"row", "transposed"}
    with pytest.raises(ConfigError, match="weight_layout"):
        choose_weight_layouts(model, "column")  # type: ignore[arg-type]


@pytest.mark.parametrize("transposed", [False, True])
def test_batch_packed_linear_equals_its_layer_for_one_and_many_rows(transposed):
    torch.manual_seed(0)
    layer = nn.Linear(64, 96)  # with a bias
    one_row = TransposedLinear(layer) if transposed else layer
    packed = BatchPackedLinear(one_row)
    for rows in (1, 3, 8, 40):
        x = torch.randn(rows, 64)
        assert torch.allclose(packed(x), layer(x), atol=1e-4)
    x = torch.randn(2, 5, 64)  # leading dimensions are kept
    assert torch.allclose(packed(x), layer(x), atol=1e-4) and packed(x).shape == (2, 5, 96)


def test_batch_copy_wraps_exactly_the_shapes_it_reports(monkeypatch):
    monkeypatch.setattr(
        "ragloom.runtime.layers.linear._packed_is_faster", lambda layers, layout: layout == "row"
    )
    model = _Tied()
    ids = torch.tensor([1, 2, 3])
    want = model(ids)
    chosen = choose_weight_layouts(model, "row", batch_copy=True)
    assert chosen == {(16, 16): "row+packed", (50, 16): "row+packed"}
    assert isinstance(model.mid, BatchPackedLinear) and isinstance(model.head, BatchPackedLinear)
    assert model.embed.weight is model.head.one_row.weight  # still tied
    assert torch.allclose(model(ids), want, atol=1e-5)
    assert set(choose_weight_layouts(_Tied(), "transposed", batch_copy=True).values()) == {
        "transposed"
    }


def test_bfloat16_weights_get_a_layout_even_where_onednn_cannot_pack_them():
    torch.manual_seed(0)  # oneDNN packs bfloat16 only on AVX-512/AVX-NE-CONVERT CPUs
    model = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 256)).bfloat16()
    x = torch.randn(4, 256, dtype=torch.bfloat16)
    want = model(x).float()
    chosen = choose_weight_layouts(model, "auto", batch_copy=True)
    assert set(chosen) == {(1024, 256), (256, 1024)}
    assert (model(x).float() - want).abs().max() < 0.05 * want.abs().max()
