"""The llama.cpp backend (through cyllama) with ragloom's prefix-state cache on top.

:class:`LlamaCppLLM` runs a GGUF model on the CPU behind the :class:`~ragloom.runtime.LLM`
protocol: the chat template from the GGUF, greedy or seeded temperature/top-p sampling, stop
strings, grammars (every kind, GBNF included, as token masks from
:mod:`ragloom.runtime.constrained`; llama.cpp's own GBNF sampler on request), and log-prob
scoring of continuations.

Prefix reuse: the prompt is prefilled in batches of exactly ``prefix_block`` tokens on a fixed
grid, and the sequence's KV state at the last grid point is saved (~23 KB per token for the
135M model, ~12 KB for Qwen2.5-0.5B) in a :class:`PrefixStateCache`. A later prompt restores the
longest saved prefix (or keeps what the live context already holds) and prefills only the
rest; ``Completion.cached_tokens`` says how many tokens were reused. Because every batch lies
on the same grid, a cached run computes exactly what a cold run would: the greedy output is
identical. ``prefix_cache_stats()`` adds up every prefill (streamed calls and scoring
included) and ``reset_prefix_cache()`` empties the cache and the live context.

One context, one sequence: calls are serialised by a lock. This module does not batch
requests (the torch engine does).
"""

from __future__ import annotations

import codecs
import os
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np

from ragloom._lazy import require
from ragloom.errors import ConfigError, ContextWindowError
from ragloom.runtime.backends._llamacpp_sampling import load_model, native_sampler, pick
from ragloom.runtime.backends._llamacpp_vocab import render_chat, special_ids, token_bytes
from ragloom.runtime.backends._prefix_cache import PrefixStateCache, common_prefix_len
from ragloom.runtime.constrained import Constraint, TokenizerInfo, compile_grammar
from ragloom.runtime.llm import (
    BaseLLM,
    Completion,
    PrefixCacheCounter,
    PrefixCacheStats,
    Prompt,
    SamplingParams,
    apply_stop,
)
from ragloom.runtime.model_files import model_name, resolve_model
from ragloom.runtime.threads import default_num_threads

