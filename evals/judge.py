"""The judge: an LLM asked for JSON verdicts, batched, disk-cached and parsed strictly.

``Judge.ask(asks)`` renders every :class:`Ask` (a prompt and the pydantic model its answer
must fit), sends the uncached ones to the LLM in one ``generate`` call (the engine batches
them and its prefix cache shares the common instructions), and parses each reply: the first
JSON value in the text (code fences and chatter around it are tolerated) validated against
the model. A reply that does not parse or validate becomes a :class:`Reply` with ``error``
set, which metrics turn into NaN with that explanation -- never a silent 1.0.

The schema is passed as a ``Grammar(kind="json_schema")`` (constrained decoding) unless the
backend declares ``supports_grammar = False``; parsing stays strict either way. This module
does not define any metric.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from ragloom._config import cache_dir
from ragloom.evals.cache import CachedLLM, CompletionCache
from ragloom.runtime.llm import LLM, Grammar, SamplingParams

__all__ = ["Ask", "Judge", "Reply", "parse_json_reply"]

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Ask(Generic[T]):
    """One question to the judge: the prompt and the schema its JSON answer must fit."""

    prompt: str
    schema: type[T]


@dataclass(frozen=True, slots=True)
class Reply(Generic[T]):
    """The judge's parsed answer (``value``), or why there is none (``error``), and the raw text."""

    value: T | None
    error: str = ""
    raw: str = ""


def parse_json_reply(text: str, schema: type[T]) -> Reply[T]:
    """Parse the first JSON value in ``text`` and validate it against ``schema``.

    >>> from pydantic import BaseModel
    >>> class V(BaseModel):
    ...     verdict: int
    >>> parse_json_reply('Sure! ```json\\n{"verdict": 1}\\n```', V).value
    V(verdict=1)
    >>> parse_json_reply("no idea", V).error
    'no JSON object in the reply'
    """
    decoder = json.JSONDecoder()
    for start, char in enumerate(text):
        if char not in "{[":
            continue
        try:
            data, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        try:
            return Reply(schema.model_validate(data), raw=text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "top level"
            return Reply(None, f"reply does not fit the schema at {where}: {first['msg']}", text)
    return Reply(None, "no JSON object in the reply", text)


@dataclass(slots=True)
class Judge:
    """A judge LLM with a disk cache keyed by (prompt, model, sampling parameters).

    Args:
        llm: the judge model; None loads the embedded default (``load_llm()``).
        params: sampling parameters (greedy by default, so verdicts are reproducible).
        cache_path: the SQLite cache file (default ``cache_dir("judge")/judge.sqlite``).
        use_grammar: pass the schema as a JSON-schema grammar; None: yes, unless the
            backend says ``supports_grammar = False``.

    Example:
        >>> from ragloom.runtime import FakeLLM
        >>> import tempfile, pathlib
        >>> class Yes(BaseModel):
        ...     ok: bool
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "judge.sqlite"
        >>> judge = Judge(FakeLLM(['{"ok": true}']), cache_path=path)
        >>> judge.ask([Ask("Is it ok?", Yes)])[0].value
        Yes(ok=True)
    """

    llm: LLM | None = None
    params: SamplingParams = field(default_factory=lambda: SamplingParams(max_tokens=512))
    cache_path: Path | None = None
    use_grammar: bool | None = None
    _cached: CachedLLM | None = field(default=None, init=False, repr=False)

    @property
    def cached(self) -> CachedLLM:
        """The cache-wrapped judge model (loaded on first use)."""
        if self._cached is None:
            llm = self.llm
            if llm is None:
                from ragloom.runtime import load_llm  # type: ignore[attr-defined]

                llm = self.llm = load_llm()
            path = self.cache_path or cache_dir("judge") / "judge.sqlite"
            self._cached = CachedLLM(llm, CompletionCache(path))
        return self._cached

    @property
    def num_calls(self) -> int:
        """Prompts sent to the judge model so far (cache misses)."""
        return self._cached.num_calls if self._cached else 0

    def _params_for(self, schema: type[BaseModel]) -> SamplingParams:
        use = self.use_grammar
        if use is None:
            use = bool(getattr(self.cached.llm, "supports_grammar", True))
        if not use:
            return self.params
        grammar = Grammar(kind="json_schema", source=json.dumps(schema.model_json_schema()))
        return replace(self.params, grammar=grammar)

    def ask(self, asks: Sequence[Ask[T]]) -> list[Reply[T]]:
        """Answer every ask; one batched ``generate`` per distinct schema."""
        replies: list[Reply[T] | None] = [None] * len(asks)
        by_schema: dict[type[BaseModel], list[int]] = {}
        for i, ask in enumerate(asks):
            by_schema.setdefault(ask.schema, []).append(i)
        for schema, indices in by_schema.items():
            params = self._params_for(schema)
            done = self.cached.generate([asks[i].prompt for i in indices], params)
            for i, completion in zip(indices, done, strict=True):
                replies[i] = parse_json_reply(completion.text, asks[i].schema)
        return [r for r in replies if r is not None]
