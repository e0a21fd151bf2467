"""Decode attention over the paged KV cache: ragloom's compiled kernel against torch's path
(gather the context, ``scaled_dot_product_attention``), its batch invariance, and its errors.

The engine-level checks (greedy tokens equal the float32 reference, batched equals alone) are
in ``test_engine_reference.py`` and ``test_engine.py``; they run the kernel by default.
"""

from __future__ import annotations

import pytest
import torch

from ragloom.runtime.layers.attention import (
    AttentionMetadata,
    PagedAttention,
    decode_attention_kernel,
)

SLOTS = 8192


def layer(heads: int, kv_heads: int, dim: int, seed: int = 0) -> PagedAttention:
    gen = torch.Generator().manual_seed(seed)
    attn = PagedAttention(heads, kv_heads, dim)
    attn.k_cache = torch.randn(SLOTS, kv_heads, dim, generator=gen)
    attn.v_cache = torch.randn(SLOTS, kv_heads, dim, generator=gen) * 3
    return attn


def step(attn: PagedAttention, lengths: list[int], seed: int = 1):
    """q, k, v of one decode token per sequence, and the metadata of contexts scattered over
    random slots (padding slots point at slot 0, which a correct kernel never reads)."""
    gen = torch.Generator().manual_seed(seed)
    batch, longest = len(lengths), max(lengths)
    slots = torch.zeros(batch, longest, dtype=torch.long)
    order = torch.randperm(SLOTS - 1, generator=gen) + 1
    used = 0
    for i, n in enumerate(lengths):
        slots[i, :n] = order[used : used + n]
        used += n
    lens = torch.tensor(lengths)
    mask = (torch.arange(longest)[None, :] < lens[:, None])[:, None, None, :]
    new_slots = torch.stack([slots[i, n - 1] for i, n in enumerate(lengths)])
    meta = AttentionMetadata(new_slots, batch, slots, mask, lens)
    q = torch.randn(batch, attn.num_heads, attn.head_dim, generator=gen)
    k = torch.randn(batch, attn.num_kv_heads, attn.head_dim, generator=gen)
    v = torch.randn(batch, attn.num_kv_heads, attn.head_dim, generator=gen)
    return q, k, v, meta


def kernel():
    op = decode_attention_kernel(torch.float32, 64, 14, 2)
    assert op is not None  # CI runs on AVX2 machines with g++: no silent fallback there
    return op


@pytest.mark.parametrize(
    ("heads", "kv_heads", "dim"), [(14, 2, 64), (9, 3, 64), (4, 4, 128), (8, 1, 8)]
)
@pytest.mark.parametrize(
    "lengths",
    [[1], [7], [5, 100, 1, 37], [300] * 3, [2000, 3]],  # the last ones split over threads
)
def test_kernel_equals_torch_path(heads, kv_heads, dim, lengths):
    attn = layer(heads, kv_heads, dim)
    q, k, v, meta = step(attn, lengths)
    want = attn(q, k, v, meta)
    attn.decode_kernel = kernel()
    got = attn(q, k, v, meta)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_padding_slots_are_never_read():
    attn = layer(14, 2, 64)
    attn.decode_kernel = kernel()
    q, k, v, meta = step(attn, [3, 50])
    first = attn(q, k, v, meta)
    attn.k_cache[0] = float("nan")  # slot 0 is only in the padding
    attn.v_cache[0] = float("nan")
    assert torch.equal(attn(q, k, v, meta), first)


def test_a_sequence_gets_the_same_bits_alone_and_in_any_batch():
    attn = layer(14, 2, 64)
    attn.decode_kernel = kernel()
    lengths = [40, 900, 1, 17]
    q, k, v, meta = step(attn, lengths)
    together = attn(q, k, v, meta)
    for i, n in enumerate(lengths):
        alone_meta = AttentionMetadata(
            meta.slot_mapping[i : i + 1],
            1,
            meta.decode_slots[i : i + 1, :n],
            meta.decode_mask[i : i + 1, ..., :n],
            meta.decode_lengths[i : i + 1],
        )
        alone = attn(q[i : i + 1], k[i : i + 1], v[i : i + 1], alone_meta)
        assert torch.equal(alone[0], together[i])


@pytest.mark.parametrize(
    ("lengths", "slot", "message"),
    [
        ([0], None, "length 0 outside 1..1"),
        ([5], SLOTS + 3, f"slot {SLOTS + 3} outside the cache"),
        ([5], -1, "slot -1 outside the cache"),
    ],
)
def test_bad_metadata_is_a_clear_error(lengths, slot, message):
    attn = layer(14, 2, 64)
    q = torch.randn(1, 14, 64)
    slots = torch.arange(1, max(lengths[0], 1) + 1)[None, :]
    if slot is not None:
        slots[0, 2] = slot
    with pytest.raises(RuntimeError, match=message):
        kernel()(q, attn.k_cache, attn.v_cache, slots, torch.tensor(lengths), 0.125)


def test_only_float32_caches_and_head_sizes_of_eight_get_the_kernel():
    assert decode_attention_kernel(torch.bfloat16, 64, 14, 2) is None
    assert decode_attention_kernel(torch.float32, 60, 14, 2) is None
    assert decode_attention_kernel(torch.float32, 64, 14, 3) is None
