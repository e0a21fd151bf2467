"""In-process vLLM (``vllm.LLM``) behind the ragloom LLM protocol, for machines with a GPU.

:class:`VLLMLLM` builds ``vllm.LLM`` with automatic prefix caching on and maps
:class:`~ragloom.runtime.llm.SamplingParams` onto ``vllm.SamplingParams``: a batch of prompts
is one ``generate`` call (vLLM batches continuously), chat messages go through the model's
tokenizer chat template, grammars become structured outputs (``StructuredOutputsParams`` on
vLLM >= 0.12, ``GuidedDecodingParams`` before), and ``score`` reads prompt log-probs.
``cached_tokens`` is vLLM's ``num_cached_tokens`` (prefix-cache hits); ``prefix_cache_stats()``
adds them up over every request (scoring included) and ``reset_prefix_cache()`` asks vLLM to
drop its cached blocks.

vllm is imported when a VLLMLLM is built, never at ``import ragloom``; without it the
constructor raises :class:`~ragloom.errors.MissingDependencyError` with the pip line.
The offline ``vllm.LLM`` API does not stream: ``stream`` yields the whole completion at once.
A prompt longer than the model's window raises :class:`~ragloom.errors.ContextWindowError`
(from vLLM's own check), as the other backends do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from ragloom._lazy import require
from ragloom.errors import ContextWindowError
from ragloom.runtime.llm import (
    BaseLLM,
    Completion,
    Grammar,
    PrefixCacheCounter,
    PrefixCacheStats,
    Prompt,
    SamplingParams,
)

__all__ = ["VLLMLLM"]


def _structured(vllm: Any, grammar: Grammar) -> dict[str, Any]:
    """The vllm.SamplingParams keyword that asks for ``grammar``."""
    key = {"regex": "regex", "json_schema": "json", "lark": "grammar", "gbnf": "grammar"}
    value: Any = json.loads(grammar.source) if grammar.kind == "json_schema" else grammar.source
    module = vllm.sampling_params
    if hasattr(module, "StructuredOutputsParams"):  # vLLM >= 0.12
        return {"structured_outputs": module.StructuredOutputsParams(**{key[grammar.kind]: value})}
    return {"guided_decoding": module.GuidedDecodingParams(**{key[grammar.kind]: value})}


class VLLMLLM(BaseLLM):
    """A Hugging Face model (name or local folder) on in-process vLLM.

    Args:
        model: what ``vllm.LLM(model=...)`` accepts.
        gpu_memory_utilization: fraction of GPU memory vLLM may take.
        max_model_len: context window; None uses the model's.
        **engine_args: more ``vllm.LLM`` keyword arguments (``dtype``, ``tensor_parallel_size``).

    Raises:
        MissingDependencyError: vllm is not installed.

    >>> llm = VLLMLLM("Qwen/Qwen2.5-Coder-0.5B-Instruct")  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str,
        *,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        **engine_args: Any,
    ):
        self._vllm = require("vllm", "vllm")
        self.model_name = model
        args = {"enable_prefix_caching": True, **engine_args}
        if max_model_len is not None:
            args["max_model_len"] = max_model_len
        self._engine = self._vllm.LLM(
            model=model, gpu_memory_utilization=gpu_memory_utilization, **args
        )
        self._prefix_counter = PrefixCacheCounter()

    def sampling_params(self, params: SamplingParams, **extra: Any) -> Any:
        """``params`` as a ``vllm.SamplingParams``."""
        fields: dict[str, Any] = {
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            "stop": list(params.stop) or None,
            **extra,
        }
        if params.grammar is not None:
            fields.update(_structured(self._vllm, params.grammar))
        return self._vllm.SamplingParams(**fields)

    def render(self, prompt: Prompt) -> str:
        """Chat messages through the model's own chat template."""
        if isinstance(prompt, str):
            return prompt
        tokenizer = self._engine.get_tokenizer()
        return str(
            tokenizer.apply_chat_template(
                [dict(m) for m in prompt], tokenize=False, add_generation_prompt=True
            )
        )

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[Completion]:
        """All prompts in one vLLM call (continuous batching, prefix caching)."""
        params = params or SamplingParams()
        texts = [self.render(p) for p in prompts]
        outputs = self._run(texts, self.sampling_params(params))
        done = [self._completion(out) for out in outputs]
        for c in done:
            self._prefix_counter.add(c.prompt_tokens, c.cached_tokens)
        return done

    def _run(self, texts: list[str], sampling: Any) -> Any:
        """One vLLM call; a prompt longer than the model's window (vLLM's ``ValueError``:
        "... longer than the maximum model length ...") raises ``ContextWindowError``."""
        try:
            return self._engine.generate(texts, sampling, use_tqdm=False)
        except ValueError as exc:
            if "maximum model length" not in str(exc):
                raise
            raise ContextWindowError(f"vLLM refused the prompt as too long: {exc}") from exc

    def prefix_cache_stats(self) -> PrefixCacheStats:
        """Prompt and cached tokens over every request since the last reset, as vLLM reported
        them (``entries`` and ``nbytes`` are vLLM's own business: None)."""
        return self._prefix_counter.stats()

    def reset_prefix_cache(self) -> None:
        """Ask vLLM to drop its cached prefix blocks (where this vLLM version can) and zero the
        figures."""
        reset = getattr(self._engine, "reset_prefix_cache", None)
        if callable(reset):
            reset()
        self._prefix_counter.reset()

    @staticmethod
    def _completion(out: Any) -> Completion:
        best = out.outputs[0]
        reason: Literal["stop", "length"] = "length" if best.finish_reason == "length" else "stop"
        return Completion(
            text=best.text,
            finish_reason=reason,
            prompt_tokens=len(out.prompt_token_ids or ()),
            completion_tokens=len(best.token_ids),
            cached_tokens=getattr(out, "num_cached_tokens", None) or 0,
        )

    def _stream(self, prompt: Prompt, params: SamplingParams) -> Iterator[str]:
        return self._stream_counted(prompt, params, Completion(text=""))

    def _stream_counted(
        self, prompt: Prompt, params: SamplingParams, usage: Completion
    ) -> Iterator[str]:
        [done] = self.generate([prompt], params)
        usage.prompt_tokens, usage.cached_tokens = done.prompt_tokens, done.cached_tokens
        usage.completion_tokens, usage.finish_reason = done.completion_tokens, done.finish_reason
        yield done.text

    def score(self, prompts: Sequence[Prompt], choices: Sequence[str]) -> list[list[float]]:
        """Log-probability of each choice after each prompt, from vLLM's prompt log-probs."""
        heads = [self.render(p) for p in prompts]
        texts = [h + c for h in heads for c in choices]
        sampling = self.sampling_params(SamplingParams(max_tokens=1), prompt_logprobs=0)
        outputs = self._run(texts, sampling)
        tokenizer = self._engine.get_tokenizer()
        flat = []
        for head, out in zip([h for h in heads for _ in choices], outputs, strict=True):
            cached = getattr(out, "num_cached_tokens", None) or 0
            self._prefix_counter.add(len(out.prompt_token_ids or ()), cached)
            start = len(tokenizer.encode(head))  # as vLLM tokenises: special tokens included
            ids, logprobs = out.prompt_token_ids, out.prompt_logprobs
            flat.append(sum(logprobs[i][ids[i]].logprob for i in range(max(start, 1), len(ids))))
        n = len(choices)
        return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]
