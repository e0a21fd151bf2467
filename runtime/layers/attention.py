"""Attention over the paged KV cache.

Each step mixes decoding sequences (one new token each) and prefill chunks (many tokens of one
sequence). The step's tokens are packed: decodes first, then one contiguous run per prefill
chunk. New keys/values are written into their slots (``slot_mapping``), then:

- decodes attend over their context slots (``[B, L]``, padded; ``decode_lengths`` says how many
  are real). Where ragloom's CPU kernels build (:mod:`ragloom.runtime.layers.kernels`),
  ``paged_attention.cpp`` reads the slots straight from the cache, each sequence on its own;
  otherwise torch gathers them and runs ``scaled_dot_product_attention`` in one padded batch
  with a mask hiding the padding (or, with ``batch_invariant``, one by one over their own
  contexts: then a sequence's numbers never depend on the lengths of the others in its step,
  as with the kernel);
- each prefill chunk attends to its gathered context with a causal mask offset by the tokens
  already in the cache (prefix-cache hits, earlier chunks), through torch's
  ``scaled_dot_product_attention``; with ``batch_invariant`` and the kernel, each of its rows
  runs as a decode over its own causal context instead, so that a row's numbers do not depend
  on how its prompt was chunked or which part came from the prefix cache (int8 activations
  turn last-bit differences into other tokens).

A layer with a sliding ``window`` (gemma3's local layers) lets each query see only the
``window`` latest keys up to itself: the step's metadata is narrowed once per step and window
(:meth:`AttentionMetadata.windowed`) and shared by every such layer.

No CUDA-only code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.functional import scaled_dot_product_attention as sdpa

__all__ = ["AttentionMetadata", "PagedAttention", "PrefillChunk", "decode_attention_kernel"]


@dataclass(slots=True)
class PrefillChunk:
    """One sequence's prefill chunk inside the packed step.

    Attributes:
        start: first row of the chunk in the packed tokens.
        end: one past its last row.
        context_slots: KV slots of the whole context (cached tokens, then the chunk).
        mask: ``[chunk, context]`` causal mask, or None when the chunk is the whole context.
    """

    start: int
    end: int
    context_slots: torch.Tensor
    mask: torch.Tensor | None


@dataclass(slots=True)
class AttentionMetadata:
    """Where a step's tokens go in the KV cache and what each attends to.

    Attributes:
        slot_mapping: ``[tokens]`` KV slot of every packed token.
        num_decodes: leading rows that are decodes.
        decode_slots: ``[num_decodes, L]`` context slots per decode (padded).
        decode_mask: ``[num_decodes, 1, 1, L]`` True where a slot is real.
        decode_lengths: ``[num_decodes]`` int64, the real slots of each decode.
        prefills: the prefill chunks, in row order.
    """

    slot_mapping: torch.Tensor
    num_decodes: int = 0
    decode_slots: torch.Tensor | None = None
    decode_mask: torch.Tensor | None = None
    decode_lengths: torch.Tensor | None = None
    prefills: list[PrefillChunk] = field(default_factory=list)
    _windows: dict[int, AttentionMetadata | None] = field(default_factory=dict, repr=False)

    def windowed(self, window: int) -> AttentionMetadata:
        """This step with each query seeing only the ``window`` latest keys up to itself (its
        own included), built once per window and step. Decodes keep the last ``window`` slots
        of their context; a prefill chunk keeps the keys its first row sees, under a mask that
        also hides those each later row has left behind."""
        if window not in self._windows:
            self._windows[window] = self._narrowed(window)
        return self._windows[window] or self

    def _narrowed(self, window: int) -> AttentionMetadata | None:
        """The narrowed step, or None where no query has keys beyond its window."""
        longest = max((len(c.context_slots) for c in self.prefills), default=0)
        if self.decode_lengths is not None and len(self.decode_lengths):
            longest = max(longest, int(self.decode_lengths.max()))
        if longest <= window:
            return None
        out = AttentionMetadata(self.slot_mapping, self.num_decodes)
        if self.decode_slots is not None and self.decode_lengths is not None:
            out.decode_slots, out.decode_lengths = _last_slots(
                self.decode_slots, self.decode_lengths, window
            )
            width = out.decode_slots.shape[1]
            mask = torch.arange(width)[None, :] < out.decode_lengths[:, None]
            out.decode_mask = mask[:, None, None, :]
        for chunk in self.prefills:
            context, rows = len(chunk.context_slots), chunk.end - chunk.start
            if context <= window:
                out.prefills.append(chunk)
                continue
            first = max(0, context - rows - window + 1)  # the first key any row sees
            q_pos = torch.arange(context - rows, context)[:, None]
            k_pos = torch.arange(first, context)[None, :]
            mask = (k_pos <= q_pos) & (q_pos - k_pos < window)
            out.prefills.append(
                PrefillChunk(chunk.start, chunk.end, chunk.context_slots[first:], mask)
            )
        return out


class PagedAttention(nn.Module):
    """Store the new keys/values, then attend over each sequence's cached context.

    Args:
        num_heads: query heads.
        num_kv_heads: key/value heads (grouped-query attention when fewer).
        head_dim: size of one head.
        scale: the factor on query-key products (None: ``head_dim ** -0.5``).
        window: keys a query sees, itself included (0: the whole context).
    """

    def __init__(
        self,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        scale: float | None = None,
        window: int = 0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = 1 / math.sqrt(head_dim) if scale is None else scale
        self.window = window
        self.k_cache = torch.empty(0)
        self.v_cache = torch.empty(0)  # [slots, kv_heads, head_dim], set by the model runner
        # decodes one by one over their own context lengths, so that the result is the same
        # bit for bit in any batch (set by the model runner for int8 activations, whose
        # rounding would turn the padded batch's last-bit differences into other tokens)
        self.batch_invariant = False
        # the compiled decode attention (None: torch's path); set by the model runner
        self.decode_kernel: Any = None

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """``q`` [T, heads, dim], ``k``/``v`` [T, kv_heads, dim] -> [T, heads, dim]."""
        self.k_cache.index_copy_(0, meta.slot_mapping, k.to(self.k_cache.dtype))
        self.v_cache.index_copy_(0, meta.slot_mapping, v.to(self.v_cache.dtype))
        if self.window:
            meta = meta.windowed(self.window)
        out = torch.empty_like(q)
        gqa = self.num_heads != self.num_kv_heads
        if meta.num_decodes and self.decode_kernel is not None:  # decode, compiled
            assert meta.decode_slots is not None and meta.decode_lengths is not None
            out[: meta.num_decodes] = self.decode_kernel(
                q[: meta.num_decodes],
                self.k_cache,
                self.v_cache,
                meta.decode_slots,
                meta.decode_lengths,
                self.scale,
            )
        elif meta.num_decodes and self.batch_invariant:  # decode, one sequence at a time
            assert meta.decode_slots is not None and meta.decode_mask is not None
            for i in range(meta.num_decodes):
                slots = meta.decode_slots[i][meta.decode_mask[i].view(-1)]
                kk = _gather(self.k_cache, slots).transpose(0, 1).unsqueeze(0).to(q.dtype)
                vv = _gather(self.v_cache, slots).transpose(0, 1).unsqueeze(0).to(q.dtype)
                o = sdpa(q[i : i + 1].unsqueeze(2), kk, vv, scale=self.scale, enable_gqa=gqa)
                out[i] = o[0, :, 0]
        elif meta.num_decodes:  # decode
            assert meta.decode_slots is not None
            kk = _gather(self.k_cache, meta.decode_slots).transpose(1, 2).to(q.dtype)
            vv = _gather(self.v_cache, meta.decode_slots).transpose(1, 2).to(q.dtype)
            qq = q[: meta.num_decodes].unsqueeze(2)
            o = sdpa(qq, kk, vv, attn_mask=meta.decode_mask, scale=self.scale, enable_gqa=gqa)
            out[: meta.num_decodes] = o.squeeze(2)
        for chunk in meta.prefills:  # prefill
            if self.batch_invariant and self.decode_kernel is not None:
                # each query row as a decode over its own causal context: a row's numbers
                # then never depend on how its prompt was cut into chunks or cached
                slots, lengths = _rows_as_decodes(chunk, self.window)
                rows = q[chunk.start : chunk.end]
                out[chunk.start : chunk.end] = self.decode_kernel(
                    rows, self.k_cache, self.v_cache, slots, lengths, self.scale
                )
                continue
            qq = q[chunk.start : chunk.end].transpose(0, 1).unsqueeze(0)
            if chunk.mask is None:  # the chunk is the whole context
                kk, vv = k[chunk.start : chunk.end], v[chunk.start : chunk.end]
            else:
                kk = _gather(self.k_cache, chunk.context_slots).to(q.dtype)
                vv = _gather(self.v_cache, chunk.context_slots).to(q.dtype)
            kk, vv = kk.transpose(0, 1).unsqueeze(0), vv.transpose(0, 1).unsqueeze(0)
            causal = chunk.mask is None
            o = sdpa(
                qq, kk, vv, attn_mask=chunk.mask, is_causal=causal, scale=self.scale, enable_gqa=gqa
            )
            out[chunk.start : chunk.end] = o[0].transpose(0, 1)
        return out


def _last_slots(
    slots: torch.Tensor, lengths: torch.Tensor, window: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The last ``window`` of each row's ``lengths`` real slots, left-aligned (``[B, W]``, the
    padding repeating a real slot), and their counts."""
    if int(lengths.max()) <= window:
        return slots, lengths
    kept = lengths.clamp(max=window)
    width = int(kept.max())
    index = (lengths - kept)[:, None] + torch.arange(width)[None, :]
    index = torch.minimum(index, (lengths - 1)[:, None])
    return slots.gather(1, index), kept


