"""The LLM protocol that planners, joiners, rerankers and judges call, and its scripted fake.

Every backend (the embedded torch engine, llama.cpp, an OpenAI-compatible server, vLLM, a
LangChain chat model) implements :class:`LLM`. Backends subclass :class:`BaseLLM` and write one
core method, ``_stream``; ``generate``/``agenerate``/``astream`` derive from it, so there is a
single code path per backend. Engines that batch override ``generate``/``agenerate``.

A prompt is either plain text or a list of chat messages; backends apply their own chat
template to message lists (:meth:`BaseLLM.render`).

Backends with a prefix cache report it the same way: ``prefix_cache_stats()`` returns a
:class:`PrefixCacheStats` (None without one) and ``reset_prefix_cache()`` empties it.

This module imports nothing heavy (no torch).
"""

from __future__ import annotations

import asyncio
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypedDict, runtime_checkable

from ragloom.errors import ConfigError, ContextWindowError

__all__ = [
    "LLM",
    "BaseLLM",
    "Completion",
    "FakeLLM",
    "Grammar",
    "Message",
    "PrefixCacheStats",
    "Prompt",
    "SamplingParams",
    "apply_stop",
    "context_window_errors",
]


class Message(TypedDict):
    """One chat message: ``{"role": "system" | "user" | "assistant", "content": "..."}``."""

    role: str
    content: str


Prompt = str | Sequence[Message]


@dataclass(frozen=True, slots=True, kw_only=True)
class Grammar:
    """A constraint on the generated text, compiled by each backend.

    Attributes:
        kind: ``"regex"``, ``"json_schema"``, ``"lark"`` or ``"gbnf"``.
        source: the pattern, JSON schema (as text) or grammar.
    """

    kind: Literal["regex", "json_schema", "lark", "gbnf"]
    source: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplingParams:
    """Per-call sampling parameters.

    Attributes:
        max_tokens: the most tokens to generate (at least 1).
        temperature: 0 is greedy.
        top_p: nucleus sampling mass in (0, 1].
        seed: seed for sampling; None draws one.
        stop: generation ends before the first of these strings; it is not returned.
        grammar: optional constraint on the output (constrained decoding).
    """

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    grammar: Grammar | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        if any(not s for s in self.stop):
            raise ConfigError("stop strings must be non-empty")


@dataclass(slots=True)
class Completion:
    """What one prompt produced.

    Attributes:
        text: the generated text, stop string excluded.
        finish_reason: ``"stop"`` (a stop string or end-of-sequence), ``"length"`` or
            ``"cancelled"``.
        prompt_tokens: tokens in the prompt.
        completion_tokens: tokens generated.
        cached_tokens: prompt tokens served from a prefix cache.
    """

    text: str
    finish_reason: Literal["stop", "length", "cancelled"] = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PrefixCacheStats:
    """A backend's prefix-cache figures since it was built or last reset.

    Attributes:
        requests: prompts prefilled (generate, stream and score calls all count; a score call
            counts one per prefill it runs).
        prompt_tokens: their prompt tokens, in total.
        cached_tokens: how many of those came from the prefix cache instead of being computed.
        entries: what the cache holds now (saved prefix states, or KV blocks with a published
            prefix hash); None where the backend cannot tell (a remote server).
        nbytes: the memory those entries take, where known.

    >>> stats = PrefixCacheStats(requests=2, prompt_tokens=200, cached_tokens=150)
    >>> stats.hit_rate
    0.75
    """

    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    entries: int | None = None
    nbytes: int | None = None

    @property
    def hit_rate(self) -> float:
        """``cached_tokens / prompt_tokens`` (0.0 before any prompt)."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


class PrefixCacheCounter:
    """Thread-safe running totals that backends keep to answer ``prefix_cache_stats``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = self._prompt = self._cached = 0

    def add(self, prompt_tokens: int, cached_tokens: int) -> None:
        """Count one prefilled prompt."""
        with self._lock:
            self._requests += 1
            self._prompt += prompt_tokens
            self._cached += cached_tokens

    def reset(self) -> None:
        """Back to zero."""
        with self._lock:
            self._requests = self._prompt = self._cached = 0

    def stats(self, *, entries: int | None = None, nbytes: int | None = None) -> PrefixCacheStats:
        """The totals so far, with what the cache holds now."""
        with self._lock:
            return PrefixCacheStats(
                requests=self._requests,
                prompt_tokens=self._prompt,
                cached_tokens=self._cached,
                entries=entries,
                nbytes=nbytes,
            )


