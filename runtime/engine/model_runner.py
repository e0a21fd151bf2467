"""Runs one scheduled step of the model over the paged KV cache.

The runner owns the model and the KV cache tensors. Given the step's chunks (``(sequence,
number of tokens)``, decodes first), it packs their tokens, computes KV slots from the block
tables, builds the attention metadata, runs the model once and returns:

- logits of the last token of every sequence that is ready to sample;
- for scoring sequences, the summed log-probability of the tokens this chunk covers.

It does not choose what runs (the scheduler does) or sample (the sampler does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ragloom.errors import ConfigError
from ragloom.runtime.engine.config import EngineConfig
from ragloom.runtime.engine.sequence import Sequence
from ragloom.runtime.layers.activation import SiluAndMul
from ragloom.runtime.layers.attention import (
    AttentionMetadata,
    PrefillChunk,
    decode_attention_kernel,
)
from ragloom.runtime.layers.gguf_linear import use_gguf_weights
from ragloom.runtime.layers.kernels import available_kernels
from ragloom.runtime.layers.linear import choose_weight_layouts, quantize_linears
from ragloom.runtime.layers.rmsnorm import RMSNorm
from ragloom.runtime.layers.rotary import RotaryEmbedding
from ragloom.runtime.models.llama import LlamaForCausalLM
from ragloom.runtime.threads import default_num_threads

__all__ = ["ModelRunner", "StepOutput"]

Chunk = tuple[Sequence, int]


@dataclass(slots=True)
class StepOutput:
    """What a step produced.

    Attributes:
        sample_seqs: sequences whose next token is to be sampled, in ``logits`` row order.
        logits: ``[len(sample_seqs), vocab]`` float32.
        scores: log-probability added to each scoring sequence by this step.
        logit_rows: rows this step ran through the LM head (sampled and scored).
    """

    sample_seqs: list[Sequence]
    logits: torch.Tensor
    scores: list[tuple[Sequence, float]]
    logit_rows: int = 0


class ModelRunner:
    """Holds the model and the KV cache and runs steps.

    Args:
        model: a model from :mod:`ragloom.runtime.models`.
        config: engine settings (KV cache size, dtype, quantisation, threads, weight layout).
        gguf_weights: the GGUF file's quantised linear weights (needed by
            ``quantization="gguf"``, used by ``"auto"``; see :meth:`LoadedModel.gguf_linears`).
        gguf_checked: ``gguf_weights`` were already checked against ``model``'s float32
            weights (as :meth:`LoadedModel.gguf_linears` does), so they are swapped in without
            reading those weights again.

    Attributes:
        quantization: the format the linear layers run in (``"auto"`` resolved).
        weight_layouts: the layout chosen per float linear weight shape (``(out, in)`` ->
            name); empty when every linear layer is quantised.
    """

    def __init__(
        self,
        model: LlamaForCausalLM,
        config: EngineConfig,
        gguf_weights: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]
        | None = None,
        *,
        gguf_checked: bool = False,
    ) -> None:
        torch.set_num_threads(config.num_threads or default_num_threads())
        self.block_size = config.block_size
        dtype = getattr(torch, config.dtype)
        self.quantization = config.quantization
        if self.quantization == "auto":
            self.quantization = "gguf" if gguf_weights and config.dtype == "float32" else "none"
        if self.quantization in ("gguf", "gguf-q8"):
            if gguf_weights is None:
                raise ConfigError(
                    f"quantization={self.quantization!r} needs the model's GGUF weights"
                )
            q8 = self.quantization == "gguf-q8"
            use_gguf_weights(model, gguf_weights, int8_activations=q8, check=not gguf_checked)
            self.model = model
        else:
            self.model = quantize_linears(model.to(dtype), self.quantization)
        self.weight_layouts = choose_weight_layouts(
            self.model, config.weight_layout, batch_copy=config.batch_weight_copy
        )
        cfg = model.config
        self.vocab_size = cfg.vocab_size
        shape = (cfg.num_layers, 2, config.num_kv_blocks * config.block_size)
        self.kv_cache = torch.zeros(*shape, cfg.num_kv_heads, cfg.head_dim, dtype=dtype)
        kernel = (
            decode_attention_kernel(dtype, cfg.head_dim, cfg.num_heads, cfg.num_kv_heads)
            if config.layer_kernels
            else None
        )
        for i, attn in enumerate(model.attention_layers()):
            attn.k_cache, attn.v_cache = self.kv_cache[i, 0], self.kv_cache[i, 1]
            attn.batch_invariant = self.quantization == "gguf-q8"
            attn.decode_kernel = kernel
        ops = available_kernels() if config.layer_kernels else None
        for module in model.modules():
            if isinstance(module, RMSNorm):
                module.kernel = None if ops is None else ops.ragloom_layers.add_rms_norm
            elif isinstance(module, RotaryEmbedding):
                module.kernel = None if ops is None else ops.ragloom_layers.rotary
            elif isinstance(module, SiluAndMul):
                module.kernel = None if ops is None else ops.ragloom_layers.silu_mul

    def _slots(self, seq: Sequence, start: int, end: int) -> torch.Tensor:
        table = torch.tensor(seq.block_table, dtype=torch.long)
        slots = (table[:, None] * self.block_size + torch.arange(self.block_size)).flatten()
        return slots[start:end]

    def _metadata(self, chunks: list[Chunk]) -> tuple[list[int], list[int], AttentionMetadata]:
        token_ids: list[int] = []
        positions: list[int] = []
        slot_parts: list[torch.Tensor] = []
        decode_ctx: list[torch.Tensor] = []
        prefills: list[PrefillChunk] = []
        for seq, n in chunks:
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + n
            row = len(token_ids)
            token_ids += seq.token_ids[start:end]
            positions += range(start, end)
            context = self._slots(seq, 0, end)
            slot_parts.append(context[start:end])
            if n == 1 and not prefills:  # decode
                decode_ctx.append(context)
                continue
            mask = None
            if start:
                q_pos = torch.arange(start, end)[:, None]
                mask = torch.arange(end)[None, :] <= q_pos
            prefills.append(PrefillChunk(row, row + n, context, mask))
        meta = AttentionMetadata(torch.cat(slot_parts), len(decode_ctx), prefills=prefills)
        if decode_ctx:
            lengths = torch.tensor([len(c) for c in decode_ctx])
            padded = torch.nn.utils.rnn.pad_sequence(decode_ctx, batch_first=True)
            meta.decode_slots = padded
            mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
            meta.decode_mask = mask[:, None, None, :]
            meta.decode_lengths = lengths
        return token_ids, positions, meta

    @torch.inference_mode()
    def run(self, chunks: list[Chunk]) -> StepOutput:
        """Run the packed chunks (decodes first) through the model once."""
        token_ids, positions, meta = self._metadata(chunks)
        hidden = self.model(torch.tensor(token_ids), torch.tensor(positions), meta)
        sample_rows: list[int] = []
        sample_seqs: list[Sequence] = []
        scores: list[tuple[Sequence, float]] = []
        row = scored_rows = 0
        for seq, n in chunks:
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + n
            if seq.score_from is not None:  # scoring: log p(token[p + 1] | prefix) in this chunk
                first = max(start, seq.score_from - 1)
                last = min(end, seq.num_tokens - 1)
                if last > first:
                    rows = hidden[row + first - start : row + last - start]
                    scored_rows += rows.shape[0]
                    logp = torch.log_softmax(self.model.compute_logits(rows), dim=-1)
                    targets = torch.tensor(seq.token_ids[first + 1 : last + 1])
                    scores.append((seq, float(logp.gather(1, targets[:, None]).sum())))
            elif end == seq.num_tokens:  # ready to sample
                sample_rows.append(row + n - 1)
                sample_seqs.append(seq)
            row += n
        logits = self.model.compute_logits(hidden[sample_rows]) if sample_rows else hidden[:0]
        return StepOutput(sample_seqs, logits, scores, len(sample_rows) + scored_rows)
