"""ragloom's prefix-state cache: saved KV states of token prefixes, LRU-bounded by bytes.

Agents send many prompts that share a long head (the planner's system prompt with tool
descriptions and examples, the joiner's prompt). A backend that can save and restore the KV
state of a sequence (llama.cpp: ``get_state_seq_data``/``set_state_seq_data``) keeps those
states here, keyed by the exact tokens they cover, and asks for the longest one that is a
prefix of a new prompt.

Prefixes are cut on a grid of ``block`` tokens: a state is only ever saved or reused at a
multiple of ``block``. Because the backend also prefills on that grid, a restored run computes
exactly the same batches as a cold run, so the greedy output is the same, token for token.

This module holds bytes and token ids only; it knows nothing of llama.cpp.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PrefixStateCache", "common_prefix_len"]


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """The number of leading tokens ``a`` and ``b`` share.

    >>> common_prefix_len([1, 2, 3], [1, 2, 4, 5])
    2
    """
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


@dataclass(frozen=True, slots=True)
class _Entry:
    tokens: tuple[int, ...]
    state: bytes


class PrefixStateCache:
    """Saved sequence states keyed by the token prefix they cover.

    Args:
        max_bytes: evict least-recently-used states beyond this many bytes in total.
        block: states cover a multiple of this many tokens.

    >>> cache = PrefixStateCache(max_bytes=100, block=2)
    >>> cache.store([1, 2, 3, 4], b"kv")
    >>> cache.lookup([1, 2, 3, 9, 9], limit=4)
    (2, b'kv')
    """

    def __init__(self, max_bytes: int, block: int):
        self.max_bytes = max_bytes
        self.block = block
        self.num_hits = 0
        self.num_misses = 0
        self._entries: OrderedDict[tuple[int, ...], _Entry] = OrderedDict()
        self._nbytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by all saved states."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._entries)

    def aligned(self, n: int) -> int:
        """``n`` rounded down to the block grid."""
        return n - n % self.block

    def lookup(self, tokens: Sequence[int], *, limit: int) -> tuple[int, bytes | None]:
        """The longest saved state that is a prefix of ``tokens``, reusing at most ``limit``.

        Returns:
            ``(n, state)``: the state covers ``n`` tokens (a grid multiple, ``n <= limit``) of
            which the first ``n`` are to be kept; ``(0, None)`` when nothing matches.
        """
        best, best_entry = 0, None
        for entry in self._entries.values():
            n = self.aligned(min(common_prefix_len(entry.tokens, tokens), limit))
            if n > best:
                best, best_entry = n, entry
        if best_entry is None:
            self.num_misses += 1
            return 0, None
        self.num_hits += 1
        self._entries.move_to_end(best_entry.tokens)
        return best, best_entry.state

    def store(self, tokens: Sequence[int], state: bytes) -> None:
        """Save ``state`` for exactly ``tokens`` (a grid multiple long), evicting LRU states."""
        key = tuple(tokens)
        if not key or len(key) % self.block or len(state) > self.max_bytes or self.covers(key):
            return
        for old in [k for k in self._entries if key[: len(k)] == k]:
            self._drop(old)  # a longer state for the same head makes the shorter one redundant
        self._entries[key] = _Entry(key, state)
        self._nbytes += len(state)
        while self._nbytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def covers(self, tokens: Sequence[int]) -> bool:
        """Whether a saved state already covers ``tokens`` (so saving it again is waste)."""
        key = tuple(tokens)
        return any(k[: len(key)] == key for k in self._entries)

    def clear(self) -> None:
        """Forget every saved state."""
        self._entries.clear()
        self._nbytes = 0

    def _drop(self, key: tuple[int, ...]) -> None:
        self._nbytes -= len(self._entries.pop(key).state)
