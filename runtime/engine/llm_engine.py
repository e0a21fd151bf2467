"""The engine: token ids in, tokens out, one scheduled step at a time.

``add_request`` queues a sequence (checked against the context window, with its grammar
compiled); ``step`` schedules, runs the model once, samples and applies the stop rules
(end-of-sequence, stop strings, max tokens, context length, a finished grammar); ``abort``
cancels a sequence and frees its blocks. ``generate`` runs steps until a batch is done.

Requests may be added and aborted from other threads: they wait in an inbox that ``step``
drains first, so only the thread calling ``step`` touches the scheduler. Text, chat templates
and the LLM protocol live in :class:`ragloom.runtime.torch_llm.TorchLLM`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

from ragloom.errors import ConfigError, ContextWindowError
from ragloom.runtime.engine.config import EngineConfig
from ragloom.runtime.engine.model_runner import ModelRunner
from ragloom.runtime.engine.sampler import Sampler
from ragloom.runtime.engine.scheduler import Scheduler
from ragloom.runtime.engine.sequence import Sequence
from ragloom.runtime.layers.gguf_linear import KernelUnavailableError, gguf_kernel
from ragloom.runtime.llm import Grammar, SamplingParams
from ragloom.runtime.models.gguf_loader import LoadedModel

__all__ = ["EngineStats", "LLMEngine"]

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class EngineStats:
    """What an engine has run since it was made (counters only grow).

    Attributes:
        steps: model steps run.
        tokens_computed: token rows run through the model: uncached prompt tokens (recomputed
            ones after a preemption included) and one per decode.
        logit_rows: rows run through the LM head (one per sampled token, plus scored rows).
        tokens_generated: tokens sampled.
    """

    steps: int = 0
    tokens_computed: int = 0
    logit_rows: int = 0
    tokens_generated: int = 0


class LLMEngine:
    """Continuous-batching engine over a paged, prefix-cached KV cache.

    Args:
        loaded: a model from :func:`ragloom.runtime.models.gguf_loader.load_gguf`.
        config: engine settings.

    Attributes:
        stats: counters of the work run so far (:class:`EngineStats`), updated by ``step``.

    >>> engine = LLMEngine(load_gguf(resolve_model("smollm2")), EngineConfig())  # doctest: +SKIP
    >>> engine.generate([[1, 2, 3]], SamplingParams(max_tokens=4))[0].completion_token_ids
    ... # doctest: +SKIP
    """

    def __init__(self, loaded: LoadedModel, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.tokenizer = loaded.tokenizer
        self.eos_token_ids = frozenset(loaded.eos_token_ids)
        self.eos_token_id = loaded.eos_token_ids[0]
        limit = self.config.max_model_len or loaded.config.context_length
        self.max_model_len = min(limit, self.config.kv_cache_tokens)
        gguf = _gguf_weights(loaded, self.config)  # (checked by loaded.gguf_linears)
        self.runner = ModelRunner(loaded.model, self.config, gguf, gguf_checked=True)
        self.scheduler = Scheduler(self.config)
        self.sampler = Sampler()
        self._grammars: dict[Grammar, Any] = {}
        self._inbox: list[tuple[str, Sequence]] = []
        self._lock = threading.Lock()
        self.stats = EngineStats()

    def add_request(
        self, token_ids: Seq[int], params: SamplingParams, *, score_from: int | None = None
    ) -> Sequence:
        """Queue a request; return its sequence (generated tokens are appended to it).

        Raises:
            ConfigError: the prompt is empty.
            ContextWindowError: the prompt leaves no room for a token in the context window.
        """
        if not token_ids:
            raise ConfigError("the prompt is empty: give at least one token")
        limit = self.max_model_len + (score_from is not None)
        if len(token_ids) >= limit:
            raise ContextWindowError(
                f"prompt has {len(token_ids)} tokens but the context window is "
                f"{self.max_model_len}: shorten the prompt or raise max_model_len/kv_cache_tokens"
            )
        seq = Sequence(list(token_ids), params, self.config.block_size, score_from=score_from)
        if params.grammar is not None and score_from is None:
            seq.constraint = self._constraint(params.grammar).new_state()
        with self._lock:
            self._inbox.append(("add", seq))
        return seq

    def abort(self, seq: Sequence) -> None:
        """Cancel ``seq`` at the next step; its blocks are freed."""
        with self._lock:
            self._inbox.append(("abort", seq))

    def cancel_now(self, seq: Sequence) -> None:
        """Cancel ``seq`` at once (only from the thread that calls :meth:`step`)."""
        self._drain_inbox()
        if not seq.is_finished:
            self._finish(seq, "cancelled")

    def has_work(self) -> bool:
        """Whether a request is queued, running or about to arrive."""
        return bool(self._inbox) or not self.scheduler.is_finished()

    def step(self) -> list[Sequence]:
        """Run one step; return the sequences that advanced or finished in it."""
        changed = self._drain_inbox()
        chunks = self.scheduler.schedule()
        if not chunks:
            return changed
        out = self.runner.run(chunks)
        stats = self.stats
        stats.steps += 1
        stats.tokens_computed += sum(num for _, num in chunks)
        stats.logit_rows += out.logit_rows
        stats.tokens_generated += len(out.sample_seqs)
        for seq, num in chunks:
            seq.num_computed_tokens += num
            self.scheduler.block_manager.cache_computed_blocks(seq)
        for seq, logprob in out.scores:  # scoring
            seq.logprob += logprob
        for seq, _ in chunks:
            if seq.score_from is not None and seq.num_computed_tokens == seq.num_tokens:
                self._finish(seq, "stop")
                changed.append(seq)
        tokens = self.sampler(out.logits, out.sample_seqs) if out.sample_seqs else []
        for seq, token in zip(out.sample_seqs, tokens, strict=True):
            self._append(seq, token)
            changed.append(seq)
        return changed

    def generate(self, prompts: Seq[Seq[int]], params: SamplingParams) -> list[Sequence]:
        """Run ``prompts`` (token ids) to completion as one batch."""
        seqs = [self.add_request(p, params) for p in prompts]
        while not all(s.is_finished for s in seqs):
            self.step()
        return seqs

    def _drain_inbox(self) -> list[Sequence]:
        with self._lock:
            inbox, self._inbox = self._inbox, []
        cancelled = []
        for action, seq in inbox:
            if action == "add":
                self.scheduler.add(seq)
            elif not seq.is_finished:
                self._finish(seq, "cancelled")
                cancelled.append(seq)
        return cancelled

    def _append(self, seq: Sequence, token: int) -> None:
        seq.append_token(token)
        params = seq.params
        if token in self.eos_token_ids:
            self._finish(seq, "stop")
            return
        if seq.constraint is not None:
            seq.constraint.advance(token)
            if seq.constraint.is_finished():
                self._finish(seq, "stop")
                return
        if params.stop and self._hit_stop(seq):
            self._finish(seq, "stop")
        elif seq.num_completion_tokens >= params.max_tokens or seq.num_tokens >= self.max_model_len:
            self._finish(seq, "length")

    def _hit_stop(self, seq: Sequence) -> bool:
        tail = max(len(s) for s in seq.params.stop) + 2  # a token holds at least one character
        text = self.tokenizer.decode(seq.completion_token_ids[-tail:], skip_special_tokens=True)
        return any(s in text for s in seq.params.stop)

    def _finish(self, seq: Sequence, reason: Any) -> None:
        seq.finish(reason)
        self.scheduler.finish(seq)

    def _constraint(self, grammar: Grammar) -> Any:
        if grammar not in self._grammars:
            from ragloom.runtime.constrained import compile_grammar

            self._grammars[grammar] = compile_grammar(grammar, self.tokenizer_info())
        return self._grammars[grammar]

    def tokenizer_info(self) -> Any:
        """The tokenizer as :class:`ragloom.runtime.constrained.TokenizerInfo` (built once)."""
        if not hasattr(self, "_tokenizer_info"):
            from ragloom.runtime.engine.vocab import tokenizer_info

            self._tokenizer_info = tokenizer_info(
                self.tokenizer, self.eos_token_id, self.runner.vocab_size
            )
        return self._tokenizer_info


def _gguf_weights(loaded: LoadedModel, config: EngineConfig) -> dict[str, Any] | None:
    """The file's quantised linear weights when ``config`` runs them: always for ``"gguf"`` and
    ``"gguf-q8"`` (errors propagate), for ``"auto"`` where the model came from a GGUF file, the
    dtype is float32 and the kernel builds here (otherwise the float32 layers run, and the log
    says why).
    """
    if config.quantization in ("gguf", "gguf-q8"):
        gguf_kernel()
        return loaded.gguf_linears()
    if config.quantization != "auto" or config.dtype != "float32" or loaded.weights_dir is None:
        return None
    try:
        gguf_kernel()
    except KernelUnavailableError as exc:
        _log.info("quantization='auto' runs float32 linear layers: %s", exc)
        return None
    return loaded.gguf_linears()
