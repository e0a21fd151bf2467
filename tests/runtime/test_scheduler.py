"""The scheduler's prefix sharing between requests that arrive together (no model runs here:
a step is "run" by advancing each chunk's sequence, as the engine does after the model)."""

from __future__ import annotations

from ragloom.runtime.engine.config import EngineConfig
from ragloom.runtime.engine.scheduler import Chunk, Scheduler
from ragloom.runtime.engine.sequence import Sequence
from ragloom.runtime.llm import SamplingParams

BLOCK = 4


def scheduler(budget: int) -> Scheduler:
    return Scheduler(
        EngineConfig(block_size=BLOCK, kv_cache_tokens=256, max_num_batched_tokens=budget)
    )


def add(sched: Scheduler, token_ids: list[int]) -> Sequence:
    seq = Sequence(token_ids, SamplingParams(), block_size=BLOCK)
    sched.add(seq)
    return seq


def written_blocks(chunks: list[Chunk]) -> list[set[int]]:
    """The blocks each chunk writes keys and values into."""
    out = []
    for seq, n in chunks:
        start, end = seq.num_computed_tokens, seq.num_computed_tokens + n
        out.append({seq.block_table[i // BLOCK] for i in range(start, end)})
    return out


def run(sched: Scheduler, chunks: list[Chunk]) -> None:
    writes = written_blocks(chunks)
    for i, a in enumerate(writes):  # no block is filled by two sequences in one step
        assert all(not a & b for b in writes[i + 1 :])
    for seq, n in chunks:
        seq.num_computed_tokens += n
        sched.block_manager.cache_computed_blocks(seq)


def test_requests_behind_one_prefix_share_its_blocks_in_the_step_that_computes_them() -> None:
    sched = scheduler(budget=64)
    prefix = list(range(100, 108))  # two full blocks
    first = add(sched, [*prefix, 1, 2, 3])
    second = add(sched, [*prefix, 5, 6, 7, 8, 9])
    third = add(sched, [*prefix, 5, 6, 7, 8, 4, 4])  # also shares `second`'s third block
    chunks = sched.schedule()
    assert [(s, n) for s, n in chunks] == [(first, 11), (second, 5), (third, 2)]
    assert second.block_table[:2] == first.block_table[:2]
    assert third.block_table[:3] == second.block_table[:3]
    assert (second.num_cached_tokens, third.num_cached_tokens) == (8, 12)
    assert sched.block_manager.blocks[first.block_table[0]].ref_count == 3
    run(sched, chunks)
    # the shared blocks are published once, with the hashes each sequence computes for them
    for seq in (first, second, third):
        assert seq.num_hashed_blocks == seq.num_computed_tokens // BLOCK


def test_a_request_waits_for_prefix_blocks_a_later_step_computes() -> None:
    sched = scheduler(budget=10)
    prefix = list(range(100, 112))  # three full blocks
    first = add(sched, [*prefix, 1, 2])
    second = add(sched, [*prefix, 3])
    chunks = sched.schedule()  # `first` gets 10 tokens: two of the three shared blocks
    assert chunks == [(first, 10)] and second in sched.waiting
    run(sched, chunks)
    chunks = sched.schedule()  # `first` finishes its prompt; `second` shares all three blocks
    assert chunks == [(first, 4), (second, 1)]
    assert second.block_table[:3] == first.block_table[:3] and second.num_cached_tokens == 12
    run(sched, chunks)


def test_a_request_sharing_nothing_in_flight_is_admitted_as_before() -> None:
    sched = scheduler(budget=64)
    first = add(sched, list(range(100, 110)))
    other = add(sched, list(range(200, 207)))
    chunks = sched.schedule()
    assert chunks == [(first, 10), (other, 7)]
    assert not set(first.block_table) & set(other.block_table)
    run(sched, chunks)
