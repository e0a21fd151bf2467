"""GGUF-native linear layers: the AVX2 kernel against the plain-torch reference, the unpacking
of every supported GGUF type against gguf's own decoder, and the errors on bad input.

The engine-level check (greedy tokens equal the float32 reference) is in
``test_engine_reference.py``.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from ragloom.errors import ConfigError
from ragloom.runtime.layers.gguf_linear import (
    GGUFEmbedding,
    GGUFLinear,
    KernelUnavailableError,
    gguf_kernel,
    nibbles_fit,
    pack_nibble_quads,
    pack_nibbles,
    pack_panels,
    pack_quads,
    q8_shift,
    reference_dequantize,
    reference_linear,
    reference_q8_linear,
    release_pages,
    unpack_nibble_quads,
    unpack_nibbles,
    unpack_panels,
    unpack_quads,
    use_gguf_weights,
)
from ragloom.runtime.layers.kernels import cpu_kernels
from ragloom.runtime.models.gguf_quant import unpack

gguf = pytest.importorskip("gguf")


def grouped(rows: int, cols: int, group: int, with_offset: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(-128, 128, (rows, cols), dtype=torch.int8, generator=gen)
    scale = torch.rand(rows, cols // group, generator=gen) - 0.5
    offset = torch.rand(rows, cols // group, generator=gen) if with_offset else None
    return q, scale, offset


def test_docstring_examples_run():
    # (this module is not reached from a package's public names, so tests/test_docstrings.py
    # does not run its examples)
    import doctest

    from ragloom.runtime.layers import gguf_linear

    result = doctest.testmod(gguf_linear, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 10 and result.failed == 0


def test_kernel_builds_here():
    # CI runs on AVX2 machines with g++: the fast path must not silently fall back there
    assert hasattr(gguf_kernel(), "grouped_linear")


@pytest.mark.parametrize("group", [8, 16, 32])
@pytest.mark.parametrize("with_offset", [False, True])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 17, 31, 95, 96, 130, 301])
# 600: several threads' blocks of panels; 75: the last panel of 8 rows padded
@pytest.mark.parametrize("outputs", [75, 600])
@pytest.mark.parametrize("inputs", [256, 1280])
def test_kernel_matches_reference(group, with_offset, rows, outputs, inputs):
    # up to 8 rows in one pass (1-8 rows at once: their own numbers of panels), 9-95 rows 6 at
    # a time and the 1-5 left over, from 96 rows on codes converted to float32 a block at a time,
    # 4 rows at a time and the 1-3 left over
    # (1,280 inputs: three slices of at most 512)
    q, scale, offset = grouped(outputs, inputs, group, with_offset)
    bias = torch.randn(outputs)
    x = torch.randn(rows, inputs)
    layer = GGUFLinear(q, scale, offset, bias, use_kernel=True)
    want = reference_linear(x, q, scale, offset) + bias
    got = layer(x)
    assert got.shape == (rows, outputs)
    # same weights, different summation order: float32 rounding only
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4 * want.abs().max().item())


@pytest.mark.parametrize("with_offset", [False, True])
def test_kernel_decodes_the_exact_reference_weights(with_offset):
    q, scale, offset = grouped(33, 160, 32, with_offset, seed=1)
    layer = GGUFLinear(q, scale, offset, use_kernel=True)
    assert layer.packed and layer.q.shape == (5, 160, 8)  # (33 rows: 5 panels, padded)
    assert torch.equal(layer.dequantize(), reference_dequantize(q, scale, offset))
    rows = layer.codes()
    assert torch.equal(rows[0], q) and torch.equal(rows[1], scale)
    assert (rows[2] is None) == (offset is None)


def test_a_rows_result_does_not_depend_on_its_step():
    # every output is one FMA chain over its inputs in order, whatever the rows beside it (8
    # at once, 6 at once, 1-5 left over) and the threads: batches equal single runs exactly
    q, scale, offset = grouped(200, 1280, 16, True, seed=2)
    layer = GGUFLinear(q, scale, offset, torch.randn(200), use_kernel=True)
    x = torch.randn(256, 1280)
    alone = torch.cat([layer(x[i : i + 1]) for i in (0, 5, 7, 100, 255)])
    for rows in (8, 13, 101, 256):  # (101 and 256: weights decoded to float32 first)
        together = layer(x[:rows])
        for i, row in enumerate((0, 5, 7, 100, 255)):
            if row < rows:
                assert torch.equal(together[row], alone[i]), (rows, row)


@pytest.mark.parametrize("use_kernel", [True, False])
def test_weights_given_in_panels(use_kernel):
    # (the converted-weights cache holds panels): either layout in, the same layer out
    q, scale, offset = grouped(21, 64, 16, True, seed=3)
    panels = pack_panels(q), pack_panels(scale), pack_panels(offset)
    layer = GGUFLinear(*panels, use_kernel=use_kernel, out_features=21)
    assert layer.packed == use_kernel and layer.out_features == 21
    assert all(torch.equal(a, b) for a, b in zip(layer.codes(), (q, scale, offset), strict=True))
    x = torch.randn(3, 64)
    want = GGUFLinear(q, scale, offset, use_kernel=use_kernel)(x)
    assert torch.equal(layer(x), want)
    embedding = GGUFEmbedding(*panels, num_embeddings=21)
    ids = torch.tensor([[20, 3], [0, 8]])
    assert torch.equal(embedding(ids), GGUFEmbedding(q, scale, offset)(ids))
    with pytest.raises(ConfigError, match="3 panels need their number of rows, 17-24; got None"):
        GGUFLinear(*panels)
    with pytest.raises(ConfigError, match="got 30"):
        GGUFEmbedding(*panels, num_embeddings=30)


def test_pack_panels_round_trips():
    t = torch.randn(21, 5)
    packed = pack_panels(t)
    assert packed.shape == (3, 5, 8) and torch.equal(packed[2, :, 5:], torch.zeros(5, 3))
    assert torch.equal(unpack_panels(packed, 21), t)
    ids = torch.tensor([20, 0, 8, 8])
    assert torch.equal(unpack_panels(packed, ids), t[ids])


def test_kernel_keeps_leading_dimensions_and_uses_threads():
    q, scale, offset = grouped(64, 128, 32, True)
    layer = GGUFLinear(q, scale, offset, use_kernel=True)
    x = torch.randn(2, 3, 128)
    torch.testing.assert_close(
        layer(x), reference_linear(x, q, scale, offset), rtol=1e-5, atol=1e-3
    )


# --- int8 activations (quantization="gguf-q8") ------------------------------------------


# code ranges: as gguf's types store them (Q8_0 signed and wide; Q5_0, Q6_K and Q4_K narrow
# enough to be shifted to unsigned), and one that starts above zero
Q8_CODES = {
    "q8_0": (-128, 127, -1),
    "q5_0": (-16, 15, 16),
    "q6_k": (-32, 31, 32),
    "q4_k": (0, 15, 0),
}


@pytest.mark.parametrize("group", [16, 32])
@pytest.mark.parametrize("with_offset", [False, True])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8, 9, 32, 70])
@pytest.mark.parametrize("codes", list(Q8_CODES))
def test_q8_kernel_matches_its_reference(group, with_offset, rows, codes):
    lo, hi, shift = Q8_CODES[codes]
    q, scale, offset = grouped(44, 256, group, with_offset)  # (44: a padded last panel)
    q = torch.randint(
        lo, hi + 1, q.shape, dtype=torch.int8, generator=torch.Generator().manual_seed(1)
    )
    bias = torch.randn(44)
    x = torch.randn(rows, 256)
    x[0, 32:64] = 0.0  # an all-zero block: scale 0, codes 0
    layer = GGUFLinear(q, scale, offset, bias, use_kernel=True, int8_activations=True)
    assert layer.shift == shift
    assert torch.equal(layer.codes()[0], q)  # (the quads give back the codes)
    want = reference_q8_linear(x, q, scale, offset) + bias
    got = layer(x)
    # the integer dot products are exact: only the float32 sums of the scaled groups differ
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    # and int8 activations move the result by about a percent of its size, no more
    exact = reference_linear(x, q, scale, offset) + bias
    assert (got - exact).abs().max() < 0.02 * exact.abs().max()
    assert not torch.equal(got, exact)  # (it is another arithmetic)
    # a row's numbers do not depend on the rows beside it
    assert torch.equal(layer(x[-1:]), got[-1:])


def test_q8_shift_and_quads_round_trip():
    assert q8_shift(torch.tensor([[3, 60]], dtype=torch.int8)) == 0
    assert q8_shift(torch.tensor([[-1, 62]], dtype=torch.int8)) == 1
    assert q8_shift(torch.tensor([[-1, 63]], dtype=torch.int8)) == -1  # (64 + 1 values)
    q = torch.randint(-32, 32, (13, 64), dtype=torch.int8)
    quads = pack_quads(q, 32)
    assert quads.shape == (2, 64, 8) and int(quads.min()) >= 0
    assert torch.equal(unpack_quads(quads, 13, 32), q)
    assert torch.equal(pack_quads(pack_panels(q), 32), quads)  # (from panels too)
    # output 1's inputs 4..7 are the second quad's second four bytes
    assert torch.equal(quads[0].reshape(16, 8, 4)[1, 1], q[1, 4:8] + 32)


def test_nibbles_round_trip():
    q = torch.randint(0, 16, (13, 64), dtype=torch.int8)
    panels = pack_panels(q)
    nibbles = pack_nibbles(panels)
    assert nibbles.dtype == torch.uint8 and nibbles.shape == (2, 32, 8)
    assert torch.equal(unpack_nibbles(nibbles), panels)
    # output 2's inputs 6 and 7 share a byte: 6 in the low four bits, 7 in the high four
    assert int(nibbles[0, 3, 2]) == int(q[2, 6]) | int(q[2, 7]) << 4
    quads = pack_quads(q, 0)
    packed = pack_nibble_quads(quads)
    assert packed.dtype == torch.uint8 and packed.shape == (2, 32, 8)
    assert torch.equal(unpack_nibble_quads(packed), quads)
    # the first 32 bytes: inputs 0-3 (low bits) and 4-7 (high bits) of the panel's 8 outputs
    assert int(packed[0].flatten()[4 * 1 + 2]) == int(q[1, 2]) | int(q[1, 6]) << 4
    assert nibbles_fit(q) and not nibbles_fit(q - 1) and not nibbles_fit(q + 1)


@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.parametrize("group", [16, 32])
@pytest.mark.parametrize("with_offset", [False, True])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 40, 96, 130])
def test_nibbles_give_the_int8_codes_numbers_bit_for_bit(int8, group, with_offset, rows):
    # codes of 0..15 (Q4_K, Q4_1), and for int8 activations -8..7 too (shifted by 8); 1,280
    # inputs: three slices of the >= 96-row path; 75 outputs: a padded panel
    gen = torch.Generator().manual_seed(rows)
    _, scale, offset = grouped(75, 1280, group, with_offset)
    x = torch.randn(rows, 1280, generator=gen)
    for lo in (0, -8) if int8 else (0,):
        q = torch.randint(lo, lo + 16, (75, 1280), dtype=torch.int8, generator=gen)
        kwargs = {"use_kernel": True, "int8_activations": int8}
        packed = GGUFLinear(q, scale, offset, **kwargs)
        plain = GGUFLinear(q, scale, offset, nibbles=False, **kwargs)
        assert packed.nibbles and packed.q.dtype == torch.uint8 and not plain.nibbles
        assert packed.q.numel() * 2 == plain.q.numel()
        assert torch.equal(packed(x), plain(x))
        assert torch.equal(packed.codes()[0], q)
        assert torch.equal(packed.dequantize(), reference_dequantize(q, scale, offset))
    # codes spanning 17 values stay int8; the float32 path never shifts, so -8..7 stays int8
    wide = torch.randint(0, 17, (75, 1280), dtype=torch.int8, generator=gen)
    assert not GGUFLinear(wide, scale, offset, **kwargs).nibbles
    signed = GGUFLinear(wide.clamp(max=15) - 8, scale, offset, use_kernel=True)
    assert not signed.nibbles and signed.q.dtype == torch.int8


def _rss_file_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile"))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux's /proc only")
def test_release_pages_drops_a_mapped_files_pages_and_keeps_the_data(tmp_path):
    from safetensors.torch import load_file, save_file

    codes = torch.randint(0, 16, (4096, 1024), dtype=torch.int8)  # 4 MB
    save_file({"q": codes}, tmp_path / "codes.safetensors")
    mapped = load_file(tmp_path / "codes.safetensors")["q"]
    assert torch.equal(mapped, codes)  # (every page read: resident)
    before = _rss_file_kb()
    if not release_pages(mapped):
        pytest.skip("this kernel does not take MADV_PAGEOUT (Linux < 5.4)")
    assert _rss_file_kb() < before - 2048  # at least half of the 4 MB dropped
    assert torch.equal(mapped, codes)  # and read again, unchanged
    anonymous = codes.clone()
    release_pages(anonymous)  # (the process's own memory: swapped or left, never lost)
    assert torch.equal(anonymous, codes)
    assert not release_pages(torch.zeros(8, dtype=torch.int8))  # (less than a page)


def test_the_kernel_refuses_signed_nibbles():
    q, scale, _ = grouped(8, 64, 32, False)
    nibbles = pack_nibbles(pack_panels(q.clamp(0, 15)))
    with pytest.raises(RuntimeError, match="unsigned"):
        gguf_kernel().q8_linear(torch.randn(1, 64), nibbles, -1, pack_panels(scale), torch.empty(0))
    with pytest.raises(RuntimeError, match="int8 codes"):
        gguf_kernel().grouped_dequantize(nibbles, pack_panels(scale), torch.empty(0))


def test_q8_reference_layer_and_long_inputs():
    q, scale, offset = grouped(24, 128, 32, True)
    x = torch.randn(3, 128)
    reference = GGUFLinear(q, scale, offset, use_kernel=False, int8_activations=True)
    assert torch.equal(reference(x), reference_q8_linear(x, q, scale, offset))
    # a row's result does not depend on the other rows of its step (40 rows: a prefill)
    layer = GGUFLinear(q, scale, offset, use_kernel=True, int8_activations=True)
    long = torch.randn(40, 128)
    assert torch.equal(layer(long)[7:8], layer(long[7:8]))
    want = reference_q8_linear(long, q, scale, offset)
    torch.testing.assert_close(layer(long), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_q8_needs_groups_of_16_or_32():
    q, scale, _ = grouped(8, 64, 8, False)
    with pytest.raises(ConfigError, match="groups of 16 or 32 inputs.*groups of 8"):
        GGUFLinear(q, scale, int8_activations=True)
    with pytest.raises(ConfigError, match="groups of 16 or 32"):
        reference_q8_linear(torch.randn(1, 64), q, scale, None)
    # use_gguf_weights leaves such a layer on float32 activations instead
    model = torch.nn.Sequential(torch.nn.Linear(64, 8, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(reference_dequantize(q, scale, None))
    use_gguf_weights(model, {"0": (q, scale, None)}, int8_activations=True)
    assert not model[0].int8_activations


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda q, s: GGUFLinear(q.float(), s), "int8"),
        (lambda q, s: GGUFLinear(q, s[:-1]), "scale"),
        (lambda q, s: GGUFLinear(q[:, :63].contiguous(), s), "group size"),
        (lambda q, s: GGUFLinear(q[:, :36], s[:, :1]), "multiple of 8"),
        (lambda q, s: GGUFLinear(q, s, s[:, :1]), "offset"),
        (lambda q, s: GGUFLinear(q, s, None, torch.zeros(3)), "bias"),
    ],
)
def test_bad_shapes_name_the_problem(build, message):
    q, scale, _ = grouped(8, 64, 32, False)
    with pytest.raises(ConfigError, match=message):
        build(q, scale)


def test_missing_compiler_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("RAGLOOM_CACHE_DIR", str(tmp_path / "cache"))
    cpu_kernels.cache_clear()
    try:
        with pytest.raises(KernelUnavailableError, match="C\\+\\+ compiler"):
            gguf_kernel()
        q, scale, _ = grouped(8, 64, 32, False)
        with pytest.raises(KernelUnavailableError):
            GGUFLinear(q, scale, use_kernel=True)
        fallback = GGUFLinear(q, scale)  # None: the torch reference where there is no kernel
        assert not fallback.uses_kernel
        x = torch.randn(2, 64)
        assert torch.equal(fallback(x), reference_linear(x, q, scale, None))
    finally:
        cpu_kernels.cache_clear()


def test_failing_build_reports_the_compiler_output(monkeypatch, tmp_path):
    fake = tmp_path / "cxx"
    fake.write_text("#!/bin/sh\necho 'fatal: no room on device' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    monkeypatch.setenv("RAGLOOM_CACHE_DIR", str(tmp_path / "cache"))
    cpu_kernels.cache_clear()
    try:
        with pytest.raises(KernelUnavailableError, match="no room on device"):
            gguf_kernel()
        assert not list((tmp_path / "cache" / "kernels").iterdir())  # no half-written library
    finally:
        cpu_kernels.cache_clear()


def test_damaged_cached_library_is_reported_and_dropped(monkeypatch, tmp_path):
    monkeypatch.setenv("RAGLOOM_CACHE_DIR", str(tmp_path / "cache"))
    cpu_kernels.cache_clear()
    monkeypatch.setattr(
        "ragloom.runtime.layers.kernels._build",
        lambda c, lib: lib.write_bytes(b"not an ELF file"),
    )
    try:
        with pytest.raises(KernelUnavailableError, match="cannot load ragloom's CPU kernels"):
            gguf_kernel()
        assert not list((tmp_path / "cache" / "kernels").iterdir())  # rebuilt on the next call
    finally:
        cpu_kernels.cache_clear()


def test_kernels_built_says_whether_this_machine_has_a_build(monkeypatch, tmp_path):
    from ragloom.runtime.layers.kernels import kernels_built

    gguf_kernel()  # (built, or loaded from the cache)
    assert kernels_built()
    monkeypatch.setenv("RAGLOOM_CACHE_DIR", str(tmp_path / "cache"))  # an empty cache
    assert not kernels_built()
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))  # cannot be built at all
    assert not kernels_built()


def test_new_builds_prune_the_least_recently_used(monkeypatch, tmp_path):
    kernels = tmp_path / "cache" / "kernels"
    kernels.mkdir(parents=True)
    # (the last two: builds of earlier versions, which held only the GGUF kernel)
    old = [kernels / f"ragloom_kernels-{i:016x}.so" for i in range(3)]
    old += [kernels / f"gguf_matmul-{i:016x}.so" for i in range(3, 5)]
    for age, path in enumerate(old):
        path.write_bytes(b"x")
        os.utime(path, (1e9 - age * 1000, 1e9 - age * 1000))  # old[0] most recently used
    other = kernels / "something-else.so"
    other.write_bytes(b"x")
    monkeypatch.setenv("RAGLOOM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(
        "ragloom.runtime.layers.kernels._build", lambda c, lib: lib.write_bytes(b"so")
    )
    monkeypatch.setattr(torch.ops, "load_library", lambda path: None)
    cpu_kernels.cache_clear()
    try:
        gguf_kernel()
        new = set(kernels.iterdir()) - {*old, other}
        assert len(new) == 1
        assert set(kernels.iterdir()) == {*new, old[0], old[1], other}
        # loading a cached build marks it as recently used (so the next build keeps it)
        (built,) = new
        os.utime(built, (1e9 - 10_000, 1e9 - 10_000))
        cpu_kernels.cache_clear()
        gguf_kernel()
        assert built.stat().st_mtime > 1e9
    finally:
        cpu_kernels.cache_clear()


# --- unpacking GGUF blocks -------------------------------------------------------------------

_FP16_FIELDS = {  # byte ranges of each type's float16 fields (scale, minimum)
    "Q4_0": [(0, 2)],
    "Q5_0": [(0, 2)],
    "Q8_0": [(0, 2)],
    "Q4_1": [(0, 2), (2, 4)],
    "Q5_1": [(0, 2), (2, 4)],
    "Q4_K": [(0, 2), (2, 4)],
    "Q5_K": [(0, 2), (2, 4)],
    "Q6_K": [(208, 210)],
}


def random_blocks(name: str, rows: int, cols: int, seed: int) -> np.ndarray:
    """Random bytes are valid blocks of every type once the float16 fields are finite."""
    qtype = gguf.GGMLQuantizationType[name]
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (rows * cols // block, size), dtype=np.uint8)
    for start, end in _FP16_FIELDS[name]:
        values = (rng.standard_normal(len(data)) * 0.02).astype(np.float16)
        data[:, start:end] = values.view(np.uint8).reshape(-1, 2)
    return data.reshape(rows, -1)


@pytest.mark.parametrize("name", sorted(_FP16_FIELDS))
def test_unpack_reproduces_ggufs_own_decoding_bit_for_bit(name):
    qtype = gguf.GGMLQuantizationType[name]
    rows, cols = 6, 512
    data = random_blocks(name, rows, cols, seed=len(name))
    q, scale, offset = unpack(data, qtype, (rows, cols))
    assert q.dtype == np.int8 and q.shape == (rows, cols)
    assert scale.shape == (rows, cols // (16 if name == "Q6_K" else 32))
    assert (offset is not None) == (name in ("Q4_1", "Q5_1", "Q4_K", "Q5_K"))
    got = reference_dequantize(
        torch.from_numpy(q),
        torch.from_numpy(scale),
        None if offset is None else torch.from_numpy(offset),
    )
    want = gguf.dequantize(data, qtype).reshape(rows, cols)
    assert np.array_equal(got.numpy(), want)


def test_unpack_leaves_other_types_out():
    data = np.zeros((2, 64), dtype=np.float16).view(np.uint8)
    assert unpack(data, gguf.GGMLQuantizationType.F16, (2, 64)) is None


@pytest.mark.model
def test_a_damaged_cache_file_is_rebuilt(tmp_path):
    from ragloom.runtime.model_files import resolve_model
    from ragloom.runtime.models.gguf_loader import load_gguf
    from ragloom.runtime.models.gguf_quant import load_gguf_linears

    loaded = load_gguf(resolve_model("smollm2-135m-instruct"))
    want = loaded.gguf_linears()
    (tmp_path / "gguf_linears.v3.safetensors").write_bytes(b"\x00" * 100)  # truncated junk
    (tmp_path / "gguf_linears.v2.safetensors").write_bytes(b"old")  # an older version's cache
    got = load_gguf_linears(loaded.path, tmp_path, loaded.config, permute_qk=True)
    assert sorted(got) == sorted(want)
    assert not (tmp_path / "gguf_linears.v2.safetensors").exists()  # superseded, removed
    name = "model.layers.0.self_attn.qkv_proj"  # llama's Q/K rows un-permuted like the floats
    assert all(torch.equal(a, b) for a, b in zip(got[name], want[name], strict=True))


# --- swapping a model's layers ------------------------------------------------------------


def test_use_gguf_weights_swaps_only_after_checking_the_values():
    q, scale, offset = grouped(16, 64, 32, True)
    weight = reference_dequantize(q, scale, offset)
    model = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU())
    with torch.no_grad():
        model[0].weight.copy_(weight)
    x = torch.randn(3, 64)
    want = model(x)
    assert use_gguf_weights(model, {"0": (q, scale, offset)}) == ["0"]
    assert isinstance(model[0], GGUFLinear)
    torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-4)

    other = torch.nn.Sequential(torch.nn.Linear(64, 16))
    with pytest.raises(ConfigError, match="other values"):
        use_gguf_weights(other, {"0": (q, scale, offset)})
    assert type(other[0]) is torch.nn.Linear  # left as it was
    with pytest.raises(ConfigError, match="not a float32 nn.Linear"):
        use_gguf_weights(other, {"missing": (q, scale, offset)})
    # check=False (layers checked before) never reads the float weight: here it has no data
    unread = torch.nn.Sequential(torch.nn.Linear(64, 16, bias=False, device="meta"))
    assert use_gguf_weights(unread, {"0": (q, scale, offset)}, check=False) == ["0"]
    torch.testing.assert_close(unread(x), x @ weight.T, rtol=1e-5, atol=1e-4)


class Tiny(torch.nn.Module):
    """An embedding, a norm and a head, tied or not, like the engine's models."""

    def __init__(self, tied: bool) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(16, 64)
        self.norm = torch.nn.LayerNorm(64)
        self.head = torch.nn.Linear(64, 16, bias=False)
        if tied:
            self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.embed(ids)))


