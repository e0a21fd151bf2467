"""Turning observations into prompt text: task results for joiners, evidence for answerers.

Values are rendered compactly and cut to a budget, so a small model's context is not flooded.
Retrieval results (hits or chunks) are shown as ``[chunk id] text`` so answers can cite them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ragloom.errors import ContextWindowError

if TYPE_CHECKING:
    from ragloom.agent import PlanRound
    from ragloom.runtime.llm import LLM, Message, SamplingParams
    from ragloom.tfu import Observation

__all__ = [
    "call_text",
    "evidence_ids",
    "generate_fitting",
    "render_rounds",
    "render_value",
    "stream_fitting",
]


def _chunk_of(value: Any) -> Any:
    chunk = getattr(value, "chunk", value)
    if isinstance(getattr(chunk, "id", None), str) and isinstance(
        getattr(chunk, "text", None), str
    ):
        return chunk
    return None


def render_value(value: Any, max_chars: int = 600) -> str:
    """A short text form of a tool's output; hits/chunks as ``[id] text``.

    >>> render_value("x" * 10, max_chars=4)
    'xxxx…'
    """
    items = value if isinstance(value, list | tuple) else [value]
    chunks = [_chunk_of(v) for v in items]
    if items and all(c is not None for c in chunks):
        text = "\n".join(f"[{c.id}] {' '.join(c.text.split())}" for c in chunks)
    elif isinstance(value, list | tuple) and not value:
        text = "(nothing found)"
    else:
        text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= max_chars else text[:max_chars] + "…"


def call_text(obs: Observation) -> str:
    """``tool(args)`` as the task was called (arguments after ``$N`` substitution).

    The observation's ``args`` is a dict of keyword arguments (or a list of positional ones).
    """
    args = obs.args
    if isinstance(args, dict):
        inner = ", ".join(f"{k}={v!r}" for k, v in args.items())
    elif isinstance(args, list | tuple):
        inner = ", ".join(repr(a) for a in args)
    else:
        inner = repr(args)
    return f"{obs.tool}({inner})"


def _result_line(obs: Observation, max_chars: int) -> str:
    result = render_value(obs.value, max_chars) if obs.ok else f"ERROR: {obs.error}"
    return f"{obs.task_id}. {call_text(obs)}\n   -> {result}"


def render_rounds(rounds: Sequence[PlanRound], max_chars: int = 600) -> str:
    """Every round's task results, a replan reason or plan error after each round.

    Args:
        rounds: the rounds so far.
        max_chars: the most characters shown of one task's result.
    """
    lines: list[str] = []
    for number, rnd in enumerate(rounds, 1):
        if len(rounds) > 1:
            lines.append(f"Plan {number}:")
        lines += [_result_line(o, max_chars) for _, o in sorted(rnd.observations.items())]
        if not rnd.observations:
            lines.append("(no tool was called)")
        if rnd.error:
            lines.append(f"(the plan broke off: {rnd.error})")
        if rnd.reason:
            lines.append(f"(not enough because: {rnd.reason})")
    return "\n".join(lines)


def evidence_ids(observations: Iterable[Observation]) -> list[str]:
    """Chunk ids in the observations' values, first occurrence order."""
    seen: dict[str, None] = {}
    for obs in observations:
        if not obs.ok:
            continue
        items = obs.value if isinstance(obs.value, list | tuple) else [obs.value]
        for item in items:
            chunk = _chunk_of(item)
            if chunk is not None:
                seen.setdefault(chunk.id, None)
    return list(seen)


async def generate_fitting(
    llm: LLM,
    prompt_for: Callable[[int], list[Message]],
    params: SamplingParams,
    max_chars: int,
    min_chars: int,
) -> str:
    """The model's reply to ``prompt_for(limit)``, with ``limit`` (the characters shown of each
    result) cut until the prompt fits the model's context window.

    ``limit`` starts at ``max_chars`` and halves at each ``ContextWindowError`` (which backends
    raise before decoding, so a retry costs a tokenisation) down to ``min_chars``; a prompt
    that does not fit even then raises the backend's error to the caller.
    """
    limit = max_chars
    while True:
        try:
            return (await llm.agenerate([prompt_for(limit)], params))[0].text
        except ContextWindowError:
            smaller = _smaller(limit, min_chars)
            if smaller is None:
                raise
            limit = smaller


async def stream_fitting(
    llm: LLM,
    prompt_for: Callable[[int], list[Message]],
    params: SamplingParams,
    max_chars: int,
    min_chars: int,
) -> AsyncIterator[str]:
    """:func:`generate_fitting`, streamed: the reply's text as the model writes it. The window
    is checked before the first piece, so a retry never repeats text already yielded."""
    limit = max_chars
    while True:
        started = False
        try:
            async for piece in llm.astream(prompt_for(limit), params):
                started = True
                yield piece
            return
        except ContextWindowError:
            smaller = None if started else _smaller(limit, min_chars)
            if smaller is None:
                raise
            limit = smaller


def _smaller(limit: int, min_chars: int) -> int | None:
    """The next share to try after a refusal: half, not below ``min_chars``; None once
    ``min_chars`` itself was refused."""
    return None if limit <= min_chars else max(min_chars, limit // 2)
