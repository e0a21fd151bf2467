"""A disk cache of LLM completions, and an LLM wrapper that batches only the misses.

:class:`CompletionCache` is one SQLite file keyed by sha256 of (model name, prompt, sampling
parameters incl. seed and grammar). :class:`CachedLLM` wraps any :class:`~ragloom.runtime.LLM`:
``generate(prompts)`` answers cached prompts from disk and sends the rest to the model in one
batched call, so re-running a report or a sweep cell costs no model time. The cache keeps the
seconds each completion originally took, so latency figures survive a cache hit.

This module does not parse or judge anything (see :mod:`ragloom.evals.judge`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

from ragloom._sqlite import open_store
from ragloom.errors import EvalError
from ragloom.runtime.llm import LLM, Completion, Prompt, SamplingParams

__all__ = ["CachedLLM", "CompletionCache"]

_SCHEMA = """CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY, model TEXT, text TEXT, finish_reason TEXT,
    prompt_tokens INT, completion_tokens INT, elapsed_s REAL)"""


def cache_key(model: str, prompt: Prompt, params: SamplingParams) -> str:
    """A stable hash of what determines a completion.

    >>> len(cache_key("m", "hi", SamplingParams()))
    64
    """
    payload = json.dumps([model, prompt, dataclasses.asdict(params)], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


class CompletionCache:
    """Completions on disk (SQLite, WAL mode, safe across threads and processes).

    Args:
        path: the SQLite file (created with its folder).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = open_store(path, _SCHEMA, error=EvalError, what="the completion cache")

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[Completion, float]]:
        """The cached (completion, original seconds) of each key that is present."""
        found: dict[str, tuple[Completion, float]] = {}
        with self._lock:
            for key in keys:
                row = self._db.execute(
                    "SELECT text, finish_reason, prompt_tokens, completion_tokens, elapsed_s "
                    "FROM completions WHERE key = ?", (key,)).fetchone()
                if row:
                    found[key] = (Completion(text=row[0], finish_reason=row[1],
                                             prompt_tokens=row[2], completion_tokens=row[3]),
                                  row[4])
        return found

    def put_many(self, model: str, items: Sequence[tuple[str, Completion, float]]) -> None:
        """Store (key, completion, seconds) triples in one transaction."""
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(k, model, c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens, s)
                 for k, c, s in items])
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0])


class CachedLLM:
    """An :class:`~ragloom.runtime.LLM` that answers repeated prompts from a disk cache.

    Attributes:
        num_calls: prompts actually sent to the wrapped model.
        num_hits: prompts answered from the cache.
        last_elapsed: seconds each completion of the last ``generate`` originally took.

    >>> from ragloom.runtime import FakeLLM
    >>> import tempfile, pathlib
    >>> llm = CachedLLM(FakeLLM(["yes"]), CompletionCache(pathlib.Path(tempfile.mkdtemp()) / "c"))
    >>> [c.text for c in llm.generate(["q", "q"])], llm.num_calls, llm.num_hits
    (['yes', 'yes'], 1, 1)
    """

    def __init__(self, llm: LLM, cache: CompletionCache) -> None:
        self.llm, self.cache = llm, cache
        self.model_name = llm.model_name
        self.num_calls = self.num_hits = 0
        self.last_elapsed: list[float] = []
        self._lock = threading.Lock()

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[Completion]:
        """Complete every prompt: cached ones from disk, the distinct misses in one batch."""
        params = params or SamplingParams()
        keys = [cache_key(self.model_name, p, params) for p in prompts]
        found = self.cache.get_many(keys)
        misses = list(dict.fromkeys(k for k in keys if k not in found))
        if misses:
            first = {k: p for k, p in zip(keys, prompts, strict=True)}
            start = time.perf_counter()
            done = self.llm.generate([first[k] for k in misses], params)
            each = (time.perf_counter() - start) / len(misses)
            self.cache.put_many(self.model_name, [(k, c, each) for k, c in zip(misses, done,
                                                                             strict=True)])
            found.update({k: (c, each) for k, c in zip(misses, done, strict=True)})
        with self._lock:
            self.num_calls += len(misses)
            self.num_hits += len(keys) - len(misses)
            self.last_elapsed = [found[k][1] for k in keys]
        return [dataclasses.replace(found[k][0]) for k in keys]

    async def agenerate(
        self, prompts: Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[Completion]:
        """Async twin of :meth:`generate`."""
        return await asyncio.to_thread(self.generate, prompts, params)

    def stream(self, prompt: Prompt, params: SamplingParams | None = None) -> Iterator[str]:
        """Yield the (cached) completion of one prompt as a single delta."""
        yield self.generate([prompt], params)[0].text

    async def astream(
        self, prompt: Prompt, params: SamplingParams | None = None
    ) -> AsyncIterator[str]:
        """Async twin of :meth:`stream`."""
        yield (await self.agenerate([prompt], params))[0].text

    def score(self, prompts: Sequence[Prompt], choices: Sequence[str]) -> list[list[float]]:
        """Delegated to the wrapped model (not cached)."""
        return self.llm.score(prompts, choices)
