"""One request's state inside the engine: its tokens, its KV blocks and how far it has run.

A :class:`Sequence` holds the prompt and the generated tokens in one list. The engine walks it
forward in chunks: ``num_computed_tokens`` counts the tokens whose keys and values are already
in the paged KV cache (prefix-cache hits included), so the next chunk to run is
``token_ids[num_computed_tokens:num_tokens]``. A sequence is *in prefill* while more than one
token is uncomputed and *decoding* when only the last sampled token is.

This module knows nothing of torch, blocks' contents or the model; the block manager fills
``block_table`` and the scheduler moves ``status``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto
from itertools import count
from typing import Any, Literal

from ragloom.runtime.llm import SamplingParams

__all__ = ["FinishReason", "Sequence", "SequenceStatus"]

FinishReason = Literal["stop", "length", "cancelled"]
_ids = count()


class SequenceStatus(Enum):
    """Where a sequence is in its life."""

    WAITING = auto()
    RUNNING = auto()
    FINISHED = auto()


@dataclass(eq=False)
class Sequence:
    """A request being served.

    Args:
        token_ids: the prompt tokens (generated tokens are appended here).
        params: sampling parameters of the request.
        block_size: tokens per KV block.
        score_from: when set, the sequence only scores ``token_ids[score_from:]`` (their summed
            log-probability lands in ``logprob``) and generates nothing.

    >>> seq = Sequence([1, 2, 3], SamplingParams(max_tokens=4), block_size=2)
    >>> seq.num_blocks, seq.block(1), seq.is_prefill
    (2, [3], True)
    """

    token_ids: list[int]
    params: SamplingParams
    block_size: int
    score_from: int | None = None
    seq_id: int = field(default_factory=lambda: next(_ids))
    status: SequenceStatus = SequenceStatus.WAITING
    block_table: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0
    num_hashed_blocks: int = 0
    finish_reason: FinishReason | None = None
    logprob: float = 0.0
    constraint: Any = None
    generator: Any = None
    num_prompt_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.token_ids = list(self.token_ids)
        self.num_prompt_tokens = len(self.token_ids)

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_tokens(self) -> int:
        """Prompt plus generated tokens."""
        return len(self.token_ids)

    @property
    def num_completion_tokens(self) -> int:
        """Tokens generated so far."""
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def completion_token_ids(self) -> list[int]:
        """The generated tokens."""
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_blocks(self) -> int:
        """KV blocks needed to hold every token."""
        return (len(self.token_ids) + self.block_size - 1) // self.block_size

    @property
    def num_uncomputed_tokens(self) -> int:
        """Tokens whose keys and values are not in the cache yet."""
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def num_reusable_tokens(self) -> int:
        """Leading tokens that may come from the prefix cache: all but the last, and for a
        scoring sequence none whose logits it needs."""
        last = self.num_tokens - 1
        return last if self.score_from is None else min(last, self.score_from - 1)

    @property
    def is_prefill(self) -> bool:
        """More than the last sampled token still has to run."""
        return self.num_uncomputed_tokens > 1

    @property
    def is_finished(self) -> bool:
        """The sequence has stopped for good."""
        return self.status is SequenceStatus.FINISHED

    def block(self, index: int) -> list[int]:
        """Token ids stored in block ``index`` of this sequence."""
        start = index * self.block_size
        return self.token_ids[start : start + self.block_size]

    def append_token(self, token_id: int) -> None:
        """Record one generated token (its KV is computed by the next step)."""
        self.token_ids.append(token_id)

    def finish(self, reason: FinishReason) -> None:
        """Mark the sequence finished with ``reason``."""
        self.status = SequenceStatus.FINISHED
        self.finish_reason = reason
