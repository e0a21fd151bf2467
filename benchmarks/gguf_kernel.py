"""Benchmark of ragloom's GGUF linear kernel against torch's float32 GEMM on the same weights.

Each layer shape of Qwen2.5-0.5B (the attention's fused Q/K/V and output projections, the MLP's
fused gate/up and down projections, the LM head), with random int8 codes and per-group scales of
the model's own types, runs ``M`` rows of activations through

- ``kernel``: :class:`~ragloom.runtime.layers.gguf_linear.GGUFLinear`, the codes in panels of 8
  rows, converted in registers below 96 rows and a block at a time from 96, each group's scale
  taken out of its sum (what the engine runs), and
- ``torch``: ``torch.nn.functional.linear`` on the float32 weights those codes decode to (the
  baseline: what an engine holding float32 weights runs, at 4 bytes a weight), and
- ``q8``: the same layer with int8 activations (``quantization="gguf-q8"``, llama.cpp's
  arithmetic: the codes four inputs at a time, integer dot products), checked against
  ``reference_q8_linear``; ``q8_vs_kernel`` is its speed over the float32 kernel's.

Where the codes lie in 0..15 (Q4_K: the 0.5B's ``down_q4k``, and without ``--quick`` the
1.5B model's Q4_K gate/up and down projections, ``*_1.5b``) the layers hold them two to a byte,
and the same codes held one to a byte (``nibbles=False``) run beside them in both arithmetics:
``nibbles_vs_int8`` and ``q8_nibbles_vs_int8`` are the speed-ups, after a check that the
outputs are equal bit for bit.

Rows: 1 (a decode), 8 (eight decodes batched), 54 and 132 (prefill chunks of the engine
benchmark's batch run), 512 (a full prefill chunk). Copies of each layer, 64 MB of codes in all,
are cycled so that a decode reads its weights from memory, as in a model, not from the cache
(the LM head: one copy, 136 MB). The figures are
GFLOP/s (best of a few repeats; the two take turns) and ``kernel_vs_torch`` per shape and row
count; the last line is one JSON object with ``kernel_vs_torch_min``/``_max`` and
``kernel_vs_torch_rows_1_mean``
(the one-row ratio over all shapes, where the kernel reads 1.1-1.25 bytes a weight instead of 4),
and ``q8_vs_kernel`` with its ``_min``/``_max``.

Usage: ``python benchmarks/gguf_kernel.py [--quick] [--threads N]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from collections.abc import Callable

import torch

from ragloom.runtime.layers.gguf_linear import GGUFLinear, reference_q8_linear

# (name, outputs, inputs, group, with offset, codes from, to): Q5_0 (32, no offset, -16..15),
# Q8_0 (32, no offset, -127..127), Q4_K (32, offset, 0..15), Q6_K (16, no offset, -32..31), as
# in the model file
SHAPES = {
    "qkv": (1152, 896, 32, False, -16, 15),
    "o": (896, 896, 32, False, -16, 15),
    "gate_up": (9728, 896, 32, False, -16, 15),
    "down_q6k": (896, 4864, 16, False, -32, 31),
    "down_q4k": (896, 4864, 32, True, 0, 15),
    "lm_head": (151936, 896, 32, False, -127, 127),
    # Qwen2.5-Coder-1.5B's Q4_K layers (its codes two to a byte)
    "gate_up_1.5b": (17920, 1536, 32, True, 0, 15),
    "down_1.5b": (1536, 8960, 32, True, 0, 15),
}
Shape = tuple[int, int, int, bool, int, int]


CYCLED_CODES = 64 << 20  # bytes of codes cycled through per shape


def layers(shape: Shape, copies: int, int8: bool, nibbles: bool | None = None) -> list[GGUFLinear]:
    outputs, inputs, group, offset, low, high = shape
    gen = torch.Generator().manual_seed(outputs + inputs)
    out = []
    for _ in range(copies):
        q = torch.randint(low, high + 1, (outputs, inputs), dtype=torch.int8, generator=gen)
        scale = torch.rand(outputs, inputs // group, generator=gen) / 16
        extra = torch.rand(outputs, inputs // group, generator=gen) / 16 if offset else None
        layer = GGUFLinear(q, scale, extra, use_kernel=True, int8_activations=int8, nibbles=nibbles)
        out.append(layer)
    return out


def best_time(fn: Callable[[int], object], copies: int, repeats: int) -> float:
    """Best time of one call, over ``repeats`` passes through the copies."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(copies):
            fn(i)
        best = min(best, (time.perf_counter() - start) / copies)
    return best


def _call(copies_of: list[GGUFLinear], x: torch.Tensor, i: int) -> object:
    return copies_of[i](x)