@pytest.mark.parametrize("nibbles", [False, True])
@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.parametrize("tied", [True, False])
def test_embeddings_run_on_codes_and_no_float_tensor_keeps_the_loaded_storage(tied, int8, nibbles):
    q, scale, offset = grouped(16, 64, 32, True)
    if nibbles:  # (codes of 0..15: the head holds them two to a byte)
        q = q.clamp(0, 15)
    q2, scale2, _ = grouped(16, 64, 16, False, seed=1)
    model = Tiny(tied)
    with torch.no_grad():
        model.head.weight.copy_(reference_dequantize(q, scale, offset))
        if not tied:
            model.embed.weight.copy_(reference_dequantize(q2, scale2, None))
    loaded = {name: p.data_ptr() for name, p in model.named_parameters()}
    ids = torch.tensor([[3, 0, 15], [7, 7, 1]])
    want_rows, want = model.embed(ids), model(ids)
    layers = {"head": (q, scale, offset)}
    if not tied:
        layers["embed"] = (q2, scale2, None)
    assert use_gguf_weights(model, layers, int8_activations=int8) == ["head", "embed"]
    assert isinstance(model.embed, GGUFEmbedding)
    assert torch.equal(model.embed(ids), want_rows)  # the same rows, bit for bit
    if int8:  # (another arithmetic: about a percent)
        assert model.head.int8_activations
        assert (model(ids) - want).abs().max() < 0.02 * want.abs().max()
    else:
        torch.testing.assert_close(model(ids), want, rtol=1e-5, atol=1e-4)
    assert model.head.nibbles == nibbles
    if tied and not int8 and not nibbles:  # one copy of the codes, shared
        assert model.embed.q is model.head.q
    assert model.norm.weight.data_ptr() != loaded["norm.weight"]  # copied off the loaded file
    assert not isinstance(model.embed, torch.nn.Embedding)