@runtime_checkable
class LLM(Protocol):
    """What ragloom needs of a language model."""

    model_name: str

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[Completion]:
        """Complete every prompt (batched where the backend can)."""
        ...

    async def agenerate(
        self, prompts: Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[Completion]:
        """Async twin of :meth:`generate`."""
        ...

    def stream(self, prompt: Prompt, params: SamplingParams | None = None) -> Iterator[str]:
        """Yield the completion of one prompt as text deltas."""
        ...

    def astream(self, prompt: Prompt, params: SamplingParams | None = None) -> AsyncIterator[str]:
        """Async twin of :meth:`stream`."""
        ...

    def score(self, prompts: Sequence[Prompt], choices: Sequence[str]) -> list[list[float]]:
        """Log-probability of each choice as the continuation of each prompt."""
        ...


# how services word a prompt longer than the model's window (OpenAI, vLLM, llama.cpp's server,
# Anthropic)
_TOO_LONG = re.compile(
    r"maximum context length|context[_ ]length|context window|exceeds the available context"
    r"|prompt is too long",
    re.IGNORECASE,
)


@contextmanager
def context_window_errors() -> Iterator[None]:
    """Raise a remote service's refusal of a prompt too long for its model (an HTTP 400 with
    OpenAI's ``context_length_exceeded`` code, or a message that says so) as
    :class:`~ragloom.errors.ContextWindowError`; other errors pass unchanged. Backends that wrap
    a service send their calls through it, so that callers that cut their prompts to fit (the
    planners' answerers) work on every backend.

    >>> class Refusal(Exception):
    ...     status_code = 400
    >>> with context_window_errors():
    ...     raise Refusal("prompt is too long: 210000 tokens > 200000 maximum")
    Traceback (most recent call last):
    ragloom.errors.ContextWindowError: the service refused the prompt as too long: prompt is ...
    """
    try:
        yield
    except Exception as exc:
        error = _context_window_error(exc)
        if error is None:
            raise
        raise error from exc


def _context_window_error(exc: Exception) -> ContextWindowError | None:
    if getattr(exc, "status_code", None) != 400:
        return None
    message = str(getattr(exc, "message", None) or exc)
    if getattr(exc, "code", None) == "context_length_exceeded" or _TOO_LONG.search(message):
        return ContextWindowError(f"the service refused the prompt as too long: {message}")
    return None


def apply_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` before the earliest stop string; say whether one was found.

    >>> apply_stop("1. a()\\nThought: done", ["Thought:"])
    ('1. a()\\n', True)
    """
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class BaseLLM(ABC):
    """Shared plumbing: backends implement :meth:`_stream` (and optionally :meth:`score`)."""

    model_name: str = "unknown"

    @abstractmethod
    def _stream(self, prompt: Prompt, params: SamplingParams) -> Iterator[str]:
        """Yield text deltas of one completion; stop strings are applied by the caller."""

    def render(self, prompt: Prompt) -> str:
        """Turn a prompt into text; engines override this with their chat template."""
        if isinstance(prompt, str):
            return prompt
        return "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in prompt) + "<|assistant|>\n"

    def _stream_counted(
        self, prompt: Prompt, params: SamplingParams, usage: Completion
    ) -> Iterator[str]:
        """:meth:`_stream`, also filling ``usage``'s token counts (``prompt_tokens``,
        ``completion_tokens``, ``cached_tokens``) and ``finish_reason`` by the time it ends or
        is closed.

        ``finish_reason`` is the backend's own (``"stop"`` for end-of-sequence or a stop string
        it applied itself, ``"length"`` at ``max_tokens``); a stop string that :meth:`stream`
        cuts at makes it ``"stop"`` whatever the backend said.

        The default counts as :meth:`generate` does (one completion token per delta, no
        prompt tokens, ``"length"`` once ``max_tokens`` deltas came); backends that know their
        real token counts and finish reason override it.
        """
        try:
            for delta in self._stream(prompt, params):
                usage.completion_tokens += 1
                yield delta
        finally:
            full = usage.completion_tokens >= params.max_tokens
            usage.finish_reason = "length" if full else "stop"

    def _stream_finished(
        self, prompt: Prompt, params: SamplingParams, usage: Completion
    ) -> Iterator[str]:
        """:meth:`_stream_counted` for a caller that needs only ``usage.finish_reason``: a
        backend whose token counts cost something extra may skip them here (the default
        counts anyway)."""
        return self._stream_counted(prompt, params, usage)

    def stream(
        self,
        prompt: Prompt,
        params: SamplingParams | None = None,
        *,
        usage: Completion | None = None,
        count_tokens: bool = True,
    ) -> Iterator[str]:
        """Yield the completion's text deltas; with ``usage``, fill its token counts and
        ``finish_reason`` as the backend reports them (see :meth:`_stream_counted`) by the
        time the stream ends. ``count_tokens=False`` says only ``finish_reason`` is wanted
        (see :meth:`_stream_finished`)."""
        params = params or SamplingParams()
        emitted = ""
        held = ""  # text that may still turn out to be the start of a stop string
        hold = max((len(s) for s in params.stop), default=0)
        if usage is None:
            deltas = self._stream(prompt, params)
        elif count_tokens:
            deltas = self._stream_counted(prompt, params, usage)
        else:
            deltas = self._stream_finished(prompt, params, usage)
        for delta in deltas:
            held += delta
            text, stopped = apply_stop(emitted + held, params.stop)
            if stopped:
                close = getattr(deltas, "close", None)
                if close is not None:
                    close()  # end the request (and fill usage) now, not when collected
                if usage is not None:
                    usage.finish_reason = "stop"
                if len(text) > len(emitted):
                    yield text[len(emitted) :]
                return
            safe = len(held) - (hold - 1) if hold else len(held)
            if safe > 0:
                yield held[:safe]
                emitted += held[:safe]
                held = held[safe:]
        if held:
            yield held

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[Completion]:
        params = params or SamplingParams()
        out = []
        for prompt in prompts:
            pieces = list(self._stream(prompt, params))
            text, stopped = apply_stop("".join(pieces), params.stop)
            reason: Literal["stop", "length"] = (
                "stop" if stopped or len(pieces) < params.max_tokens else "length"
            )
            out.append(Completion(text=text, finish_reason=reason, completion_tokens=len(pieces)))
        return out

    async def agenerate(
        self, prompts: Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[Completion]:
        return await asyncio.to_thread(self.generate, prompts, params)

    async def astream(
        self,
        prompt: Prompt,
        params: SamplingParams | None = None,
        *,
        usage: Completion | None = None,
        count_tokens: bool = True,
    ) -> AsyncIterator[str]:
        """Run :meth:`stream` (``usage`` and ``count_tokens`` included) in a worker thread and
        hand its deltas to the event loop."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, str | BaseException | None]] = asyncio.Queue()
        cancelled = threading.Event()

        def pump() -> None:
            try:
                for delta in self.stream(prompt, params, usage=usage, count_tokens=count_tokens):
                    if cancelled.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, ("delta", delta))
                loop.call_soon_threadsafe(queue.put_nowait, ("end", None))
            except BaseException as exc:  # handed to the consumer, re-raised there
                loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))

        worker = loop.run_in_executor(None, pump)
        try:
            while True:
                kind, item = await queue.get()
                if kind == "delta":
                    assert isinstance(item, str)
                    yield item
                elif kind == "error":
                    assert isinstance(item, BaseException)
                    raise item
                else:
                    break
        finally:
            cancelled.set()
            await asyncio.shield(worker)

    def score(self, prompts: Sequence[Prompt], choices: Sequence[str]) -> list[list[float]]:
        raise NotImplementedError(f"{type(self).__name__} does not score continuations")

    def prefix_cache_stats(self) -> PrefixCacheStats | None:
        """Prefix-cache figures since the backend was built or last reset; None where the
        backend neither keeps a prefix cache nor hears of one (the default)."""
        return None

    def reset_prefix_cache(self) -> None:
        """Forget every cached prefix (the next call runs cold) and zero the figures of
        :meth:`prefix_cache_stats`; does nothing on a backend without a prefix cache."""
        return None  # no prefix cache: nothing to forget


Responder = Callable[[str], str]


@dataclass
class FakeLLM(BaseLLM):
    """A scripted LLM for tests: replies come from a list (in order) or a function of the prompt.

    Replies stream word by word (whitespace kept), optionally ``delay`` seconds apart, so that
    streaming consumers can be tested. Every rendered prompt is kept in ``prompts``.

    Args:
        responses: replies in order (the last one repeats), or a function prompt -> reply.
        delay: seconds to sleep before each streamed piece.
        scores: optional function (prompt, choice) -> log-probability for :meth:`score`.

    >>> llm = FakeLLM(["1. search('x')\\n2. join()<END_OF_PLAN>"])
    >>> llm.generate(["plan"], SamplingParams(stop=("<END_OF_PLAN>",)))[0].text
    "1. search('x')\\n2. join()"
    """

    responses: Sequence[str] | Responder = ("",)
    delay: float = 0.0
    scores: Callable[[str, str], float] | None = None
    model_name: str = "fake"
    prompts: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _reply(self, text: str) -> str:
        with self._lock:
            self.prompts.append(text)
            if callable(self.responses):
                return self.responses(text)
            index = min(len(self.prompts), len(self.responses)) - 1
            return self.responses[index]

    def _stream(self, prompt: Prompt, params: SamplingParams) -> Iterator[str]:
        import re
        import time

        reply = self._reply(self.render(prompt))
        for n, piece in enumerate(re.findall(r"\s*\S+|\s+", reply)):
            if n >= params.max_tokens:
                return
            if self.delay:
                time.sleep(self.delay)
            yield piece

    def score(self, prompts: Sequence[Prompt], choices: Sequence[str]) -> list[list[float]]:
        if self.scores is None:
            raise NotImplementedError("FakeLLM was built without a scores function")
        rendered = [self.render(p) for p in prompts]
        return [[self.scores(p, c) for c in choices] for p in rendered]