def _rows_as_decodes(chunk: PrefillChunk, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of a prefill chunk as a decode over its own causal context (within
    ``window`` keys, if any): ``(slots [rows, L], lengths [rows])`` for the decode kernel."""
    rows = chunk.end - chunk.start
    context = len(chunk.context_slots)
    slots = chunk.context_slots.expand(rows, context)
    lengths = torch.arange(context - rows + 1, context + 1)
    return _last_slots(slots, lengths, window) if window else (slots, lengths)


def _gather(cache: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """``cache[slots]`` (slots of any shape) through ``index_select``: 4-7x faster than
    advanced indexing for a step's context (60-1,100 slots of a 16,384-slot cache)."""
    return cache.index_select(0, slots.reshape(-1)).view(*slots.shape, *cache.shape[1:])


def decode_attention_kernel(
    dtype: torch.dtype, head_dim: int, num_heads: int, num_kv_heads: int
) -> Any:
    """The compiled decode attention for a KV cache of ``dtype`` and this head layout, or
    ``None`` where torch's path runs instead (a cache that is not float32, a head size that is
    not a multiple of 8, or no kernels on this machine)."""
    from ragloom.runtime.layers.kernels import available_kernels

    ops = available_kernels()
    if ops is None or dtype != torch.float32 or head_dim % 8 or num_heads % num_kv_heads:
        return None
    return ops.ragloom_attention.paged_decode_attention