def test_an_embedding_whose_codes_differ_is_refused():
    q, scale, _ = grouped(16, 64, 32, False)
    model = Tiny(tied=False)
    with pytest.raises(ConfigError, match="embed: the GGUF weights decode to other values"):
        use_gguf_weights(model, {"embed": (q, scale, None)})
    assert type(model.embed) is torch.nn.Embedding


# --- the engine's choice ------------------------------------------------------------------


@pytest.mark.model
def test_auto_runs_gguf_weights_where_the_kernel_builds_and_float32_where_not(monkeypatch):
    from ragloom.runtime.engine.config import EngineConfig
    from ragloom.runtime.engine.llm_engine import LLMEngine
    from ragloom.runtime.engine.model_runner import ModelRunner
    from ragloom.runtime.model_files import resolve_model
    from ragloom.runtime.models.gguf_loader import load_gguf

    path = resolve_model("smollm2-135m-instruct")
    config = EngineConfig(num_threads=1, kv_cache_tokens=256)
    assert LLMEngine(load_gguf(path), config).runner.quantization == "gguf"

    def unavailable():
        raise KernelUnavailableError("the GGUF kernel needs AVX2 and FMA; this CPU has DEFAULT")

    monkeypatch.setattr("ragloom.runtime.engine.llm_engine.gguf_kernel", unavailable)
    runner = LLMEngine(load_gguf(path), config).runner
    assert runner.quantization == "none"
    assert not any(isinstance(m, GGUFLinear) for m in runner.model.modules())
    with pytest.raises(KernelUnavailableError, match="AVX2"):
        LLMEngine(load_gguf(path), EngineConfig(num_threads=1, quantization="gguf"))
    with pytest.raises(ConfigError, match="GGUF weights"):
        ModelRunner(load_gguf(path).model, EngineConfig(num_threads=1, quantization="gguf"))