def bench_nibbles(
    name: str, shape: Shape, rows_list: list[int], copies: int, repeats: int
) -> dict[str, float]:
    """``{f"{name}_rows_{rows}": nibbles_vs_int8}`` (and ``q8_...``) for a shape whose codes
    fit in four bits: the same codes two to a byte against one to a byte, printing the rates."""
    out = {}
    for int8 in (False, True):
        packed = layers(shape, copies, int8=int8)
        plain = layers(shape, copies, int8=int8, nibbles=False)
        assert packed[0].nibbles and not plain[0].nibbles
        for rows in rows_list:
            x = torch.randn(rows, shape[1])
            assert torch.equal(packed[0](x), plain[0](x))  # (the same numbers, bit for bit)
            runs = {"packed": packed, "plain": plain}
            best = dict.fromkeys(runs, float("inf"))
            for _ in range(2):  # (taking turns)
                for kind, copies_of in runs.items():
                    call = functools.partial(_call, copies_of, x)
                    best[kind] = min(best[kind], best_time(call, copies, repeats))
            t_packed, t_plain = best["packed"], best["plain"]
            key = f"{'q8_' if int8 else ''}{name}_rows_{rows}"
            out[key] = t_plain / t_packed
            gflop = 2 * rows * shape[0] * shape[1] / 1e9
            print(
                f"{name:12s} rows {rows:4d} {'q8' if int8 else 'float32'}: two to a byte "
                f"{gflop / t_packed:6.1f} GFLOP/s, one {gflop / t_plain:6.1f}, "
                f"nibbles_vs_int8 {t_plain / t_packed:5.2f}",
                flush=True,
            )
    return out


def bench_shape(
    name: str, shape: Shape, rows_list: list[int], copies: int, repeats: int
) -> tuple[dict[str, float], dict[str, float]]:
    """``{f"{name}_rows_{rows}": kernel_vs_torch}`` and the same for ``q8_vs_kernel``, for one
    layer shape, printing the rates."""
    outputs, inputs = shape[:2]
    kernels = layers(shape, copies, int8=False)
    weights = [k.dequantize() for k in kernels]
    q8 = layers(shape, copies, int8=True)
    ratios, q8_ratios = {}, {}
    for rows in rows_list:
        x = torch.randn(rows, inputs)
        want = torch.nn.functional.linear(x, weights[0])
        got = kernels[0](x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
        # (the reference's float64 sums on 2,048 outputs: on the head's 151,936 they take GBs)
        q, scale, offset = (None if t is None else t[:2048] for t in q8[0].codes())
        assert q is not None and scale is not None
        want = reference_q8_linear(x, q, scale, offset)
        got = q8[0](x)[:, :2048]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())

        def kernel(i: int, x: torch.Tensor = x) -> object:
            return kernels[i](x)

        def dense(i: int, x: torch.Tensor = x) -> object:
            return torch.nn.functional.linear(x, weights[i])

        def int8(i: int, x: torch.Tensor = x) -> object:
            return q8[i](x)

        t_kernel = t_torch = t_q8 = float("inf")
        for _ in range(2):  # (taking turns)
            t_kernel = min(t_kernel, best_time(kernel, copies, repeats))
            t_torch = min(t_torch, best_time(dense, copies, repeats))
            t_q8 = min(t_q8, best_time(int8, copies, repeats))
        gflop = 2 * rows * outputs * inputs / 1e9
        ratios[f"{name}_rows_{rows}"] = t_torch / t_kernel
        q8_ratios[f"{name}_rows_{rows}"] = t_kernel / t_q8
        print(
            f"{name:9s} rows {rows:4d}: kernel {gflop / t_kernel:6.1f} GFLOP/s, "
            f"torch {gflop / t_torch:6.1f}, kernel_vs_torch {t_torch / t_kernel:5.2f}; "
            f"q8 {gflop / t_q8:6.1f}, q8_vs_kernel {t_kernel / t_q8:5.2f}",
            flush=True,
        )
    return ratios, q8_ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes, rows and repeats")
    parser.add_argument("--threads", type=int, default=0, help="0: every core")
    args = parser.parse_args()
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    rows_list = [1, 8, 132] if args.quick else [1, 8, 54, 132, 512]
    names = ["gate_up", "down_q6k", "down_q4k"] if args.quick else list(SHAPES)
    repeats = 3 if args.quick else 5
    ratios: dict[str, float] = {}
    q8_ratios: dict[str, float] = {}
    nibbles: dict[str, float] = {}
    for name in names:
        outputs, inputs = SHAPES[name][:2]
        copies = -(-CYCLED_CODES // (outputs * inputs))  # (twice this CPU's L3 cache at least)
        if not name.endswith("_1.5b"):  # (the 1.5B's shapes: two to a byte against one only)
            shape_ratios, shape_q8 = bench_shape(name, SHAPES[name], rows_list, copies, repeats)
            ratios |= shape_ratios
            q8_ratios |= shape_q8
        if SHAPES[name][4] >= 0 and SHAPES[name][5] <= 15:
            nibbles |= bench_nibbles(name, SHAPES[name], rows_list, copies, repeats)
    one_row = [v for k, v in ratios.items() if k.endswith("_rows_1")]
    report = {
        "threads": threads,
        "quick": args.quick,
        "kernel_vs_torch": {k: round(v, 3) for k, v in ratios.items()},
        "kernel_vs_torch_min": round(min(ratios.values()), 3),
        "kernel_vs_torch_max": round(max(ratios.values()), 3),
        "kernel_vs_torch_rows_1_mean": round(sum(one_row) / len(one_row), 3),
        "q8_vs_kernel": {k: round(v, 3) for k, v in q8_ratios.items()},
        "q8_vs_kernel_min": round(min(q8_ratios.values()), 3),
        "q8_vs_kernel_max": round(max(q8_ratios.values()), 3),
        "nibbles_vs_int8": {k: round(v, 3) for k, v in nibbles.items() if not k.startswith("q8_")},
        "q8_nibbles_vs_int8": {
            k[3:]: round(v, 3) for k, v in nibbles.items() if k.startswith("q8_")
        },
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
