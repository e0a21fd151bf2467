"""``TorchLLM``: the embedded pure-PyTorch engine behind ragloom's LLM protocol.

Loads a GGUF model (a packaged name such as ``"qwen2.5-coder-0.5b-instruct"`` or a path),
renders chat messages with the model's own chat template and serves every call through one
continuous-batching engine with a prefix-cached paged KV cache, so concurrent planners,
joiners and judges share batches and reuse each other's prompt prefixes:

- ``generate`` / ``agenerate`` submit all prompts at once (one batch);
- ``stream`` / ``astream`` yield text deltas as tokens arrive; leaving the loop cancels the
  request and frees its blocks (so does cancelling ``agenerate``);
- ``score`` returns log-probabilities of continuations, batched and prefix-cached;
- ``prefix_cache_stats`` / ``reset_prefix_cache`` report and empty the prefix cache;
- ``SamplingParams.grammar`` constrains decoding through :mod:`ragloom.runtime.constrained`.

This module does not pick backends (:mod:`ragloom.runtime.factory` does).
"""

from __future__ import annotations

import asyncio
import os
import queue
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from ragloom._lazy import require
from ragloom.errors import ConfigError
from ragloom.runtime.engine.config import EngineConfig
from ragloom.runtime.engine.sequence import Sequence as Seq
from ragloom.runtime.llm import (
    BaseLLM,
    Completion,
    PrefixCacheCounter,
    PrefixCacheStats,
    Prompt,
    SamplingParams,
    apply_stop,
)

__all__ = ["TorchLLM"]


