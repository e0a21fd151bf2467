"""Decides which sequences run in the next step, and how many of their tokens.

Continuous batching with chunked prefill under a per-step token budget
(``max_num_batched_tokens``), in this order:

1. **decode**: every running sequence with one uncomputed token gets a slot for it. When the KV
   cache is full, the most recently admitted running sequence is preempted: its blocks are
   released (full blocks stay in the prefix cache) and it goes back to the front of the queue
   to be recomputed later. Nothing fails for lack of blocks.
2. **prefill**: running sequences part-way through their prompt get the next chunk.
3. **admit**: waiting sequences are admitted (prefix-cache hits skip their cached blocks) while
   the budget, ``max_num_seqs`` and free blocks allow. Concurrent requests behind one shared
   prefix compute it once: a sequence whose prompt starts with full blocks that a prefill of
   this step computes shares them and runs its own tokens in the same step (each layer writes
   the step's keys and values before its attention reads them); one that would share blocks a
   prefill computes only in a later step waits for them.

The scheduler does not run the model or sample.
"""

from __future__ import annotations

from collections import deque

from ragloom.runtime.engine.block_manager import BlockManager
from ragloom.runtime.engine.config import EngineConfig
from ragloom.runtime.engine.sequence import Sequence, SequenceStatus

__all__ = ["Scheduler"]

Chunk = tuple[Sequence, int]


class Scheduler:
    """Queues sequences and picks each step's work.

    Args:
        config: engine settings (budget, batch width, KV cache size).
    """

    def __init__(self, config: EngineConfig) -> None:
        self.max_num_seqs = config.max_num_seqs
        self.max_num_batched_tokens = config.max_num_batched_tokens
        self.block_manager = BlockManager(config.num_kv_blocks, config.block_size)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def is_finished(self) -> bool:
        """No sequence is waiting or running."""
        return not self.waiting and not self.running

    def add(self, seq: Sequence) -> None:
        """Queue a new sequence."""
        self.waiting.append(seq)

    def schedule(self) -> list[Chunk]:
        """The chunks of the next step: decodes first, then prefill chunks."""
        scheduled: list[Chunk] = []
        budget = self.max_num_batched_tokens
        for seq in [s for s in self.running if not s.is_prefill]:  # decode
            if (
                seq.status is SequenceStatus.RUNNING
                and budget > 0
                and self._reserve(seq, scheduled)
            ):
                scheduled.append((seq, 1))
                budget -= 1
        reach: dict[int, int] = {}  # prefills of this step: tokens computed once it has run
        for seq in [s for s in self.running if s.is_prefill]:  # prefill, continued
            if budget <= 0:
                break
            num = min(seq.num_uncomputed_tokens, budget)
            scheduled.append((seq, num))
            reach[seq.seq_id] = seq.num_computed_tokens + num
            budget -= num
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:  # admit
            seq = self.waiting[0]
            shared = self._in_flight_prefix(seq, reach)
            if shared is None or not self.block_manager.can_allocate(seq, shared):
                break
            self.waiting.popleft()
            self.block_manager.allocate(seq, shared)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            num = min(seq.num_uncomputed_tokens, budget)
            scheduled.append((seq, num))
            reach[seq.seq_id] = seq.num_computed_tokens + num
            budget -= num
        return scheduled

    def _in_flight_prefix(self, seq: Sequence, reach: dict[int, int]) -> list[int] | None:
        """The blocks of running prefills that will hold ``seq``'s leading full blocks once this
        step has run (the longest such run; ``[]`` if none), or ``None`` if ``seq`` should wait:
        a prefill computes full blocks it could reuse only in a later step.

        Sharing them in this step, or admitting ``seq`` once a later step has computed them,
        saves recomputing them: N concurrent calls behind one long shared prompt prefill it once.
        """
        size = self.block_manager.block_size
        best: list[int] = []
        for other in self.running:
            if not other.is_prefill:  # (a decoding sequence's full blocks are in the cache)
                continue
            limit = min(seq.num_reusable_tokens, other.num_tokens) // size  # in blocks
            common = 0
            while common < limit and seq.block(common) == other.block(common):
                common += 1
            if common > reach.get(other.seq_id, other.num_computed_tokens) // size:
                return None
            if common > len(best):
                best = other.block_table[:common]
        return best

    def _reserve(self, seq: Sequence, scheduled: list[Chunk]) -> bool:
        """Make room for ``seq``'s next token, preempting later sequences; False if ``seq`` went."""
        busy = {s.seq_id for s, _ in scheduled}
        while not self.block_manager.can_append(seq):
            victims = [s for s in self.running if s.seq_id not in busy and s is not seq]
            self.preempt(victims[-1] if victims else seq)
            if not victims:
                return False
        self.block_manager.may_append(seq)
        return True

    def preempt(self, seq: Sequence) -> None:
        """Release ``seq``'s blocks and queue it first, to be recomputed."""
        self.running.remove(seq)
        self.block_manager.deallocate(seq)
        seq.logprob = 0.0  # a scoring sequence is scored again from the start
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def finish(self, seq: Sequence) -> None:
        """Drop a finished or cancelled sequence and release its blocks."""
        if seq in self.running:
            self.running.remove(seq)
            self.block_manager.deallocate(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
