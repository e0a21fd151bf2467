"""Linear layers that keep a GGUF file's own quantised weights, run by a small AVX2 kernel.

Every quantisation type of the models ragloom ships decodes, per group of ``g`` inputs of a
row, as ``w = scale * q - offset`` with small integer codes ``q`` (see
:mod:`ragloom.runtime.models.gguf_quant`). :class:`GGUFLinear` stores ``q`` as int8 with the
float32 ``scale``/``offset`` of each group, 1.1-1.25 bytes per weight instead of float32's 4
(0.6-0.75 where the codes lie in 0..15, Q4_K and Q4_1: two to a byte, :func:`pack_nibbles`).
Its products are the float32 model's, with each group's scale and offset taken out of the
group's sum (``scale * sum(q * x) - offset * sum(x)``); the numbers differ from a product with
the decoded weights only by float32 rounding, as between any two GEMM libraries, and
:meth:`GGUFLinear.dequantize` gives exactly the float32 model's weights.

A decode step streams every weight once, so on a memory-bound CPU it runs up to ~3x faster
this way. Steps of every size run ``gguf_matmul.cpp``, compiled once per machine with the
system's C++ compiler into ``cache_dir("kernels")`` and loaded as a torch op; it takes the codes
in panels of 8 output rows (:func:`pack_panels`), converted in registers for up to 95 rows and a
block at a time into an L2 buffer from 96 (``benchmarks/gguf_kernel.py`` compares it with torch's
float32 GEMM on the same weights). Torch's GEMM on tiles decoded per call, this module's path
for long steps until 2026-11-29, lost to it in the engine (a cold 1,096-token prompt in 512-row
chunks: 9.0/8.8/8.5 s against 8.5/6.4/7.9 s). :func:`reference_linear` is the same product in
plain torch with the decoded weights, which the tests hold the kernel to and which runs where
the kernel cannot (no compiler, no AVX2).

With ``int8_activations`` (``quantization="gguf-q8"``, llama.cpp's arithmetic) each row of
inputs is quantised to int8 per 32 and each group's dot product is an exact integer sum
(:func:`reference_q8_linear`); the kernel's ``q8_linear`` takes the codes in panels four inputs
at a time (:func:`pack_quads`), shifted to unsigned where they span at most 64 values
(:func:`q8_shift`), for AVX2's ``maddubs``: 1.1-1.3x the float32 products' speed for one row,
1.3-1.8x for batched steps and prefill (``benchmarks/gguf_kernel.py``, ``q8_vs_kernel``).

This module does not read GGUF files (the loader does) and does not quantise float weights.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from ragloom.errors import ConfigError
from ragloom.runtime.layers.kernels import KernelUnavailableError, cpu_kernels

__all__ = [
    "GGUFEmbedding",
    "GGUFLinear",
    "KernelUnavailableError",
    "check_gguf_weights",
    "gguf_kernel",
    "nibbles_fit",
    "pack_nibble_quads",
    "pack_nibbles",
    "pack_panels",
    "pack_quads",
    "q8_shift",
    "reference_dequantize",
    "reference_linear",
    "reference_q8_linear",
    "release_pages",
    "unpack_nibble_quads",
    "unpack_nibbles",
    "unpack_panels",
    "unpack_quads",
    "use_gguf_weights",
]

PANEL = 8  # output rows per panel of the kernel's weight layout
Grouped = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]  # codes, scale, offset


def reference_dequantize(
    q: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None
) -> torch.Tensor:
    """``scale * q - offset`` per group, in float32, in plain torch.

    >>> q = torch.tensor([[1, -2, 3, 4]], dtype=torch.int8)
    >>> reference_dequantize(q, torch.tensor([[0.5, 2.0]]), None)
    tensor([[ 0.5000, -1.0000,  6.0000,  8.0000]])
    """
    rows, cols = q.shape
    groups = scale.shape[1]
    w = q.view(rows, groups, cols // groups).float() * scale[:, :, None]
    if offset is not None:
        w = w - offset[:, :, None]
    return w.view(rows, cols)


def reference_q8_linear(
    x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None
) -> torch.Tensor:
    """``x @ W.T`` with ``x`` quantised to int8 per block of 32 inputs, as the kernel's
    ``q8_linear`` computes it (``quantization="gguf-q8"``): ``d = max|x| / 127``,
    ``xq = round(x / d)``; each group's dot product of codes is an exact integer, scaled by the
    weight's and the activation's scales; an offset is taken against the float sum of ``x``.
    Sums in float64 here (the kernel's float32 sums differ only in rounding).
    """
    rows, cols = x.shape
    n, groups = q.shape[0], scale.shape[1]
    g = cols // groups
    if g not in (16, 32) or cols % 32:
        raise ConfigError(f"int8 activations need groups of 16 or 32 inputs, got {g} of {cols}")
    blocks = x.reshape(rows, cols // 32, 32)
    d = blocks.abs().amax(-1) / 127
    inv = torch.where(d > 0, 1 / d, torch.zeros_like(d))
    xq = torch.round(blocks * inv[..., None]).reshape(rows, groups, g).double()
    dots = torch.einsum("mgk,ngk->mng", xq, q.reshape(n, groups, g).double())
    d_groups = d.repeat_interleave(32 // g, dim=1)  # the activation scale of each group
    # (the float32 product of the two scales, as the kernel forms it)
    both = (scale[None, :, :] * d_groups[:, None, :]).double()
    out = (dots * both).sum(-1)
    if offset is not None:
        sums = x.reshape(rows, groups, g).sum(-1)
        out -= (offset[None, :, :].double() * sums[:, None, :].double()).sum(-1)
    return out.float()


def pack_panels(t: torch.Tensor) -> torch.Tensor:
    """``[n, c]`` (codes, scales or offsets, row by row) -> ``[ceil(n / 8), c, 8]``: the kernel's
    layout, each panel of 8 rows interleaved column by column (rows past ``n`` are zeros).

    >>> pack_panels(torch.arange(6).view(3, 2))[0]
    tensor([[0, 2, 4, 0, 0, 0, 0, 0],
            [1, 3, 5, 0, 0, 0, 0, 0]])
    """
    rows, cols = t.shape
    padded = -(-rows // PANEL) * PANEL
    if padded != rows:
        t = torch.cat([t, t.new_zeros(padded - rows, cols)])
    return t.reshape(padded // PANEL, PANEL, cols).transpose(1, 2).contiguous()  # (any strides)


def unpack_panels(t: torch.Tensor, rows: int | torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`pack_panels`: the first ``rows`` rows, or with a tensor of row
    indices those rows, as ``[rows, c]``.

    >>> unpack_panels(pack_panels(torch.arange(6).view(3, 2)), torch.tensor([2, 0]))
    tensor([[4, 5],
            [0, 1]])
    """
    if isinstance(rows, torch.Tensor):
        return t[rows // PANEL, :, rows % PANEL]
    return t.transpose(1, 2).reshape(-1, t.shape[1])[:rows]


def q8_shift(q: torch.Tensor) -> int:
    """The shift that stores a layer's codes unsigned for the int8 kernel, ``q + shift`` within
    0..63 (``-min(q)``, or 0 where no code is negative), or -1 where they span more than 64
    values and keep their sign (Q8_0).

    >>> q8_shift(torch.tensor([[-16, 15]], dtype=torch.int8))
    16
    >>> q8_shift(torch.tensor([[-90, 5]], dtype=torch.int8))
    -1
    """
    return _shift(*_code_range(q))


def _code_range(q: torch.Tensor) -> tuple[int, int]:
    lo, hi = torch.aminmax(q)
    return int(lo), int(hi)


def _shift(lo: int, hi: int) -> int:
    shift = max(0, -lo)
    return shift if hi + shift <= 63 else -1


def pack_quads(q: torch.Tensor, shift: int) -> torch.Tensor:
    """Codes row by row ``[n, c]`` or in panels (:func:`pack_panels`) -> the int8 kernel's
    layout, panels of 8 rows four columns at a time, ``[ceil(n / 8), c / 4, 8, 4]`` viewed as
    ``[ceil(n / 8), c, 8]``, each code plus ``shift`` (when ``shift > 0``).

    >>> pack_quads(torch.arange(16, dtype=torch.int8).view(2, 8), 0)[0, :8].flatten()[:12]
    tensor([ 0,  1,  2,  3,  8,  9, 10, 11,  0,  0,  0,  0], dtype=torch.int8)
    """
    panels = q if q.dim() == 3 else pack_panels(q)
    count, cols, _ = panels.shape
    if shift > 0:
        panels = panels + shift  # (within int8: q + shift <= 63)
    quads = panels.reshape(count, cols // 4, 4, PANEL).transpose(2, 3)
    return quads.reshape(count, cols, PANEL).contiguous()


def unpack_quads(t: torch.Tensor, rows: int, shift: int) -> torch.Tensor:
    """The inverse of :func:`pack_quads`: the first ``rows`` rows of codes, ``[rows, c]``.

    >>> q = torch.randint(-16, 16, (10, 8), dtype=torch.int8)
    >>> torch.equal(unpack_quads(pack_quads(q, 16), 10, 16), q)
    True
    """
    count, cols, _ = t.shape
    panels = t.reshape(count, cols // 4, PANEL, 4).transpose(2, 3).reshape(count, cols, PANEL)
    q = unpack_panels(panels, rows)
    return q - shift if shift > 0 else q.contiguous()


def nibbles_fit(q: torch.Tensor) -> bool:
    """Whether codes (after any shift) all lie in 0..15, so that two share a byte.

    >>> nibbles_fit(torch.tensor([[0, 15]], dtype=torch.int8)), nibbles_fit(torch.tensor([[-1, 3]]))
    (True, False)
    """
    lo, hi = _code_range(q)
    return lo >= 0 and hi <= 15


def pack_nibbles(panels: torch.Tensor) -> torch.Tensor:
    """Codes of 0..15 in panels (:func:`pack_panels`, ``[p, c, 8]`` int8) -> two per byte,
    ``[p, c / 2, 8]`` uint8: column ``2i`` in the low four bits, ``2i + 1`` in the high four
    (half the bytes a decode step streams; the kernel's products are the same bit for bit).

    >>> pack_nibbles(torch.tensor([[[1] * 8, [2] * 8]], dtype=torch.int8))[0, 0, 0].item()
    33
    """
    return _join_nibbles(panels, PANEL)


def unpack_nibbles(t: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`pack_nibbles`: int8 codes in panels ``[p, c, 8]``."""
    return _split_nibbles(t, PANEL)


def pack_nibble_quads(quads: torch.Tensor) -> torch.Tensor:
    """Shifted codes of 0..15 in quads (:func:`pack_quads`) -> two per byte, ``[p, c / 2, 8]``
    uint8: each 32 bytes hold eight inputs of a panel, the first quad's codes in the low four
    bits and the second's in the high four (what the int8 kernel's ``maddubs`` takes apart with
    one shift and two masks).
    """
    return _join_nibbles(quads, 4 * PANEL)


def unpack_nibble_quads(t: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`pack_nibble_quads`: int8 quads ``[p, c, 8]``."""
    return _split_nibbles(t, 4 * PANEL)


def _join_nibbles(t: torch.Tensor, span: int) -> torch.Tensor:
    """Each panel's bytes in runs of ``span``, every second run in the high four bits of the
    run before it: ``[p, c, 8]`` int8 -> ``[p, c / 2, 8]`` uint8."""
    pairs = t.reshape(t.shape[0], -1, 2, span).to(torch.uint8)
    return (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(t.shape[0], -1, PANEL)


def _split_nibbles(t: torch.Tensor, span: int) -> torch.Tensor:
    """The inverse of :func:`_join_nibbles`."""
    runs = t.reshape(t.shape[0], -1, span)
    pairs = torch.stack([runs & 15, runs >> 4], dim=2)
    return pairs.reshape(t.shape[0], -1, PANEL).to(torch.int8)


_MADV_PAGEOUT = 21  # (Linux 5.4+: reclaim these pages now; never loses data)


def release_pages(t: torch.Tensor) -> bool:
    """Ask the OS to reclaim the whole pages of ``t``'s memory that it can (``MADV_PAGEOUT``):
    pages of a mapped file are dropped and read again if touched, anonymous ones are swapped
    or left. A hint that never changes the data. Returns whether the OS took it (False off
    Linux, on kernels before 5.4, or for a tensor smaller than a page).

    :func:`use_gguf_weights` calls it for the codes a layer has copied (two to a byte, or in
    quads), which it read from the converted-weights cache, a mapped file: without it the pages
    read stay resident (the 1.5B model's engine after a decode, exact and int8 activations:
    3.96 and 4.27 GB instead of 2.9-3.1 and 2.8-3.2).
    """
    import mmap

    madvise = _madvise()
    start = t.data_ptr()
    end = start + t.numel() * t.element_size()
    first, last = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE, end // mmap.PAGESIZE * mmap.PAGESIZE
    if madvise is None or last <= first:
        return False
    return bool(madvise(first, last - first, _MADV_PAGEOUT) == 0)


@functools.cache
def _madvise() -> Any:
    """libc's ``madvise`` (Linux), or None."""
    import ctypes
    import ctypes.util
    import sys

    if sys.platform != "linux":
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc.madvise


def _q8_fits(group_size: int, in_features: int) -> bool:
    """Whether a layer's shape allows int8 activations (groups of 16 or 32, inputs % 32)."""
    return group_size in (16, 32) and in_features % 32 == 0


def reference_linear(
    x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None
) -> torch.Tensor:
    """``x @ W.T`` for the grouped weight ``W`` (see :func:`reference_dequantize`)."""
    return torch.nn.functional.linear(x, reference_dequantize(q, scale, offset))


def gguf_kernel() -> Any:
    """The compiled GGUF kernel's torch op namespace (``grouped_linear``,
    ``grouped_dequantize``, ...), built on first use (see
    :func:`~ragloom.runtime.layers.kernels.cpu_kernels`).

    Raises:
        KernelUnavailableError: the kernels cannot be built or loaded here.
    """
    return cpu_kernels().ragloom_gguf


class GGUFLinear(nn.Module):
    """A linear layer over GGUF-quantised weights: int8 codes with per-group scale/offset.

    Where the kernel runs float32 products, ``q``, ``scale`` and ``offset`` are held in its
    panel layout (:func:`pack_panels`, ``packed`` is True); where it runs int8 activations,
    the codes four inputs at a time (:func:`pack_quads`, shifted by ``shift``) and the scales in
    panels; else row by row. They may be given row by row or in panels (the converted-weights
    cache holds panels, so a float32 load copies nothing).

    Args:
        q: int8 codes ``[out, in]``, or in panels ``[ceil(out / 8), in, 8]``.
        scale: float32 ``[out, in / g]``, or in panels like ``q``.
        offset: float32 like ``scale``, or None for types without one.
        bias: float32 ``[out]`` or None.
        out_features: the number of outputs; needed (only) for codes in panels.
        use_kernel: run the compiled kernel (True) or :func:`reference_linear` (False); None
            uses the kernel when it is available.
        int8_activations: quantise the inputs to int8 per 32 inputs and take exact integer
            dot products (llama.cpp's CPU arithmetic; see :func:`reference_q8_linear`): faster,
            at a small change in the numbers. Each row is quantised on its own, so a row's
            result does not depend on the other rows of its step.
        nibbles: on the kernel, hold codes of 0..15 (after the int8 path's shift; Q4_K, Q4_1)
            two to a byte (:func:`pack_nibbles`, :func:`pack_nibble_quads`): the same numbers,
            fewer bytes per decode step. None: wherever the codes fit; False: never.

    Raises:
        ConfigError: the shapes or dtypes do not fit together (the message names which), or
            int8 activations with groups other than 16 or 32 inputs.

    >>> q = torch.randint(-8, 8, (4, 64), dtype=torch.int8)
    >>> layer = GGUFLinear(q, torch.rand(4, 2), None, use_kernel=False)
    >>> layer(torch.randn(3, 64)).shape
    torch.Size([3, 4])
    """

    def __init__(
        self,
        q: torch.Tensor,
        scale: torch.Tensor,
        offset: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        *,
        use_kernel: bool | None = None,
        int8_activations: bool = False,
        out_features: int | None = None,
        nibbles: bool | None = None,
    ) -> None:
        super().__init__()
        self.out_features = _check(q, scale, offset, bias, out_features)
        self.in_features = q.shape[1]
        self.group_size = q.shape[1] // scale.shape[1]
        if int8_activations and not _q8_fits(self.group_size, self.in_features):
            raise ConfigError(
                f"int8 activations need groups of 16 or 32 inputs and a multiple of 32 inputs; "
                f"this layer has groups of {self.group_size} over {self.in_features}"
            )
        self.int8_activations = int8_activations
        self._op: Any = None
        if use_kernel or use_kernel is None:
            try:
                self._op = gguf_kernel()
            except KernelUnavailableError:
                if use_kernel:
                    raise
        self.packed = self._op is not None and not int8_activations
        self.shift: int | None = None  # (the codes' shift, where they are in quads)
        self.nibbles = False  # (codes two to a byte, uint8)
        if self.packed:
            q, scale, offset = _in_panels(q, scale, offset)
            if nibbles is not False and nibbles_fit(q):
                q, self.nibbles = pack_nibbles(q), True
        elif self._op is not None:  # int8 activations on the kernel
            q, scale, offset = _in_panels(q, scale, offset)
            lo, hi = _code_range(q)
            self.shift = _shift(lo, hi)
            q = pack_quads(q, self.shift)
            if nibbles is not False and self.shift >= 0 and hi + self.shift <= 15:
                q, self.nibbles = pack_nibble_quads(q), True
        else:
            q, scale, offset = _in_rows(q, scale, offset, self.out_features)
        self.q = nn.Parameter(q.contiguous(), requires_grad=False)
        self.scale = nn.Parameter(scale.contiguous(), requires_grad=False)
        self.offset = (
            None if offset is None else nn.Parameter(offset.contiguous(), requires_grad=False)
        )
        self.bias = (
            # (its own copy: a bias loaded from a mapped file would keep the file mapped)
            None
            if bias is None
            else nn.Parameter(bias.detach().float().clone(), requires_grad=False)
        )

    @property
    def uses_kernel(self) -> bool:
        """Whether products run the compiled kernel (else the torch reference)."""
        return self._op is not None

    def codes(self) -> Grouped:
        """``(q, scale, offset)`` row by row (``[out, in]``, ``[out, groups]``)."""
        if self.shift is None:
            q = unpack_nibbles(self.q) if self.nibbles else self.q
            return _in_rows(q, self.scale, self.offset, self.out_features)
        rows = self.out_features
        offset = None if self.offset is None else unpack_panels(self.offset, rows)
        quads = unpack_nibble_quads(self.q) if self.nibbles else self.q
        return unpack_quads(quads, rows, self.shift), unpack_panels(self.scale, rows), offset

    def dequantize(self) -> torch.Tensor:
        """The float32 weight ``[out, in]`` (the values the float32 model holds)."""
        if not self.packed:  # (int8 activations never decode a weight: the reference's values)
            return reference_dequantize(*self.codes())
        q = unpack_nibbles(self.q) if self.nibbles else self.q
        return self._op.grouped_dequantize(q, self.scale, self._offset_arg())[: self.out_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T + b`` in float32."""
        # (subtle: the decode loop makes ~100 of these calls per token; reshaping only inputs
        # that are not 2-D and testing the kernel path first took ~0.8 ms off a 30 ms step)
        rows = x if x.dim() == 2 else x.reshape(-1, self.in_features)
        op = self._op
        if op is not None and not self.int8_activations:
            offset = self.offset
            out = op.grouped_linear(rows, self.q, self.scale, _EMPTY if offset is None else offset)
            if out.shape[1] != self.out_features:  # (the last panel's padding)
                out = out[:, : self.out_features]
            if self.bias is not None:
                out += self.bias
        elif self.int8_activations:  # (every row count: a row's numbers never depend on its step)
            if op is None:
                out = reference_q8_linear(rows, self.q, self.scale, self.offset)
            else:
                out = op.q8_linear(rows, self.q, self.shift, self.scale, self._offset_arg())
                if out.shape[1] != self.out_features:  # (the last panel's padding)
                    out = out[:, : self.out_features]
            if self.bias is not None:
                out += self.bias
        else:
            out = torch.nn.functional.linear(rows, self.dequantize(), self.bias)
        return out if x.dim() == 2 else out.reshape(*x.shape[:-1], self.out_features)

    def _offset_arg(self) -> torch.Tensor:
        return self.offset if self.offset is not None else _EMPTY

    def extra_repr(self) -> str:
        kind = "kernel" if self._op is not None else "reference"
        kind += ", panels" if self.packed else ""
        kind += f", quads shifted by {self.shift}" if self.shift is not None else ""
        kind += ", nibbles" if self.nibbles else ""
        q8 = ", int8 activations" if self.int8_activations else ""
        return (
            f"in={self.in_features}, out={self.out_features}, group={self.group_size}, {kind}{q8}"
        )


_EMPTY = torch.empty(0)


def _in_panels(q: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None) -> Grouped:
    """``(q, scale, offset)`` in panels, from either layout."""
    if q.dim() == 3:
        return q, scale, offset
    return pack_panels(q), pack_panels(scale), None if offset is None else pack_panels(offset)


def _in_rows(
    q: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None, rows: int
) -> Grouped:
    """``(q, scale, offset)`` row by row (the first ``rows``), from either layout."""
    if q.dim() == 2:
        return q, scale, offset
    offset = None if offset is None else unpack_panels(offset, rows)
    return unpack_panels(q, rows), unpack_panels(scale, rows), offset


def _check(
    q: torch.Tensor,
    scale: torch.Tensor,
    offset: torch.Tensor | None,
    bias: torch.Tensor | None,
    rows: int | None = None,
) -> int:
    """Check grouped weights in either layout; return their number of rows (``rows`` is
    needed for panels, whose last may be padded)."""
    packed = q.dim() == 3
    if q.dtype != torch.int8 or q.dim() not in (2, 3) or (packed and q.shape[2] != PANEL):
        raise ConfigError(
            f"GGUF codes must be int8 [out, in], or in panels [ceil(out / {PANEL}), in, "
            f"{PANEL}]; got {q.dtype} {tuple(q.shape)}"
        )
    if not packed:
        rows = q.shape[0]
    elif rows is None or -(-rows // PANEL) != q.shape[0]:
        raise ConfigError(
            f"GGUF codes in {q.shape[0]} panels need their number of rows, "
            f"{(q.shape[0] - 1) * PANEL + 1}-{q.shape[0] * PANEL}; got {rows}"
        )
    groups_shape = (q.shape[0], scale.shape[1], PANEL)[: q.dim()]
    if scale.dtype != torch.float32 or scale.shape != groups_shape:
        raise ConfigError(
            f"GGUF scale must be float32 shaped like the codes with groups for inputs "
            f"{tuple(q.shape)}, got {scale.dtype} {tuple(scale.shape)}"
        )
    if q.shape[1] % scale.shape[1] or (q.shape[1] // scale.shape[1]) % 8:
        raise ConfigError(
            f"GGUFLinear group size must divide {q.shape[1]} inputs and be a multiple of 8 "
            f"({scale.shape[1]} groups given)"
        )
    if offset is not None and (offset.shape != scale.shape or offset.dtype != torch.float32):
        raise ConfigError(
            f"GGUFLinear offset must be float32 shaped like scale {tuple(scale.shape)}"
        )
    if bias is not None and bias.shape != (rows,):
        raise ConfigError(f"GGUFLinear bias must be [{rows}], got {tuple(bias.shape)}")
    return rows


class GGUFEmbedding(nn.Module):
    """Token id -> hidden vector, decoded from GGUF codes on lookup (only the rows asked for).

    The rows equal :func:`reference_dequantize` of the codes, so an embedding tied to the LM
    head keeps one copy of its weights, the head's codes, instead of a float32 table (545 MB
    for Qwen2.5's 151,936 tokens).

    Args:
        q: int8 codes ``[vocab, hidden]``, or in the kernel's panels (:func:`pack_panels`),
            as a tied :class:`GGUFLinear` holds them.
        scale: float32 ``[vocab, hidden / g]``, in the layout of ``q``.
        offset: float32 like ``scale``, or None.
        num_embeddings: the vocabulary size; needed (only) for codes in panels.

    >>> q = torch.tensor([[1, 2] * 4, [3, 4] * 4], dtype=torch.int8)  # (groups of 8)
    >>> GGUFEmbedding(q, torch.tensor([[0.5], [2.0]]))(torch.tensor([1, 0]))[:, :2]
    tensor([[6.0000, 8.0000],
            [0.5000, 1.0000]])
    """

    def __init__(
        self,
        q: torch.Tensor,
        scale: torch.Tensor,
        offset: torch.Tensor | None = None,
        *,
        num_embeddings: int | None = None,
    ) -> None:
        super().__init__()
        self.num_embeddings = _check(q, scale, offset, None, num_embeddings)
        self.embedding_dim = q.shape[1]
        self.packed = q.dim() == 3
        self.q = q if isinstance(q, nn.Parameter) else nn.Parameter(q, requires_grad=False)
        self.scale = (
            scale if isinstance(scale, nn.Parameter) else nn.Parameter(scale, requires_grad=False)
        )
        self.offset = (
            offset
            if offset is None or isinstance(offset, nn.Parameter)
            else nn.Parameter(offset, requires_grad=False)
        )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``[...]`` token ids -> ``[..., hidden]`` float32."""
        flat = ids.reshape(-1)

        def pick(t: torch.Tensor) -> torch.Tensor:
            return unpack_panels(t, flat) if self.packed else t[flat]

        offset = None if self.offset is None else pick(self.offset)
        rows = reference_dequantize(pick(self.q), pick(self.scale), offset)
        return rows.view(*ids.shape, self.embedding_dim)


def use_gguf_weights(
    model: nn.Module,
    layers: dict[str, Grouped],
    *,
    int8_activations: bool = False,
    check: bool = True,
) -> list[str]:
    """Swap each float ``nn.Linear`` of ``model`` named in ``layers`` for a :class:`GGUFLinear`,
    and each ``nn.Embedding`` for a :class:`GGUFEmbedding` (in place), after checking that the
    decoded weight equals the float one bit for bit (see :func:`check_gguf_weights`).

    An ``nn.Embedding`` whose weight is a swapped layer's (tied word embeddings) becomes a
    :class:`GGUFEmbedding` over that layer's codes. The float tensors left (norms, biases, an
    untied embedding) are then copied into the process's own memory, so that nothing keeps the
    float32 weights file mapped: its linear weights are no longer resident.

    Args:
        model: a float32 model.
        layers: ``{module name: (codes, scale, offset)}``, row by row or in panels.
        int8_activations: linear layers whose groups allow it quantise their inputs to int8
            (see :class:`GGUFLinear`); the others stay float32.
        check: compare the values first. ``False`` only for layers already checked against
            these very weights (:meth:`~ragloom.runtime.models.gguf_loader.LoadedModel.gguf_linears`
            does so once per file): then the float32 linear weights are never read, so a
            memory-mapped weights file never becomes resident.

    Returns:
        the names swapped, in order (a tied embedding after its layer).

    Raises:
        ConfigError: a named module is missing or not a float32 linear or embedding, or its GGUF
            weights decode to other values than its float32 weight (a wrong file or a bug).
    """
    if check:  # (all before any swap: a refused layer leaves the model as it was)
        check_gguf_weights(model, layers)
    modules = dict(model.named_modules())
    embeddings = {id(m.weight): n for n, m in modules.items() if isinstance(m, nn.Embedding)}
    swapped: list[str] = []
    for name, (q, scale, offset) in layers.items():
        linear = modules.get(name)
        if isinstance(linear, nn.Embedding) and linear.weight.dtype == torch.float32:
            embedding = GGUFEmbedding(q, scale, offset, num_embeddings=linear.num_embeddings)
            _replace(model, name, embedding)
            swapped.append(name)
            continue
        if type(linear) is not nn.Linear or linear.weight.dtype != torch.float32:
            raise ConfigError(
                f"GGUF weights name {name!r}, which is not a float32 nn.Linear or nn.Embedding"
            )
        q8 = int8_activations and _q8_fits(q.shape[1] // scale.shape[1], q.shape[1])
        layer = GGUFLinear(
            q, scale, offset, linear.bias, int8_activations=q8, out_features=linear.out_features
        )
        _replace(model, name, layer)
        swapped.append(name)
        if layer.q.untyped_storage().data_ptr() != q.untyped_storage().data_ptr():
            release_pages(q)  # (the layer holds a copy: the cache pages read need not stay)
        tied = embeddings.get(id(linear.weight))
        if tied is not None:  # (its weight is the one just checked)
            # (one copy of the codes, the head's, unless they are in quads for int8 products
            # or two to a byte)
            codes = (
                (q, scale, offset)
                if layer.shift is not None or layer.nibbles
                else (layer.q, layer.scale, layer.offset)
            )
            embedding = GGUFEmbedding(*codes, num_embeddings=layer.out_features)
            _replace(model, tied, embedding)
            swapped.append(tied)
    for module in model.modules():  # (GGUF layers hold codes, and a bias of their own)
        if not isinstance(module, GGUFLinear | GGUFEmbedding):
            for param in module.parameters(recurse=False):
                param.data = param.data.clone()
    return swapped


def check_gguf_weights(model: nn.Module, layers: dict[str, Grouped]) -> None:
    """Check that each of ``layers`` decodes to exactly the weight of ``model``'s float32 linear
    or embedding of that name (what :func:`use_gguf_weights` checks before it swaps; linear
    layers are decoded by the kernel where it runs, as :class:`GGUFLinear` decodes them).

    Raises:
        ConfigError: a named module is missing or not a float32 linear or embedding, or its
            GGUF weights decode to other values (a wrong file or a bug); the message names it.
    """
    try:
        op = gguf_kernel()
    except KernelUnavailableError:
        op = None
    modules = dict(model.named_modules())
    for name, grouped in layers.items():
        module = modules.get(name)
        if not isinstance(module, nn.Linear | nn.Embedding) or module.weight.dtype != torch.float32:
            raise ConfigError(
                f"GGUF weights name {name!r}, which is not a float32 nn.Linear or nn.Embedding"
            )
        _same_weight(name, grouped, module.weight, op if isinstance(module, nn.Linear) else None)


_CHECK_ROWS = 2048  # rows decoded at a time (a 151,936-row head in one piece took 0.5 GB)


def _same_weight(name: str, grouped: Grouped, weight: torch.Tensor, op: Any = None) -> None:
    """Raise unless ``grouped`` (in either layout) decodes, by the kernel ``op`` or the torch
    reference, to ``weight`` bit for bit; a block of rows at a time."""
    q, scale, offset = grouped
    weight = weight.detach()
    rows = weight.shape[0]
    packed = q.dim() == 3
    fits = -(-rows // PANEL) == q.shape[0] if packed else q.shape[0] == rows
    same = fits and q.shape[1] == weight.shape[1]
    step = _CHECK_ROWS // PANEL if packed else _CHECK_ROWS  # (panels or rows at a time)
    for start in range(0, q.shape[0], step) if same else ():
        end = start + step
        part = (q[start:end], scale[start:end], None if offset is None else offset[start:end])
        want = weight[start * PANEL : end * PANEL] if packed else weight[start:end]
        if op is None:
            decoded = reference_dequantize(*_in_rows(*part, len(want)))
        else:
            panels = _in_panels(*part)
            offset_arg = _EMPTY if panels[2] is None else panels[2]
            decoded = op.grouped_dequantize(panels[0], panels[1], offset_arg)[: len(want)]
        if not torch.equal(decoded, want):
            same = False
            break
    if not same:
        raise ConfigError(
            f"{name}: the GGUF weights decode to other values than the float32 weight"
        )


def _replace(model: nn.Module, name: str, layer: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, layer)
