"""The paged KV cache's bookkeeping: which block holds which tokens, and who uses it.

The KV cache is cut into ``num_blocks`` blocks of ``block_size`` token slots. Each sequence owns a
*block table* (its blocks, in order). A block is in exactly one of three places:

- **used**: ``ref_count > 0`` (shared by every sequence whose prefix it holds);
- **cached**: ``ref_count == 0`` but its tokens are still in the prefix cache (kept in LRU
  order and evicted, oldest first, only when no free block is left);
- **free**: empty.

Automatic prefix caching: once a *full* block's keys and values are computed it gets a hash
chained on the previous block's hash and its own token ids (``compute_hash``); a later sequence
whose prompt starts with the same blocks reuses them instead of recomputing. Hashes are only
published after the KV is computed, so a lookup never finds a block that is still being filled.
The scheduler may also hand ``allocate`` blocks *in flight*: full blocks of another sequence's
prompt that the same step computes, which the new sequence then reads in that step (each layer
writes the whole step's keys and values before any attention reads them).

This module moves no tensors and knows nothing of the model; it does not decide *when* to
preempt (the scheduler does).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from dataclasses import dataclass

from ragloom.runtime.engine.sequence import Sequence

__all__ = ["Block", "BlockManager", "compute_hash"]


def compute_hash(token_ids: list[int], prefix_hash: int | None) -> int:
    """Hash of a full block, chained on the hash of the block before it.

    >>> compute_hash([1, 2], None) == compute_hash([1, 2], None) != compute_hash([1, 2], 7)
    True
    """
    h = hashlib.blake2b(digest_size=8)
    if prefix_hash is not None:
        h.update(prefix_hash.to_bytes(8, "little"))
    h.update(b"".join(t.to_bytes(4, "little") for t in token_ids))
    return int.from_bytes(h.digest(), "little")


@dataclass(slots=True)
class Block:
    """One block of KV slots."""

    block_id: int
    ref_count: int = 0
    hash: int | None = None
    token_ids: tuple[int, ...] = ()

    def reset(self) -> None:
        """Forget the block's contents."""
        self.ref_count = 0
        self.hash = None
        self.token_ids = ()


