"""RMSNorm (with its residual add), rotary embeddings and the MLP's ``silu(gate) * up``:
ragloom's compiled kernels against the layers' torch paths, and their errors. Decode attention
is in ``test_paged_attention.py``; the kernels' thread pool in ``test_kernel_threads.py``.
"""

from __future__ import annotations

import pytest
import torch

from ragloom.runtime.layers.activation import SiluAndMul
from ragloom.runtime.layers.kernels import available_kernels
from ragloom.runtime.layers.rmsnorm import RMSNorm
from ragloom.runtime.layers.rotary import RotaryEmbedding


def ops():
    found = available_kernels()
    assert found is not None  # CI runs on AVX2 machines with g++: no silent fallback there
    return found.ragloom_layers


@pytest.mark.parametrize("rows", [1, 8, 300])  # 300: a prefill chunk's rows (one thread too)
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("width", [896, 60])  # 60: a tail after the 8-wide loop
def test_rms_norm_kernel_matches_torch(rows, with_residual, width):
    gen = torch.Generator().manual_seed(rows)
    norm = RMSNorm(width, eps=1e-5)
    norm.weight.data = torch.randn(width, generator=gen)
    x = torch.randn(rows, width, generator=gen) * 4
    residual = torch.randn(rows, width, generator=gen) if with_residual else None
    want, want_sum = norm(x, residual)
    norm.kernel = ops().add_rms_norm
    got, got_sum = norm(x, residual)
    assert torch.equal(got_sum, want_sum)  # the residual add is exact
    if not with_residual:
        assert got_sum is x  # no copy of the stream when there is nothing to add
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 8, 300])
def test_rotary_kernel_is_bit_equal_on_qkv_views(rows):
    gen = torch.Generator().manual_seed(rows)
    heads, kv_heads, dim = 14, 2, 64
    rotary = RotaryEmbedding(dim, 4096, 1_000_000.0)
    qkv = torch.randn(rows, (heads + 2 * kv_heads) * dim, generator=gen)
    q, k, _ = qkv.split([heads * dim, kv_heads * dim, kv_heads * dim], dim=-1)
    q, k = q.view(rows, heads, dim), k.view(rows, kv_heads, dim)  # strided, as in the model
    positions = torch.randint(0, 4096, (rows,), generator=gen)
    want = rotary(positions, q, k)
    rotary.kernel = ops().rotary
    got = rotary(positions, q, k)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_kernel_errors_name_the_problem():
    rotary, norm = ops().rotary, ops().add_rms_norm
    table = torch.zeros(16, 8)
    q, k = torch.zeros(1, 2, 8), torch.zeros(1, 1, 8)
    with pytest.raises(RuntimeError, match="position 16 outside the table of 16"):
        rotary(q, k, table, table, torch.tensor([16]))
    with pytest.raises(RuntimeError, match="same tokens"):
        rotary(q, torch.zeros(2, 1, 8), table, table, torch.tensor([0]))
    with pytest.raises(RuntimeError, match="weight must be"):
        norm(torch.zeros(1, 8), torch.empty(0), torch.ones(7), 1e-6)
    with pytest.raises(RuntimeError, match="residual must be"):
        norm(torch.zeros(1, 8), torch.zeros(2, 8), torch.ones(8), 1e-6)


def test_rotary_of_a_transposed_product_takes_the_torch_path():
    # many-row products come back transposed ([tokens, out] with stride 1 along tokens):
    # the kernel cannot read heads in place there, and torch's path must run instead
    rows, heads, dim = 40, 4, 8
    rotary = RotaryEmbedding(dim, 64, 10_000.0)
    qk = torch.randn((heads + 1) * dim, rows).t()
    q, k = qk.split([heads * dim, dim], dim=-1)
    q, k = q.view(rows, heads, dim), k.view(rows, 1, dim)
    positions = torch.arange(rows)
    want = rotary(positions, q, k)
    rotary.kernel = ops().rotary
    got = rotary(positions, q, k)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("rows", [1, 8, 300])  # 300: a prefill chunk's rows (one thread too)
@pytest.mark.parametrize("width", [4864, 60])  # 60: a tail after the 8-wide loop
def test_silu_mul_kernel_matches_torch(rows, width):
    gen = torch.Generator().manual_seed(rows + width)
    act = SiluAndMul()
    x = torch.randn(rows, 2 * width, generator=gen) * 6
    want = act(x)
    act.kernel = ops().silu_mul
    got = act(x)
    assert got.shape == (rows, width)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)  # only e^x's last bits differ


def test_silu_mul_kernel_reads_strided_rows_and_extreme_values():
    # rows further apart than their width (a view into a wider buffer), and inputs where
    # e^-x over- or underflows: silu(-100) is -0 in torch and ~-6e-37 here, both ~0
    wide = torch.zeros(3, 40)
    x = wide[:, :16]
    x[0, :8] = torch.tensor([-100.0, -88.5, -20.0, 0.0, 3.0, 20.0, 88.5, 100.0])
    x[:, 8:] = 2.0
    x[1:, :8] = torch.linspace(-5, 5, 16).view(2, 8)
    act = SiluAndMul()
    want = act(x)
    act.kernel = ops().silu_mul
    got = act(x)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-30)


def test_silu_mul_of_a_transposed_product_takes_the_torch_path():
    x = torch.randn(64, 10).t()  # [10, 64] with stride 1 along the rows
    act = SiluAndMul()
    want = act(x)
    act.kernel = ops().silu_mul
    assert torch.equal(act(x), want)


def test_silu_mul_errors_name_the_problem():
    silu_mul = ops().silu_mul
    with pytest.raises(RuntimeError, match=r"float32 \[T, 2 \* I\] with contiguous rows"):
        silu_mul(torch.zeros(2, 7))
    with pytest.raises(RuntimeError, match="float32"):
        silu_mul(torch.zeros(2, 8, dtype=torch.float64))
