"""Pick the next token of each sequence from its logits.

Greedy when ``temperature == 0`` (argmax, batched), else temperature + top-p (nucleus) sampling
with a per-sequence ``torch.Generator`` seeded from ``SamplingParams.seed``, so a seeded request
draws the same tokens whatever it is batched with. A sequence under a grammar has the disallowed
tokens masked to ``-inf`` first. Stop strings and max tokens are the engine's business.
"""

from __future__ import annotations

import torch

from ragloom.runtime.engine.sequence import Sequence

__all__ = ["Sampler", "top_p_filter"]


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero the tail of ``probs`` [vocab] outside the smallest set holding ``top_p`` mass.

    >>> top_p_filter(torch.tensor([0.5, 0.3, 0.2]), 0.6).tolist()
    [0.5, 0.30000001192092896, 0.0]
    """
    if top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(descending=True)
    before = sorted_probs.cumsum(0) - sorted_probs  # mass of the strictly better tokens
    sorted_probs[before >= top_p] = 0.0
    return torch.zeros_like(probs).scatter_(0, order, sorted_probs)


class Sampler:
    """Samples one token per row of logits."""

    @torch.inference_mode()
    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
        """Next token ids for ``seqs`` given ``logits`` [len(seqs), vocab] (float32)."""
        for row, seq in enumerate(seqs):
            if seq.constraint is not None:  # constrained decoding
                allowed = torch.from_numpy(seq.constraint.allowed_mask())
                logits[row, : allowed.numel()].masked_fill_(~allowed, float("-inf"))
                logits[row, allowed.numel() :] = float("-inf")
        tokens = logits.argmax(dim=-1).tolist()
        for row, seq in enumerate(seqs):
            if seq.params.temperature > 0:
                tokens[row] = self._sample(logits[row], seq)
        return tokens

    def _sample(self, logits: torch.Tensor, seq: Sequence) -> int:
        if seq.generator is None:
            seq.generator = torch.Generator()
            if seq.params.seed is None:
                seq.generator.seed()
            else:
                seq.generator.manual_seed(seq.params.seed)
        probs = torch.softmax(logits / seq.params.temperature, dim=-1)
        probs = top_p_filter(probs, seq.params.top_p)
        return int(torch.multinomial(probs, 1, generator=seq.generator).item())