@pytest.mark.model
def test_gguf_linears_are_checked_against_the_float_weights_once_per_cache(tmp_path, monkeypatch):
    import dataclasses

    from safetensors.torch import load_file, save_file

    from ragloom.runtime.layers import gguf_linear
    from ragloom.runtime.model_files import resolve_model
    from ragloom.runtime.models.gguf_loader import load_gguf, weights_cached
    from ragloom.runtime.models.gguf_quant import linears_cached

    loaded = load_gguf(resolve_model("smollm2-135m-instruct"))
    loaded.gguf_linears()  # (the shared cache is built)
    assert weights_cached(loaded.path)  # (so the engine's next load converts nothing)
    assert not weights_cached(tmp_path / "missing.gguf")
    cache = "gguf_linears.v3.safetensors"
    shutil.copy(loaded.weights_dir / cache, tmp_path / cache)
    copy = dataclasses.replace(loaded, weights_dir=tmp_path)
    checks = []
    check = gguf_linear.check_gguf_weights
    monkeypatch.setattr(gguf_linear, "check_gguf_weights", lambda m, w: checks.append(check(m, w)))
    copy.gguf_linears()
    assert len(checks) == 1 and (tmp_path / "gguf_linears.v3.checked").exists()
    copy.gguf_linears()  # checked before: the float32 weights are not read again
    assert len(checks) == 1

    # codes that decode to other values are refused on the first use of their cache
    state = load_file(tmp_path / cache)
    state["model.layers.3.mlp.down_proj.q"][5, 7] += 1
    save_file(state, tmp_path / cache)
    (tmp_path / "gguf_linears.v3.checked").unlink()
    assert not linears_cached(tmp_path)  # (not checked: a load would check it first)
    with pytest.raises(ConfigError, match="model.layers.3.mlp.down_proj: the GGUF weights decode"):
        copy.gguf_linears()
    assert not (tmp_path / "gguf_linears.v3.checked").exists()
    # a damaged cache is rebuilt from the file and checked anew
    (tmp_path / cache).write_bytes(b"\x00" * 100)
    copy.gguf_linears()
    assert len(checks) == 2 and (tmp_path / "gguf_linears.v3.checked").exists()


@pytest.mark.model
def test_the_first_conversion_writes_the_quantised_weights_from_its_own_reader(
    tmp_path, monkeypatch
):
    from ragloom.runtime.model_files import resolve_model
    from ragloom.runtime.models import gguf_quant
    from ragloom.runtime.models.gguf_loader import load_gguf

    path = resolve_model("smollm2-135m-instruct")
    want = load_gguf(path).gguf_linears()  # (from the shared cache)
    monkeypatch.setenv("RAGLOOM_CACHE_DIR", str(tmp_path))
    opened = []
    monkeypatch.setattr(gguf_quant, "_open_reader", lambda p: opened.append(p))
    loaded = load_gguf(path)  # converts into the empty cache
    assert (loaded.weights_dir / "gguf_linears.v3.safetensors").exists()
    got = loaded.gguf_linears()  # checked now, and not read from the file again
    assert opened == [] and (loaded.weights_dir / "gguf_linears.v3.checked").exists()
    assert sorted(got) == sorted(want)
    for name in got:
        assert all(
            (a is None and b is None) or torch.equal(a, b)
            for a, b in zip(got[name], want[name], strict=True)
        )
