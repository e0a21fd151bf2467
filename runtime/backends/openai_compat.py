"""Any OpenAI-compatible endpoint as a ragloom LLM: vLLM's server, Ollama, hosted APIs, or
``ragloom serve``.

:class:`OpenAILLM` talks through the official ``openai`` client: chat messages go to
``/v1/chat/completions``, plain text to ``/v1/completions`` (or to chat as one user message
with ``chat_only=True``, for servers without the legacy route). Streaming, stop strings, seed,
and usage (including ``cached_tokens`` when the server reports it) are passed through;
``prefix_cache_stats()`` adds that usage up (streamed calls count only where the server puts
usage in the stream).
Grammars map to ``response_format`` (JSON schema) or vLLM's ``structured_outputs``
(and the older ``guided_regex`` / ``guided_grammar``) fields; servers that ignore those do not
constrain the output.

A prompt the server refuses as longer than the model's context window (HTTP 400 with OpenAI's
``context_length_exceeded`` code, or vLLM's "maximum context length" message) raises
:class:`ragloom.errors.ContextWindowError`, as the local backends do, so the planners' answerers
cut their evidence and retry over HTTP too. Other refusals keep the client's own errors.

This module does not retry beyond the client's own retries, and it cannot score
continuations (the chat API has no prompt log-probs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from ragloom._lazy import require
from ragloom.runtime.llm import (
    BaseLLM,
    Completion,
    Grammar,
    PrefixCacheCounter,
    PrefixCacheStats,
    Prompt,
    SamplingParams,
    context_window_errors,
)

__all__ = ["OpenAILLM"]


def _usage(usage: Any) -> tuple[int, int, int]:
    """Prompt, completion and cached tokens of an API ``usage`` object (zeros without one)."""
    if usage is None:
        return 0, 0, 0
    details = getattr(usage, "prompt_tokens_details", None)
    cached = (getattr(details, "cached_tokens", 0) or 0) if details else 0
    return usage.prompt_tokens or 0, usage.completion_tokens or 0, cached


def _grammar_fields(grammar: Grammar | None) -> dict[str, Any]:
    """Request fields asking the server for ``grammar``.

    vLLM >= 0.12 reads ``structured_outputs``; older vLLM read ``guided_*``; both ignore the
    other's fields, so both are sent.
    """
    if grammar is None:
        return {}
    if grammar.kind == "json_schema":
        schema = {"name": "output", "schema": json.loads(grammar.source)}
        return {"extra_body": {"response_format": {"type": "json_schema", "json_schema": schema}}}
    key = "regex" if grammar.kind == "regex" else "grammar"
    body = {"structured_outputs": {key: grammar.source}, f"guided_{key}": grammar.source}
    return {"extra_body": body}


class OpenAILLM(BaseLLM):
    """A model behind an OpenAI-compatible HTTP API.

    Args:
        model: the model name the server knows.
        base_url: e.g. ``http://127.0.0.1:8000/v1``; defaults to ``OPENAI_BASE_URL`` or
            OpenAI's own API.
        api_key: defaults to ``OPENAI_API_KEY``, else a placeholder (local servers ignore it).
        chat_only: send plain-text prompts to the chat route as one user message.
        timeout: seconds per request.
        max_retries: the client's retries on connection errors and 5xx.
        http_client: an ``httpx.Client`` to send requests through (tests inject one).

    >>> llm = OpenAILLM("qwen2.5-coder-0.5b-instruct", base_url="http://127.0.0.1:8000/v1")
    >>> llm.generate([[{"role": "user", "content": "hi"}]])[0].text  # doctest: +SKIP
    'Hello! How can I help?'
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        chat_only: bool = False,
        timeout: float = 120.0,
        max_retries: int = 2,
        http_client: Any = None,
    ):
        openai = require("openai", "runtime")
        self.model_name = model
        self.chat_only = chat_only
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
            timeout=timeout,
            max_retries=max_retries,
            http_client=http_client,
        )
        self._prefix_counter = PrefixCacheCounter()

    def _request(self, prompt: Prompt, params: SamplingParams) -> tuple[bool, dict[str, Any]]:
        """Whether to use the chat route, and the keyword arguments of the call."""
        fields: dict[str, Any] = {
            "model": self.model_name,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            **_grammar_fields(params.grammar),
        }
        if params.seed is not None:
            fields["seed"] = params.seed
        if params.stop:
            fields["stop"] = list(params.stop)
        if isinstance(prompt, str) and not self.chat_only:
            return False, fields | {"prompt": prompt}
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return True, fields | {"messages": [dict(m) for m in messages]}

    def _stream(self, prompt: Prompt, params: SamplingParams) -> Iterator[str]:
        return self._deltas(prompt, params, None)

    def _stream_counted(
        self, prompt: Prompt, params: SamplingParams, usage: Completion
    ) -> Iterator[str]:
        """Ask the server for the stream's usage (``stream_options.include_usage``) and put
        it in ``usage``, with the finish reason the server streams (``"length"`` or
        ``"stop"``, as :meth:`generate` maps it; a server that streams none gets
        ``"length"`` when its completion tokens reached ``max_tokens``)."""
        return self._deltas(prompt, params, usage, ask_usage=True)

    def _stream_finished(
        self, prompt: Prompt, params: SamplingParams, usage: Completion
    ) -> Iterator[str]:
        """Only the finish reason: the server is not asked for stream usage."""
        return self._deltas(prompt, params, usage)

    def _deltas(
        self,
        prompt: Prompt,
        params: SamplingParams,
        usage: Completion | None,
        *,
        ask_usage: bool = False,
    ) -> Iterator[str]:
        chat, fields = self._request(prompt, params)
        if ask_usage:  # not sent otherwise: servers that predate it may refuse it
            fields["stream_options"] = {"include_usage": True}
        reason: str | None = None
        for chunk in self._create(chat, stream=True, **fields):
            if getattr(chunk, "usage", None) is not None:  # sent by servers that stream usage
                prompt_tokens, completion_tokens, cached = _usage(chunk.usage)
                self._prefix_counter.add(prompt_tokens, cached)
                if usage is not None:
                    usage.prompt_tokens, usage.cached_tokens = prompt_tokens, cached
                    usage.completion_tokens = completion_tokens
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            reason = choice.finish_reason or reason
            piece = choice.delta.content if chat else choice.text
            if piece:
                yield piece
        if usage is not None:
            full = reason is None and usage.completion_tokens >= params.max_tokens
            usage.finish_reason = "length" if reason == "length" or full else "stop"

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[Completion]:
        """One request per prompt, with the server's token usage."""
        params = params or SamplingParams()
        return [self._complete(prompt, params) for prompt in prompts]

    def _complete(self, prompt: Prompt, params: SamplingParams) -> Completion:
        chat, fields = self._request(prompt, params)
        response = self._create(chat, **fields)
        choice = response.choices[0]
        text = (choice.message.content or "") if chat else choice.text
        reason: Literal["stop", "length"] = "length" if choice.finish_reason == "length" else "stop"
        prompt_tokens, completion_tokens, cached_tokens = _usage(response.usage)
        if response.usage is not None:
            self._prefix_counter.add(prompt_tokens, cached_tokens)
        return Completion(
            text=text,
            finish_reason=reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
        )

    def _create(self, chat: bool, **fields: Any) -> Any:
        """Send one request (errors arrive here, before any streamed text)."""
        api = self._client.chat.completions if chat else self._client.completions
        with context_window_errors():
            return api.create(**fields)

    def prefix_cache_stats(self) -> PrefixCacheStats:
        """Prompt and cached tokens as the server reported them since the last reset (its
        cache's contents are not visible from here: ``entries`` and ``nbytes`` are None)."""
        return self._prefix_counter.stats()

    def reset_prefix_cache(self) -> None:
        """Zero the figures (the server's own cache cannot be emptied from here)."""
        self._prefix_counter.reset()