class BlockManager:
    """Allocates KV blocks to sequences, shares cached prefixes and evicts LRU cached blocks.

    Args:
        num_blocks: blocks in the KV cache.
        block_size: token slots per block.

    >>> from ragloom.runtime.llm import SamplingParams
    >>> bm = BlockManager(num_blocks=4, block_size=2)
    >>> seq = Sequence([1, 2, 3], SamplingParams(), block_size=2)
    >>> bm.allocate(seq); seq.block_table, bm.num_free_blocks
    ([0, 1], 2)
    """

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.hash_to_block_id: dict[int, int] = {}
        self.free_block_ids: deque[int] = deque(range(num_blocks))
        self.cached_block_ids: OrderedDict[int, None] = OrderedDict()  # LRU: oldest first

    @property
    def num_free_blocks(self) -> int:
        """Blocks a new allocation may take (free plus evictable cached ones)."""
        return len(self.free_block_ids) + len(self.cached_block_ids)

    @property
    def num_cached_blocks(self) -> int:
        """Blocks the prefix cache can hand out: a published hash, in use or idle (read-only)."""
        return len(self.hash_to_block_id)

    def _take_block(self) -> int:
        if self.free_block_ids:
            block_id = self.free_block_ids.popleft()
        else:  # evict the least recently used cached block
            block_id, _ = self.cached_block_ids.popitem(last=False)
            block = self.blocks[block_id]
            assert block.hash is not None
            del self.hash_to_block_id[block.hash]
            block.reset()
        self.blocks[block_id].ref_count = 1
        return block_id

    def _release_block(self, block_id: int) -> None:
        block = self.blocks[block_id]
        block.ref_count -= 1
        assert block.ref_count >= 0, f"block {block_id} released twice"
        if block.ref_count:
            return
        if block.hash is not None and self.hash_to_block_id.get(block.hash) == block_id:
            self.cached_block_ids[block_id] = None  # prefix cache keeps it
        else:
            block.reset()
            self.free_block_ids.append(block_id)

    def _prefix_hits(self, seq: Sequence) -> list[int]:
        """Cached blocks holding a prefix of ``seq`` (tokens it needs logits for are rerun)."""
        hits: list[int] = []
        prefix_hash: int | None = None
        for i in range(seq.num_reusable_tokens // self.block_size):
            token_ids = seq.block(i)
            prefix_hash = compute_hash(token_ids, prefix_hash)
            block_id = self.hash_to_block_id.get(prefix_hash)
            if block_id is None or self.blocks[block_id].token_ids != tuple(token_ids):
                break
            hits.append(block_id)
        return hits

    def _reused(self, seq: Sequence, in_flight: list[int] | None) -> tuple[list[int], int]:
        """The blocks ``seq`` starts with (prefix-cache hits, then any further ``in_flight``
        blocks) and how many of them are hits."""
        hits = self._prefix_hits(seq)
        return hits + (in_flight or [])[len(hits) :], len(hits)

    def can_allocate(self, seq: Sequence, in_flight: list[int] | None = None) -> bool:
        """Whether ``seq``'s whole token list fits, counting prefix-cache hits and the
        ``in_flight`` blocks it would share (see :meth:`allocate`)."""
        reused, _ = self._reused(seq, in_flight)
        idle = sum(1 for b in reused if self.blocks[b].ref_count == 0)
        return seq.num_blocks - len(reused) + idle <= self.num_free_blocks

    def allocate(self, seq: Sequence, in_flight: list[int] | None = None) -> None:
        """Give ``seq`` blocks for all its tokens, reusing cached prefix blocks.

        ``in_flight``: block ids (from block 0) holding ``seq``'s first full blocks of tokens,
        whose keys and values another sequence computes in the step ``seq`` first runs in.
        Those past the prefix-cache hits are shared too, and count as computed.
        """
        assert not seq.block_table, f"sequence {seq.seq_id} already has blocks"
        reused, hits = self._reused(seq, in_flight)
        for block_id in reused:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self.cached_block_ids[block_id]
            block.ref_count += 1
        new = [self._take_block() for _ in range(seq.num_blocks - len(reused))]
        seq.block_table = reused + new
        seq.num_cached_tokens = seq.num_computed_tokens = len(reused) * self.block_size
        seq.num_hashed_blocks = hits

    def deallocate(self, seq: Sequence) -> None:
        """Release ``seq``'s blocks (cached ones stay reusable) and reset its progress."""
        for block_id in reversed(seq.block_table):
            self._release_block(block_id)
        seq.block_table = []
        seq.num_computed_tokens = 0
        seq.num_hashed_blocks = 0

    def can_append(self, seq: Sequence) -> bool:
        """Whether ``seq`` can grow to hold all its tokens."""
        return seq.num_blocks - len(seq.block_table) <= self.num_free_blocks

    def may_append(self, seq: Sequence) -> None:
        """Add blocks so that every token of ``seq`` has a slot."""
        while len(seq.block_table) < seq.num_blocks:
            seq.block_table.append(self._take_block())

    def cache_computed_blocks(self, seq: Sequence) -> None:
        """Publish the hashes of ``seq``'s full blocks whose KV is now computed."""
        num_full = seq.num_computed_tokens // self.block_size
        for i in range(seq.num_hashed_blocks, num_full):
            block = self.blocks[seq.block_table[i]]
            prefix_hash = self.blocks[seq.block_table[i - 1]].hash if i else None
            token_ids = seq.block(i)
            block.hash = compute_hash(token_ids, prefix_hash)
            block.token_ids = tuple(token_ids)
            self.hash_to_block_id.setdefault(block.hash, block.block_id)
        seq.num_hashed_blocks = max(seq.num_hashed_blocks, num_full)

    def evict_cached(self, num_blocks: int | None = None) -> int:
        """Drop up to ``num_blocks`` (default all) unreferenced cached blocks; return how many."""
        num = len(self.cached_block_ids) if num_blocks is None else num_blocks
        evicted = 0
        while self.cached_block_ids and evicted < num:
            block_id, _ = self.cached_block_ids.popitem(last=False)
            block = self.blocks[block_id]
            assert block.hash is not None
            del self.hash_to_block_id[block.hash]
            block.reset()
            self.free_block_ids.append(block_id)
            evicted += 1
        return evicted