__all__ = ["LlamaCppConfig", "LlamaCppLLM"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LlamaCppConfig:
    """How the llama.cpp backend runs.

    Attributes:
        n_ctx: context window in tokens (prompt plus completion).
        n_threads: CPU threads; 0 takes the cores this process may run on that other
            processes leave idle, measured (:func:`ragloom.runtime.threads.default_num_threads`:
            llama.cpp's threads spin-wait, so a busy core stalls every step).
        prefix_block: prefill batch size and prefix-cache granularity, in tokens.
        prefix_cache_mb: the most memory saved prefix states may take (0 disables saving).
        native_gbnf: run GBNF grammars in llama.cpp's own sampler instead of llguidance masks
            (faster per token). Off by default: cyllama 0.2.18 segfaults on a GBNF that
            llama.cpp cannot parse, and ragloom can only pre-check it with llguidance.
    """

    n_ctx: int = 4096
    n_threads: int = 0
    prefix_block: int = 64
    prefix_cache_mb: float = 512.0
    native_gbnf: bool = False

    def __post_init__(self) -> None:
        if self.n_ctx < 16:
            raise ConfigError(f"n_ctx must be at least 16, got {self.n_ctx}")
        if self.n_threads < 0:
            raise ConfigError(f"n_threads must be >= 0, got {self.n_threads}")
        if not 1 <= self.prefix_block <= self.n_ctx:
            raise ConfigError(f"prefix_block must be in [1, n_ctx], got {self.prefix_block}")
        if self.prefix_cache_mb < 0:
            raise ConfigError(f"prefix_cache_mb must be >= 0, got {self.prefix_cache_mb}")


@dataclass(slots=True)
class _Stats:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: Literal["stop", "length"] = "length"


class LlamaCppLLM(BaseLLM):
    """A GGUF model on llama.cpp, with prefix-state reuse.

    Args:
        model: a packaged model name or alias (see ``resolve_model``) or a ``.gguf`` path.
        config: how to run it; keyword arguments override its fields.

    Raises:
        ModelError: the model is unknown, missing, corrupt or cannot be loaded.
        MissingDependencyError: cyllama is not installed.

    >>> llm = LlamaCppLLM("smollm2")  # doctest: +SKIP
    >>> params = SamplingParams(max_tokens=3)  # doctest: +SKIP
    >>> llm.generate(["The capital of France is"], params)[0].text  # doctest: +SKIP
    ' Paris.'
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = "qwen2.5-coder-0.5b-instruct",
        config: LlamaCppConfig | None = None,
        **overrides: Any,
    ):
        base = config or LlamaCppConfig()
        fields = {f: getattr(base, f) for f in LlamaCppConfig.__dataclass_fields__}
        self.config = LlamaCppConfig(**{**fields, **overrides})
        self.model_name = model_name(model)
        self.path = resolve_model(model)
        self._cy = require("cyllama.llama.llama_cpp", "runtime")
        self._model = load_model(self.path)
        self._vocab = self._model.get_vocab()
        self._ctx = self._new_context()
        self._lock = threading.Lock()
        block = self.config.prefix_block
        self._cache = PrefixStateCache(int(self.config.prefix_cache_mb * 2**20), block)
        self._live: list[int] = []  # tokens whose KV the context holds, computed on the grid
        self._prefix_counter = PrefixCacheCounter()

    def _new_context(self) -> Any:
        cy, cfg = self._cy, self.config
        params = cy.LlamaContextParams()
        params.n_ctx = cfg.n_ctx
        params.n_batch = params.n_ubatch = max(cfg.prefix_block, 1)
        threads = cfg.n_threads or default_num_threads()
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        return cy.LlamaContext(self._model, params)

    # tokenizer and template
    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` (special tokens such as ``<|im_start|>`` are parsed)."""
        add_bos = bool(self._vocab.get_add_bos())
        return list(self._vocab.tokenize(text, add_special=add_bos, parse_special=True))

    @cached_property
    def _token_bytes(self) -> list[bytes]:
        return token_bytes(self._vocab)

    @cached_property
    def tokenizer_info(self) -> TokenizerInfo:
        """The vocabulary as :mod:`ragloom.runtime.constrained` needs it."""
        eot = self._vocab.token_eot()
        return TokenizerInfo(
            vocab=self._token_bytes,
            eos_token_id=eot if eot >= 0 else self._vocab.token_eos(),
            special_token_ids=special_ids(self._vocab),
            encode=lambda b: list(self._vocab.tokenize(b.decode("utf-8", "replace"), False, False)),
        )

    def render(self, prompt: Prompt) -> str:
        """Plain text as is; chat messages through the GGUF's own chat template."""
        template = self._model.get_default_chat_template()
        if isinstance(prompt, str) or not template:
            return super().render(prompt)
        piece = self._vocab.token_to_piece
        bos, eos = self._vocab.token_bos(), self._vocab.token_eos()
        return render_chat(
            template,
            prompt,
            bos=piece(bos, special=True) if bos >= 0 else "",
            eos=piece(eos, special=True) if eos >= 0 else "",
        )

    # prefill with prefix reuse
    def _decode(self, tokens: Sequence[int], pos: int) -> None:
        self._ctx.decode(self._cy.llama_batch_get_one(list(tokens), pos))

    def _prefill(self, tokens: Sequence[int]) -> int:
        """Bring the context to ``tokens`` (logits of the last one ready); return reused count."""
        n, cache = len(tokens), self._cache
        grid_end = cache.aligned(n - 1)
        reuse = cache.aligned(min(common_prefix_len(self._live, tokens), n - 1))
        saved, state = cache.lookup(tokens, limit=n - 1)
        if state is not None and saved > reuse:
            self._ctx.kv_cache_clear()
            self._ctx.set_state_seq_data(state, 0)
            reuse = saved
        elif reuse == 0:
            self._ctx.kv_cache_clear()
        self._ctx.memory_seq_rm(0, reuse, -1)
        self._live = []
        for pos in range(reuse, grid_end, cache.block):  # prefill on the grid
            self._decode(tokens[pos : pos + cache.block], pos)
        if cache.max_bytes and grid_end > reuse and not cache.covers(tokens[:grid_end]):
            cache.store(tokens[:grid_end], self._ctx.get_state_seq_data(0))
        if grid_end < n - 1:
            self._decode(tokens[grid_end : n - 1], grid_end)
        self._decode(tokens[n - 1 :], n - 1)  # the last token alone, as in a cold run
        self._live = list(tokens[:grid_end])
        return reuse

    def _check_fits(self, n_prompt: int, max_tokens: int) -> None:
        if n_prompt == 0:
            raise ConfigError("the prompt is empty after tokenisation; nothing to continue")
        if n_prompt + max_tokens > self.config.n_ctx:
            raise ContextWindowError(
                f"prompt of {n_prompt} tokens plus max_tokens={max_tokens} exceeds the context "
                f"window of {self.config.n_ctx} tokens of {self.model_name!r}; shorten the "
                "prompt, lower max_tokens or raise n_ctx"
            )

    def prefix_cache_stats(self) -> PrefixCacheStats:
        """Prefix reuse since the last reset (every prefill: generate, stream and each choice
        of score), with the saved states (``entries``) and their bytes."""
        return self._prefix_counter.stats(entries=len(self._cache), nbytes=self._cache.nbytes)

    def reset_prefix_cache(self) -> None:
        """Forget every saved prefix state and the live context (the next call runs cold), and
        zero the figures of :meth:`prefix_cache_stats`."""
        with self._lock:
            self._cache.clear()
            self._live = []
            self._ctx.kv_cache_clear()
            self._prefix_counter.reset()

    # decoding
    def _tokens(self, params: SamplingParams, constraint: Constraint | None) -> Iterator[int]:
        """Sample tokens one by one; the caller decodes each before asking for the next."""
        if constraint is None or (constraint.grammar.kind == "gbnf" and self.config.native_gbnf):
            sampler = native_sampler(self._cy, self._vocab, params)
            while True:
                yield int(sampler.sample(self._ctx, -1))
        state = constraint.new_state()
        rng = np.random.default_rng(params.seed)
        while True:
            logits = state.mask_logits(np.asarray(self._ctx.get_logits(), dtype=np.float32))
            token = pick(logits, params, rng)
            if not self._vocab.is_eog(token):
                state.advance(token)
            yield token

    def _run(
        self, prompt: Prompt, params: SamplingParams, stats: _Stats
    ) -> Generator[str, None, None]:
        tokens = self.tokenize(self.render(prompt))
        self._check_fits(len(tokens), params.max_tokens)
        stats.prompt_tokens = len(tokens)
        grammar = params.grammar  # compiled before the prefill: a bad grammar fails fast
        constraint = compile_grammar(grammar, self.tokenizer_info) if grammar else None
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        with self._lock:
            stats.cached_tokens = self._prefill(tokens)
            self._prefix_counter.add(len(tokens), stats.cached_tokens)
            pos = len(tokens)
            for token in self._tokens(params, constraint):
                if self._vocab.is_eog(token):
                    stats.finish_reason = "stop"
                    break
                stats.completion_tokens += 1
                yield utf8.decode(self._token_bytes[token])
                if stats.completion_tokens >= params.max_tokens:
                    break
                self._decode([token], pos)
                pos += 1
        tail = utf8.decode(b"", final=True)
        if tail:
            yield tail

    def _stream(self, prompt: Prompt, params: SamplingParams) -> Iterator[str]:
        return self._stream_counted(prompt, params, Completion(text=""))

    def _stream_counted(
        self, prompt: Prompt, params: SamplingParams, usage: Completion
    ) -> Iterator[str]:
        stats, ended = _Stats(), False
        try:
            yield from self._run(prompt, params, stats)
            ended = True
        finally:
            usage.prompt_tokens = stats.prompt_tokens
            usage.completion_tokens = stats.completion_tokens
            usage.cached_tokens = stats.cached_tokens
            usage.finish_reason = stats.finish_reason if ended else "cancelled"

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[Completion]:
        """Complete each prompt in turn; ``cached_tokens`` counts prompt tokens reused."""
        params = params or SamplingParams()
        return [self._complete(prompt, params) for prompt in prompts]

    def _complete(self, prompt: Prompt, params: SamplingParams) -> Completion:
        stats, text, stopped = _Stats(), "", False
        steps = self._run(prompt, params, stats)
        for delta in steps:
            text += delta
            if params.stop:
                text, stopped = apply_stop(text, params.stop)
                if stopped:
                    steps.close()  # releases the context at once
                    break
        return Completion(
            text=text,
            finish_reason="stop" if stopped else stats.finish_reason,
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens,
            cached_tokens=stats.cached_tokens,
        )

    def score(self, prompts: Sequence[Prompt], choices: Sequence[str]) -> list[list[float]]:
        """Sum of log-probabilities of each choice's tokens as the continuation of each prompt.

        The prompt is prefilled once (reusing the prefix cache as any call does); each choice
        then runs only its own tokens on top of it.

        >>> llm.score(["2 + 2 ="], [" 4", " 5"])  # doctest: +SKIP
        [[-1.2, -4.7]]
        """
        out = []
        for prompt in prompts:
            text = self.render(prompt)
            head = self.tokenize(text)
            out.append(self._score_prompt(head, [self.tokenize(text + c) for c in choices]))
        return out

    def _score_prompt(self, head: list[int], fulls: list[list[int]]) -> list[float]:
        """Score each of ``fulls`` (prompt and choice, tokenised together) after ``head``.

        A choice's first token may merge with the prompt's last ones, so each choice scores
        from where it parts from ``head``; the tokens every choice shares are prefilled once.
        """
        if not fulls:
            return []
        shared = [common_prefix_len(head, full) for full in fulls]
        start = min(shared)
        if start == 0:
            raise ConfigError("score needs a non-empty prompt")
        for full in fulls:
            self._check_fits(len(full), 1)
        scores = []
        with self._lock:
            reused = self._prefill(fulls[0][:start])
            first = np.asarray(self._ctx.get_logits(), dtype=np.float64)  # a copy
            for n, (full, own) in enumerate(zip(fulls, shared, strict=True)):
                self._ctx.memory_seq_rm(0, start, -1)  # back to the shared prompt
                logits, total = first, 0.0
                for pos in range(start, len(full)):
                    if pos >= own:
                        top = logits.max()
                        total += logits[full[pos]] - top - np.log(np.exp(logits - top).sum())
                    if pos + 1 < len(full):
                        self._decode([full[pos]], pos)
                        logits = np.asarray(self._ctx.get_logits(), dtype=np.float64)
                scores.append(float(total))
                self._prefix_counter.add(len(full), start if n else reused)
        return scores

    def close(self) -> None:
        """Free the context and the model (the object cannot be used afterwards)."""
        with self._lock:
            self._ctx.close()
            self._model.close()
