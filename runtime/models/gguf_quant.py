"""Read a GGUF file's quantised linear weights as int8 codes with per-group scales and offsets.

Every type below decodes, per group of ``g`` consecutive inputs of a row, as
``w = scale * q - offset`` (float32 operations, in that order) with small integer codes:

====== ===== =============================== =====================
type   g     scale                           offset
====== ===== =============================== =====================
Q4_0   32    d                               none (codes q - 8)
Q5_0   32    d                               none (codes q - 16)
Q8_0   32    d                               none
Q4_1   32    d                               -m
Q5_1   32    d                               -m
Q4_K   32    d * sc (6-bit sub-scale)        dmin * m
Q5_K   32    d * sc                          dmin * m
Q6_K   16    d * sc (int8 sub-scale)         none (codes q - 32)
====== ===== =============================== =====================

The codes come from gguf's own decoder run on a copy of the blocks whose super-scale is 1
(and whose minimum is 0), so no bit layout is re-implemented here; scales and offsets are
computed as gguf computes them. :func:`load_gguf_linears` assembles them into the engine's
fused layers (Q/K/V and gate/up concatenated, llama's Q/K rows un-permuted) and caches them
next to the float32 weights, in the kernel's panel layout
(:func:`~ragloom.runtime.layers.gguf_linear.pack_panels`), so that a load swaps them in
without a copy. Other types (F16, F32, I-quants) are left out: those layers stay
float32.

This module does not run anything; :class:`~ragloom.runtime.layers.gguf_linear.GGUFLinear`
does. The decoded weights are checked against the float32 model's, bit for bit, the first time
the cache is used (:func:`linears_checked`).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ragloom.runtime.layers.gguf_linear import pack_panels
from ragloom.runtime.models.config import ModelConfig
from ragloom.runtime.models.gguf_loader import (
    _open_reader,
    _unpermute,
    dequantize,
    tensor_sources,
)

__all__ = ["GroupedWeight", "load_gguf_linears", "unpack", "write_gguf_linears"]

GroupedWeight = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # codes, scale, offset
_ONE = np.array([1.0], dtype=np.float16).view(np.uint8)
_LEGACY = {"Q4_0": False, "Q5_0": False, "Q8_0": False, "Q4_1": True, "Q5_1": True}
# v2: with an untied model's token embedding; v3: in panels of 8 rows
_CACHE_NAME = "gguf_linears.v3.safetensors"
# written once the cache has been checked against the float32 weights beside it, bit for bit
_CHECKED_NAME = "gguf_linears.v3.checked"
# files of older versions, removed when this one is written
_SUPERSEDED = (
    "gguf_linears.v1.safetensors",
    "gguf_linears.v2.safetensors",
    "gguf_linears.v2.checked",
)


def _f16(column: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(column).view(np.float16).astype(np.float32)[:, 0]


def _decode(blocks: np.ndarray, qtype: Any) -> np.ndarray:
    from gguf import GGML_QUANT_SIZES

    block_size = GGML_QUANT_SIZES[qtype][0]
    return dequantize(blocks, qtype).reshape(len(blocks), block_size)


def _codes(scaled: np.ndarray, sub: np.ndarray) -> np.ndarray:
    """Codes from ``sub * q`` (exact small integers): divide the sub-scale back out."""
    ones = np.where(sub == 0, 1.0, sub).astype(np.float32)
    return np.where(sub == 0, 0.0, scaled / ones)


def unpack(data: np.ndarray, qtype: Any, shape: tuple[int, int]) -> GroupedWeight | None:
    """Codes ``[rows, cols]`` (int8), scale and offset ``[rows, cols / g]`` (float32) of one
    quantised tensor; None for a type without this form.

    Args:
        data: the tensor's raw bytes (``ReaderTensor.data``).
        qtype: its ``GGMLQuantizationType``.
        shape: ``(rows, cols)``.
    """
    from gguf import GGML_QUANT_SIZES
    from gguf.quants import Q4_K

    name = qtype.name
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    blocks = np.ascontiguousarray(data).view(np.uint8).reshape(-1, type_size)
    patched = blocks.copy()
    patched[:, 0:2] = _ONE
    offset: np.ndarray | None = None
    if name in _LEGACY:
        scale = _f16(blocks[:, 0:2])[:, None]
        if _LEGACY[name]:
            offset = -_f16(blocks[:, 2:4])[:, None]
            patched[:, 2:4] = 0
        codes = _decode(patched, qtype)
    elif name in ("Q4_K", "Q5_K"):
        d, dmin = _f16(blocks[:, 0:2]), _f16(blocks[:, 2:4])
        sc, m = Q4_K.get_scale_min(blocks[:, 4:16])
        sub = sc.astype(np.float32)
        patched[:, 2:4] = 0
        scaled = _decode(patched, qtype).reshape(len(blocks), 8, 32)
        codes = _codes(scaled, sub[:, :, None])
        scale = d[:, None] * sub
        offset = dmin[:, None] * m.astype(np.float32)
    elif name == "Q6_K":
        patched = blocks.copy()
        patched[:, 208:210] = _ONE
        sub = blocks[:, 192:208].copy().view(np.int8).astype(np.float32)
        scaled = _decode(patched, qtype).reshape(len(blocks), 16, 16)
        codes = _codes(scaled, sub[:, :, None])
        scale = _f16(blocks[:, 208:210])[:, None] * sub
    else:
        return None
    rows, cols = shape
    groups = cols // block_size * scale.shape[1]
    q = codes.reshape(rows, cols).astype(np.int8)
    offset = None if offset is None else offset.reshape(rows, groups)
    return q, scale.reshape(rows, groups), offset


def _concat(parts: list[GroupedWeight]) -> GroupedWeight:
    """Stack row blocks; different group sizes meet at the smallest, a missing offset is 0."""
    groups = max(p[1].shape[1] for p in parts)
    scales, offsets = [], []
    for _, scale, offset in parts:
        repeat = groups // scale.shape[1]
        scales.append(np.repeat(scale, repeat, axis=1))
        zero = np.zeros_like(scale)
        offsets.append(np.repeat(zero if offset is None else offset, repeat, axis=1))
    any_offset = any(p[2] is not None for p in parts)
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate(scales),
        np.concatenate(offsets) if any_offset else None,
    )


def _sources(cfg: ModelConfig, names: set[str]) -> dict[str, list[str]]:
    """The engine's linear layers (and an untied token embedding) and the GGUF tensors each is
    built from, in row order (from the float32 loader's table)."""
    params = tensor_sources(cfg, names)
    layers = {
        name.removesuffix(".weight"): sources
        for name, sources in params.items()
        if name.endswith(("_proj.weight", "lm_head.proj.weight"))
    }
    embedding = params["model.embed_tokens.weight"]
    if "lm_head.proj" in layers:  # an untied head: the embedding has codes of its own
        layers["model.embed_tokens"] = embedding
    else:  # tied: the head is the embedding's codes
        layers["lm_head.proj"] = embedding
    return layers


def _read(reader: Any, cfg: ModelConfig, permute_qk: bool) -> dict[str, torch.Tensor]:
    tensors = {t.name: t for t in reader.tensors}
    heads = {"attn_q.weight": cfg.num_heads, "attn_k.weight": cfg.num_kv_heads}

    def layer_weights(sources: list[str]) -> GroupedWeight | None:
        parts: list[GroupedWeight] = []
        for name in sources:
            t = tensors[name]
            part = unpack(t.data, t.tensor_type, (int(t.shape[1]), int(t.shape[0])))
            if part is None:
                return None
            suffix = name.split(".", 2)[-1]
            if permute_qk and suffix in heads:
                part = (
                    _unpermute(part[0], heads[suffix]),
                    _unpermute(part[1], heads[suffix]),
                    None if part[2] is None else _unpermute(part[2], heads[suffix]),
                )
            parts.append(part)
        return _concat(parts)

    layers = _sources(cfg, set(tensors))
    state: dict[str, torch.Tensor] = {}
    with ThreadPoolExecutor(os.cpu_count()) as pool:  # (numpy works without the GIL)
        for layer, weights in zip(layers, pool.map(layer_weights, layers.values()), strict=True):
            if weights is None:  # a type without the grouped form: this layer stays float32
                continue
            q, scale, offset = weights
            state[f"{layer}.q"] = pack_panels(torch.from_numpy(q))
            state[f"{layer}.scale"] = pack_panels(torch.from_numpy(scale))
            if offset is not None:
                state[f"{layer}.offset"] = pack_panels(torch.from_numpy(offset))
    return state


def load_gguf_linears(
    path: Path, folder: Path, cfg: ModelConfig, permute_qk: bool
) -> dict[str, GroupedWeight | Any]:
    """``{layer name: (codes, scale, offset)}`` (torch tensors in panels of 8 rows:
    ``[ceil(rows / 8), columns, 8]``) for each linear layer of the model in ``path`` whose GGUF
    types have the grouped form, and for its token embedding where the head is untied
    (``model.embed_tokens``), cached in ``folder``.

    Args:
        path: the GGUF file.
        folder: its converted-weights cache folder (written atomically; a damaged cache file
            is rebuilt).
        cfg: the model's config.
        permute_qk: whether Q/K rows are in llama.cpp's interleaved order.
    """
    from safetensors.torch import load_file

    cached = folder / _CACHE_NAME
    state = None
    if cached.exists():
        try:
            state = load_file(cached)
        except Exception:  # a damaged cache file (safetensors raises several kinds): rebuild
            state = None
    if state is None:
        state = write_gguf_linears(_open_reader(path), path.name, folder, cfg, permute_qk)
    layers: dict[str, Any] = {}
    for key in state:
        layer, part = key.rsplit(".", 1)
        if part == "q":
            layers[layer] = (state[key], state[f"{layer}.scale"], state.get(f"{layer}.offset"))
    return layers


def write_gguf_linears(
    reader: Any, source: str, folder: Path, cfg: ModelConfig, permute_qk: bool
) -> dict[str, torch.Tensor]:
    """Build the cache file of :func:`load_gguf_linears` in ``folder`` from an open
    ``GGUFReader`` of the file named ``source`` (the file's conversion passes its own: reading
    the metadata of a 0.5B model takes ~10 s) and return its tensors. Written atomically; older
    versions are removed and the new file is checked anew."""
    from safetensors.torch import save_file

    (folder / _CHECKED_NAME).unlink(missing_ok=True)
    state = _read(reader, cfg, permute_qk)
    cached = folder / _CACHE_NAME
    tmp = cached.with_name(cached.name + f".{os.getpid()}.tmp")
    save_file(state, tmp, metadata={"source": json.dumps(source)})
    os.replace(tmp, cached)
    for name in _SUPERSEDED:
        (folder / name).unlink(missing_ok=True)
    return state


def linears_checked(folder: Path) -> bool:
    """Whether the cached GGUF weights in ``folder`` were checked against its float32 weights
    (:func:`mark_linears_checked`) since they were written."""
    return (folder / _CHECKED_NAME).exists()


def linears_cached(folder: Path) -> bool:
    """Whether ``folder`` holds the quantised linear weights, checked (:func:`linears_checked`)."""
    return (folder / _CACHE_NAME).exists() and linears_checked(folder)


def mark_linears_checked(folder: Path) -> None:
    """Record that the cached GGUF weights in ``folder`` decode to its float32 weights."""
    (folder / _CHECKED_NAME).touch()
