"""The block manager under random allocate / append / share-prefix / share-in-flight / free /
evict sequences."""

from __future__ import annotations

from collections import Counter

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from ragloom.runtime.engine.block_manager import BlockManager, compute_hash
from ragloom.runtime.engine.sequence import Sequence
from ragloom.runtime.llm import SamplingParams

NUM_BLOCKS, BLOCK_SIZE = 10, 2
tokens = st.lists(st.integers(0, 2), min_size=1, max_size=9)  # tiny alphabet: many shared prefixes


class BlockManagerMachine(RuleBasedStateMachine):
    seqs = Bundle("seqs")

    def __init__(self) -> None:
        super().__init__()
        self.bm = BlockManager(NUM_BLOCKS, BLOCK_SIZE)
        self.live: list[Sequence] = []

    def _admit(
        self, token_ids: list[int], in_flight: list[int] | None = None, run: bool = True
    ) -> Sequence | None:
        seq = Sequence(token_ids, SamplingParams(), block_size=BLOCK_SIZE)
        if not self.bm.can_allocate(seq, in_flight):
            assert self.bm.num_free_blocks < seq.num_blocks  # it really did not fit
            return None
        self.bm.allocate(seq, in_flight)
        assert len(seq.block_table) == seq.num_blocks
        assert seq.num_cached_tokens % BLOCK_SIZE == 0 and seq.num_cached_tokens < seq.num_tokens
        assert seq.num_cached_tokens >= BLOCK_SIZE * len(in_flight or [])
        for i in range(seq.num_cached_tokens // BLOCK_SIZE):  # reused blocks hold its tokens
            block = self.bm.blocks[seq.block_table[i]]
            assert block.hash is None or block.token_ids == tuple(seq.block(i))
        self.live.append(seq)
        if run:
            self.run(seq)
        return seq

    @rule(seq=seqs)
    def run(self, seq: Sequence | None) -> None:
        """The step that computes ``seq``'s uncomputed tokens ran."""
        if seq is None or seq not in self.live:
            return
        seq.num_computed_tokens = seq.num_tokens
        self.bm.cache_computed_blocks(seq)

    @rule(target=seqs, token_ids=tokens)
    def allocate(self, token_ids: list[int]) -> Sequence | None:
        return self._admit(token_ids)

    @rule(target=seqs, base=seqs, cut=st.integers(0, 9), extra=tokens)
    def share_prefix(self, base: Sequence | None, cut: int, extra: list[int]) -> Sequence | None:
        if base is None:
            return None
        return self._admit(base.token_ids[:cut] + extra)

    @rule(target=seqs, base=seqs, cut=st.integers(0, 9), extra=tokens, run=st.booleans())
    def share_in_flight(
        self, base: Sequence | None, cut: int, extra: list[int], run: bool
    ) -> Sequence | None:
        """A new sequence takes ``base``'s blocks for their common full blocks, computed or
        not (as the scheduler hands over blocks a step is about to fill)."""
        if base is None or base not in self.live:
            return None
        token_ids = base.token_ids[:cut] + extra
        limit = min(len(token_ids) - 1, base.num_tokens) // BLOCK_SIZE  # (the last token reruns)
        common = 0
        probe = Sequence(token_ids, SamplingParams(), block_size=BLOCK_SIZE)
        while common < limit and probe.block(common) == base.block(common):
            common += 1
        return self._admit(token_ids, base.block_table[:common], run)

    @rule(seq=seqs, token=st.integers(0, 2))
    def append(self, seq: Sequence | None, token: int) -> None:
        if seq is None or seq not in self.live:
            return
        seq.append_token(token)
        if not self.bm.can_append(seq):
            seq.token_ids.pop()  # the scheduler would preempt instead
            return
        self.bm.may_append(seq)
        seq.num_computed_tokens = seq.num_tokens
        self.bm.cache_computed_blocks(seq)

    @rule(seq=consumes(seqs))
    def free(self, seq: Sequence | None) -> None:
        if seq is None or seq not in self.live:
            return
        self.live.remove(seq)
        self.bm.deallocate(seq)
        assert seq.block_table == [] and seq.num_computed_tokens == 0

    @rule(num=st.integers(0, NUM_BLOCKS))
    def evict(self, num: int) -> None:
        cached = len(self.bm.cached_block_ids)
        assert self.bm.evict_cached(num) == min(num, cached)

    @invariant()
    def reference_counts_match_block_tables(self) -> None:
        users = Counter(b for seq in self.live for b in seq.block_table)
        for block in self.bm.blocks:
            assert block.ref_count == users[block.block_id], block

    @invariant()
    def every_block_is_used_cached_or_free_exactly_once(self) -> None:
        used = {b.block_id for b in self.bm.blocks if b.ref_count > 0}
        cached = list(self.bm.cached_block_ids)
        free = list(self.bm.free_block_ids)
        assert len(set(free)) == len(free) and len(set(cached)) == len(cached)
        assert not (used & set(cached)) and not (used & set(free)) and not set(cached) & set(free)
        assert len(used) + len(cached) + len(free) == NUM_BLOCKS  # no block leaked

    @invariant()
    def hash_table_points_at_matching_blocks(self) -> None:
        for h, block_id in self.bm.hash_to_block_id.items():
            assert self.bm.blocks[block_id].hash == h
        for block_id in self.bm.cached_block_ids:
            block = self.bm.blocks[block_id]
            assert block.hash is not None and self.bm.hash_to_block_id[block.hash] == block_id

    @invariant()
    def hashed_blocks_hold_their_sequence_tokens(self) -> None:
        for seq in self.live:
            prefix = None
            for i in range(seq.num_hashed_blocks):
                block = self.bm.blocks[seq.block_table[i]]
                prefix = compute_hash(seq.block(i), prefix)
                assert block.hash == prefix and block.token_ids == tuple(seq.block(i))


TestBlockManager = BlockManagerMachine.TestCase
TestBlockManager.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_prefix_is_reused_after_free_and_evicted_last_in_lru_order() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    first = Sequence([5, 6, 7, 8, 9], SamplingParams(), block_size=2)
    bm.allocate(first)
    first.num_computed_tokens = 5
    bm.cache_computed_blocks(first)
    bm.deallocate(first)
    assert len(bm.cached_block_ids) == 2 and bm.num_free_blocks == 4
    again = Sequence([5, 6, 7, 8, 1, 2], SamplingParams(), block_size=2)
    bm.allocate(again)
    assert again.num_cached_tokens == 4 and again.block_table[:2] == first_blocks(bm, [5, 6, 7, 8])


def first_blocks(bm: BlockManager, token_ids: list[int]) -> list[int]:
    h0 = compute_hash(token_ids[:2], None)
    h1 = compute_hash(token_ids[2:4], h0)
    return [bm.hash_to_block_id[h0], bm.hash_to_block_id[h1]]


def test_full_prompt_hit_still_recomputes_the_last_token() -> None:
    bm = BlockManager(num_blocks=8, block_size=2)
    seq = Sequence([1, 2, 3, 4], SamplingParams(), block_size=2)
    bm.allocate(seq)
    seq.num_computed_tokens = 4
    bm.cache_computed_blocks(seq)
    twin = Sequence([1, 2, 3, 4], SamplingParams(), block_size=2)
    bm.allocate(twin)
    assert twin.num_computed_tokens == 2  # the last block is recomputed for its logits
    assert twin.block_table[0] == seq.block_table[0] and twin.block_table[1] != seq.block_table[1]