class TorchLLM(BaseLLM):
    """The embedded engine as an :class:`~ragloom.runtime.llm.LLM`.

    Args:
        model: a packaged model name (see :func:`ragloom.runtime.model_files.list_models`) or
            a path to a llama/qwen2 ``.gguf`` file.
        config: engine settings (defaults when None).
        **settings: fields of :class:`~ragloom.runtime.engine.config.EngineConfig` that
            override ``config``'s.

    Raises:
        ModelError: the model is unknown, missing or not a readable GGUF file.
        MissingDependencyError: torch, gguf, safetensors or transformers is not installed.

    >>> llm = TorchLLM("smollm2-135m-instruct", quantization="int8")  # doctest: +SKIP
    >>> llm.generate([[{"role": "user", "content": "Capital of France?"}]])[0].text
    ... # doctest: +SKIP
    'The capital of France is Paris.'
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = "qwen2.5-coder-0.5b-instruct",
        *,
        config: EngineConfig | None = None,
        **settings: Any,
    ) -> None:
        for module in ("torch", "gguf", "safetensors", "transformers"):
            require(module, "runtime")
        from ragloom.runtime.engine.background import BackgroundEngine
        from ragloom.runtime.engine.llm_engine import LLMEngine
        from ragloom.runtime.model_files import model_name, resolve_model
        from ragloom.runtime.models.gguf_loader import load_gguf

        # (settings are checked before the model loads: a typo fails at once)
        config = replace(config, **settings) if config else EngineConfig(**settings)
        path = resolve_model(model)
        self.model_name = model_name(model)
        loaded = load_gguf(path)
        self.tokenizer = loaded.tokenizer
        self.engine = LLMEngine(loaded, config)
        self._background = BackgroundEngine(self.engine)
        self._prefix_counter = PrefixCacheCounter()

    # text <-> tokens
    def render(self, prompt: Prompt) -> str:
        """Plain text as is; chat messages through the model's chat template (a base model
        without one gets :class:`BaseLLM`'s generic role markers)."""
        if isinstance(prompt, str):
            return prompt
        if not getattr(self.tokenizer, "chat_template", None):
            return super().render(prompt)
        return str(
            self.tokenizer.apply_chat_template(
                list(prompt), tokenize=False, add_generation_prompt=True
            )
        )

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of the rendered prompt."""
        return list(self.tokenizer.encode(self.render(prompt)))

    def _text(self, seq: Seq) -> str:
        return str(self.tokenizer.decode(seq.completion_token_ids, skip_special_tokens=True))

    def _completion(self, seq: Seq) -> Completion:
        text, stopped = apply_stop(self._text(seq), seq.params.stop)
        reason = "stop" if stopped else (seq.finish_reason or "length")
        return Completion(
            text=text,
            finish_reason=reason,
            prompt_tokens=seq.num_prompt_tokens,
            completion_tokens=seq.num_completion_tokens,
            cached_tokens=seq.num_cached_tokens,
        )

    # the protocol
    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[Completion]:
        """Complete every prompt in one batch."""
        seqs = self._run([self.encode(p) for p in prompts], params or SamplingParams())
        return [self._completion(s) for s in seqs]

    def generate_tokens(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams | None = None
    ) -> list[list[int]]:
        """Token-level :meth:`generate`: prompt ids in, completion ids out (one batch)."""
        seqs = self._run(prompts, params or SamplingParams())
        return [s.completion_token_ids for s in seqs]

    def _run(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams,
        score_from: Sequence[int | None] | None = None,
    ) -> list[Seq]:
        """Submit every prompt, wait for all; on any error cancel the rest and re-raise."""
        done: queue.Queue[BaseException | None] = queue.Queue()
        starts = score_from or [None] * len(prompts)
        seqs: list[Seq] = []
        try:
            for ids, start in zip(prompts, starts, strict=True):
                listener = self._on_finish(done.put)
                seqs.append(self._background.submit(ids, params, listener, score_from=start))
            for _ in seqs:
                error = done.get()
                if error is not None:
                    raise error
        finally:
            for seq in seqs:
                if not seq.is_finished:
                    self._background.abort(seq)
            self._count(seqs)
        return seqs

    async def agenerate(
        self, prompts: Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[Completion]:
        """Async twin of :meth:`generate`; cancelling it cancels the requests."""
        params = params or SamplingParams()
        loop = asyncio.get_running_loop()
        futures = []
        seqs = []
        for prompt in prompts:
            future: asyncio.Future[None] = loop.create_future()
            futures.append(future)
            listener = self._on_finish(_future_setter(loop, future))
            seqs.append(self._background.submit(self.encode(prompt), params, listener))
        try:
            await asyncio.gather(*futures)
        finally:
            for seq in seqs:
                if not seq.is_finished:
                    self._background.abort(seq)
            self._count(seqs)
        return [self._completion(s) for s in seqs]

    def _stream(self, prompt: Prompt, params: SamplingParams) -> Iterator[str]:
        return self._stream_counted(prompt, params, Completion(text=""))

    def _stream_counted(
        self, prompt: Prompt, params: SamplingParams, usage: Completion
    ) -> Iterator[str]:
        """Stream one request; ``usage`` gets its sequence's token counts and finish reason
        when it ends (``"cancelled"`` when the caller left before the engine finished it)."""
        updates: queue.Queue[BaseException | None] = queue.Queue()
        seq = self._background.submit(
            self.encode(prompt), params, lambda s, error: updates.put(error)
        )
        emitted = ""
        try:
            while True:
                error = updates.get()
                if error is not None:
                    raise error
                text = self._text(seq)
                if not text.endswith("\ufffd") and len(text) > len(emitted):
                    yield text[len(emitted) :]
                    emitted = text
                if seq.is_finished and updates.empty():
                    return
        finally:
            finished = seq.is_finished
            if not finished:
                self._background.abort(seq)
            self._count([seq])
            usage.prompt_tokens = seq.num_prompt_tokens
            usage.completion_tokens = seq.num_completion_tokens
            usage.cached_tokens = seq.num_cached_tokens
            usage.finish_reason = (seq.finish_reason if finished else None) or "cancelled"

    def score(self, prompts: Sequence[Prompt], choices: Sequence[str]) -> list[list[float]]:
        """Log-probability of each choice as the continuation of each prompt (batched)."""
        full, starts = [], []
        for prompt in prompts:
            head = self.encode(prompt)
            for choice in choices:
                full.append(head + list(self.tokenizer.encode(choice, add_special_tokens=False)))
                starts.append(len(head))
        seqs = self._run(full, SamplingParams(max_tokens=1), score_from=starts)
        scores = [s.logprob for s in seqs]
        width = len(choices)
        return [scores[i * width : (i + 1) * width] for i in range(len(prompts))]

    def _count(self, seqs: Sequence[Seq]) -> None:
        """Add the prefills of ``seqs`` to the prefix-cache figures (a request cancelled
        before its first token may never have been prefilled: it is left out)."""
        for seq in seqs:
            ran = seq.is_finished and seq.finish_reason != "cancelled"
            if ran or seq.num_completion_tokens:
                self._prefix_counter.add(seq.num_prompt_tokens, seq.num_cached_tokens)

    def prefix_cache_stats(self) -> PrefixCacheStats:
        """Prefix-cache figures: every prompt run since the last reset (generate, stream and
        each ``(prompt, choice)`` of score), and the KV blocks the cache holds now (``entries``;
        ``nbytes`` is their share of the KV cache)."""
        manager = self.engine.scheduler.block_manager
        entries = manager.num_cached_blocks
        kv_cache = getattr(getattr(self.engine, "runner", None), "kv_cache", None)
        per_block = int(kv_cache.nbytes) // len(manager.blocks) if kv_cache is not None else None
        nbytes = entries * per_block if per_block is not None else None
        return self._prefix_counter.stats(entries=entries, nbytes=nbytes)

    def reset_prefix_cache(self) -> None:
        """Forget every cached prefix and zero the figures (call it while no request runs).

        Raises:
            ConfigError: requests are still running.
        """
        if self.engine.has_work():
            raise ConfigError("reset_prefix_cache() needs an idle engine: requests are running")
        self.engine.scheduler.block_manager.evict_cached()
        self._prefix_counter.reset()

    @staticmethod
    def _on_finish(put: Any) -> Any:
        def listener(seq: Seq, error: BaseException | None) -> None:
            if error is not None or seq.is_finished:
                put(error)

        return listener


def _future_setter(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> Any:
    def put(error: BaseException | None) -> None:
        def settle() -> None:
            if future.done():
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        if not loop.is_closed():  # the caller may have gone (cancelled, loop shut down)
            loop.call_soon_threadsafe(settle)

    return put
