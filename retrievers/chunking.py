"""Chunking policies: split a :class:`Document` into :class:`Chunk` objects with exact offsets.

Every chunk's text is exactly ``doc.text[start:end]``, and its metadata keeps the document's
metadata plus ``source``, ``doc_id``, ``start``, ``end`` (character offsets) and ``chunk_index``.
The policies are the ones the RAG hyper-parameter literature compares:

- :class:`FixedTokenChunker` -- windows of N tokens of the embedding model's tokenizer.
- :class:`FixedCharChunker` -- windows of N characters.
- :class:`SentenceChunker` -- whole sentences packed up to a character budget.
- :class:`SemanticChunker` -- breaks where the embedding distance between neighbouring sentences
  jumps (by percentile, standard deviation, interquartile range or gradient).

:func:`make_chunker` builds one from a short spec string (``"chars:1000:100"``) for the CLI and
for sweeps. This module does not load files (see :mod:`ragloom.retrievers.loaders`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from ragloom.errors import ConfigError, RetrievalError
from ragloom.retrievers._types import Chunk, Embedder
from ragloom.retrievers.loaders import Document

__all__ = [
    "Chunker",
    "FixedCharChunker",
    "FixedTokenChunker",
    "SemanticChunker",
    "SentenceChunker",
    "chunk_documents",
    "make_chunker",
    "split_sentences",
]

Span = tuple[int, int]
Breakpoint = Literal["percentile", "std", "iqr", "gradient"]


@runtime_checkable
class Chunker(Protocol):
    """Splits one document into chunks whose offsets point into ``doc.text``."""

    def split(self, doc: Document) -> list[Chunk]:
        """Return the document's chunks, in order."""
        ...


def _chunks(doc: Document, spans: Iterable[Span]) -> list[Chunk]:
    out: list[Chunk] = []
    for start, end in spans:
        if not doc.text[start:end].strip():
            continue
        index = len(out)
        meta = {**doc.metadata, "source": doc.metadata.get("source", doc.id), "doc_id": doc.id}
        meta.update(start=start, end=end, chunk_index=index)
        out.append(Chunk(f"{doc.id}#{index}", doc.text[start:end], meta))
    return out


def _windows(n: int, size: int, overlap: int) -> list[Span]:
    """Index windows ``[i, i + size)`` stepping by ``size - overlap`` that cover ``range(n)``.

    >>> _windows(10, 4, 1)
    [(0, 4), (3, 7), (6, 10)]
    """
    step = size - overlap
    spans = []
    for start in range(0, max(n, 1), step):
        spans.append((start, min(start + size, n)))
        if start + size >= n:
            break
    return spans


def _check_window(size: int, overlap: int) -> None:
    if size <= 0:
        raise ConfigError(f"chunk size must be positive, got {size}")
    if not 0 <= overlap < size:
        raise ConfigError(f"overlap must be in [0, size={size}), got {overlap}")


@dataclass(frozen=True, slots=True)
class FixedCharChunker:
    """Windows of ``size`` characters, each overlapping the previous by ``overlap``.

    >>> [c.text for c in FixedCharChunker(4, 1).split(Document("d", "abcdefghij"))]
    ['abcd', 'defg', 'ghij']
    """

    size: int
    overlap: int = 0

    def __post_init__(self) -> None:
        _check_window(self.size, self.overlap)

    def split(self, doc: Document) -> list[Chunk]:
        """Split ``doc`` into character windows."""
        return _chunks(doc, _windows(len(doc.text), self.size, self.overlap))


def _token_offsets(tokenizer: Any, text: str) -> list[Span]:
    """Character spans of ``text``'s tokens, from a ``tokenizers`` or ``transformers`` tokenizer."""
    if hasattr(tokenizer, "encode_batch"):  # tokenizers.Tokenizer
        return list(tokenizer.encode(text, add_special_tokens=False).offsets)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    return [tuple(o) for o in encoded["offset_mapping"]]


class FixedTokenChunker:
    """Windows of ``size`` tokens of a Hugging Face tokenizer, overlapping by ``overlap`` tokens.

    Token character offsets map each window back onto the source text. The default tokenizer
    is all-MiniLM-L6-v2's (the default embedder's), loaded on first use.

    Args:
        size: tokens per chunk (special tokens not counted).
        overlap: tokens shared with the previous chunk.
        tokenizer: a ``tokenizers.Tokenizer`` or fast ``transformers`` tokenizer, a model
            folder to load ``tokenizer.json`` from, or None.

    >>> FixedTokenChunker(256, 32).split(Document("d", "Hello world."))[0].text  # doctest: +SKIP
    'Hello world.'
    """

    def __init__(self, size: int, overlap: int = 0, tokenizer: Any = None) -> None:
        _check_window(size, overlap)
        self.size = size
        self.overlap = overlap
        self._tokenizer = tokenizer

    @property
    def tokenizer(self) -> Any:
        """The tokenizer, loaded on first use."""
        if self._tokenizer is None or isinstance(self._tokenizer, str):
            from ragloom.retrievers.embeddings import load_fast_tokenizer

            self._tokenizer = load_fast_tokenizer(self._tokenizer, padding=False)
        return self._tokenizer

    def split(self, doc: Document) -> list[Chunk]:
        """Split ``doc`` into token windows."""
        offsets = _token_offsets(self.tokenizer, doc.text)
        spans = [
            (offsets[a][0], offsets[b - 1][1])
            for a, b in _windows(len(offsets), self.size, self.overlap)
            if b > a
        ]
        return _chunks(doc, spans)

    def __repr__(self) -> str:
        return f"FixedTokenChunker(size={self.size}, overlap={self.overlap})"


# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) before whitespace,
# or at a blank line. subtle: abbreviations such as "e.g. the" are not split when the next
# word starts lower-case.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])|\n\s*\n")


def split_sentences(text: str) -> list[Span]:
    """Sentence spans ``(start, end)`` of ``text``, whitespace between sentences excluded.

    >>> t = "One. Two! e.g. three?"
    >>> [t[a:b] for a, b in split_sentences(t)]
    ['One.', 'Two! e.g. three?']
    """
    spans: list[Span] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    spans.append((start, len(text)))
    out = []
    for a, b in spans:
        stripped = text[a:b]
        if stripped.strip():
            lead = len(stripped) - len(stripped.lstrip())
            out.append((a + lead, a + len(stripped.rstrip())))
    return out


def _pack(sentences: Sequence[Span], max_chars: int, overlap: int) -> list[Span]:
    """Greedily pack consecutive sentences into spans of at most ``max_chars`` characters.

    A sentence longer than ``max_chars`` is cut into character windows of its own. Each new
    span repeats up to ``overlap`` sentences of the previous one (fewer when they would not
    leave room for a new sentence), so every span adds text.
    """
    out: list[Span] = []
    i, n = 0, len(sentences)
    while i < n:
        start, end = sentences[i]
        if end - start > max_chars:
            out.extend((start + a, start + b) for a, b in _windows(end - start, max_chars, 0))
            i += 1
            continue
        j = i + 1
        while j < n and sentences[j][1] - start <= max_chars:
            j += 1
        out.append((start, sentences[j - 1][1]))
        if j >= n:
            break
        back = min(overlap, j - i - 1)  # never restart at i itself
        while back and sentences[j][1] - sentences[j - back][0] > max_chars:
            back -= 1
        i = j - back
    return out


@dataclass(frozen=True, slots=True)
class SentenceChunker:
    """Whole sentences packed into chunks of at most ``max_chars`` characters.

    >>> doc = Document("d", "A. B. C. D.")
    >>> [c.text for c in SentenceChunker(6, overlap_sentences=1).split(doc)]
    ['A. B.', 'B. C.', 'C. D.']
    """

    max_chars: int
    overlap_sentences: int = 0

    def __post_init__(self) -> None:
        if self.max_chars <= 0:
            raise ConfigError(f"max_chars must be positive, got {self.max_chars}")
        if self.overlap_sentences < 0:
            raise ConfigError(f"overlap_sentences must be >= 0, got {self.overlap_sentences}")

    def split(self, doc: Document) -> list[Chunk]:
        """Split ``doc`` into sentence-aligned chunks."""
        spans = _pack(split_sentences(doc.text), self.max_chars, self.overlap_sentences)
        return _chunks(doc, spans)


_DEFAULT_THRESHOLD: dict[str, float] = {"percentile": 95, "std": 3, "iqr": 1.5, "gradient": 95}


def _breaks(distances: np.ndarray, breakpoint: Breakpoint, threshold: float) -> list[int]:
    """Indices ``i`` where the text should break after sentence ``i``."""
    if breakpoint == "percentile":
        values, cut = distances, float(np.percentile(distances, threshold))
    elif breakpoint == "std":
        values, cut = distances, float(distances.mean() + threshold * distances.std())
    elif breakpoint == "iqr":
        q1, q3 = np.percentile(distances, [25, 75])
        values, cut = distances, float(distances.mean() + threshold * (q3 - q1))
    else:  # gradient: break where the distance rises fastest
        values = np.gradient(distances) if len(distances) > 1 else distances
        cut = float(np.percentile(values, threshold))
    return [int(i) for i in np.flatnonzero(values > cut)]


class SemanticChunker:
    """Break between sentences whose embeddings are far apart (Kamradt's semantic chunking).

    Each sentence is embedded together with ``buffer`` neighbours on each side; the cosine
    distance between consecutive windows is computed, and the text breaks wherever it exceeds a
    cut-off: the ``threshold``-th percentile (``"percentile"``, default 95), mean + ``threshold``
    standard deviations (``"std"``, default 3), mean + ``threshold`` interquartile ranges
    (``"iqr"``, default 1.5), or where the gradient of the distances passes its
    ``threshold``-th percentile (``"gradient"``, default 95). Groups longer than ``max_chars``
    are re-packed sentence by sentence.

    >>> SemanticChunker(default_embedder(), "std", 2.0).split(doc)  # doctest: +SKIP
    """

    def __init__(
        self,
        embedder: Embedder,
        breakpoint: Breakpoint = "percentile",
        threshold: float | None = None,
        *,
        buffer: int = 1,
        max_chars: int | None = None,
    ) -> None:
        if breakpoint not in _DEFAULT_THRESHOLD:
            raise ConfigError(
                f"unknown breakpoint {breakpoint!r}; use one of {sorted(_DEFAULT_THRESHOLD)}"
            )
        if buffer < 0 or (max_chars is not None and max_chars <= 0):
            raise ConfigError(f"buffer must be >= 0 and max_chars > 0, got {buffer}, {max_chars}")
        self.embedder = embedder
        self.breakpoint: Breakpoint = breakpoint
        self.threshold = _DEFAULT_THRESHOLD[breakpoint] if threshold is None else threshold
        self.buffer = buffer
        self.max_chars = max_chars

    def split(self, doc: Document) -> list[Chunk]:
        """Split ``doc`` at semantic breakpoints."""
        sentences = split_sentences(doc.text)
        if len(sentences) < 3:
            return _chunks(doc, [(sentences[0][0], sentences[-1][1])] if sentences else [])
        n, b = len(sentences), self.buffer
        windows = [
            doc.text[sentences[max(0, i - b)][0] : sentences[min(n - 1, i + b)][1]]
            for i in range(n)
        ]
        emb = self.embedder.embed(windows)
        distances = 1.0 - np.einsum("ij,ij->i", emb[:-1], emb[1:])
        groups, first = [], 0
        for i in [*_breaks(distances, self.breakpoint, self.threshold), n - 1]:
            groups.append(sentences[first : i + 1])
            first = i + 1
        spans: list[Span] = []
        for group in groups:
            if self.max_chars is not None and group[-1][1] - group[0][0] > self.max_chars:
                spans.extend(_pack(group, self.max_chars, 0))
            else:
                spans.append((group[0][0], group[-1][1]))
        return _chunks(doc, spans)

    def __repr__(self) -> str:
        return f"SemanticChunker({self.breakpoint!r}, threshold={self.threshold})"


def chunk_documents(docs: Iterable[Document], chunker: Chunker) -> list[Chunk]:
    """Split every document; chunk ids must come out unique.

    Raises:
        RetrievalError: two chunks share an id (two documents with the same id).
    """
    chunks = [chunk for doc in docs for chunk in chunker.split(doc)]
    seen: set[str] = set()
    for chunk in chunks:
        if chunk.id in seen:
            raise RetrievalError(f"duplicate chunk id {chunk.id!r}: two documents share an id")
        seen.add(chunk.id)
    return chunks


_SPEC_HELP = (
    "use 'fixed_tokens:SIZE[:OVERLAP]', 'chars:SIZE[:OVERLAP]', "
    "'sentences:MAX_CHARS[:OVERLAP_SENTENCES]' or 'semantic[:BREAKPOINT[:THRESHOLD]]', "
    "or a dict {'kind': ..., **arguments}"
)


def make_chunker(spec: str | dict[str, Any], *, embedder: Embedder | None = None) -> Chunker:
    """Build a chunker from a spec string or dict (used by the CLI and by sweeps).

    Args:
        spec: e.g. ``"fixed_tokens:256:32"``, ``"chars:1000:100"``, ``"sentences:800"``,
            ``"semantic:percentile:95"``, or ``{"kind": "chars", "size": 500, "overlap": 50}``.
        embedder: for semantic chunking; defaults to :func:`default_embedder`.

    Raises:
        ConfigError: the spec is malformed or names an unknown kind.

    >>> make_chunker("chars:1000:100")
    FixedCharChunker(size=1000, overlap=100)
    """
    if isinstance(spec, dict):
        kwargs = dict(spec)
        kind, args = str(kwargs.pop("kind", "")), []
    else:
        kind, *args = spec.strip().split(":")
        kwargs = {}
    try:
        if kind in {"fixed_tokens", "tokens"}:
            return FixedTokenChunker(*map(int, args), **kwargs)
        if kind in {"chars", "fixed_chars"}:
            return FixedCharChunker(*map(int, args), **kwargs)
        if kind in {"sentences", "sentence"}:
            return SentenceChunker(*map(int, args), **kwargs)
        if kind == "semantic":
            if embedder is None:
                from ragloom.retrievers.embeddings import default_embedder

                embedder = default_embedder()
            threshold = [float(a) for a in args[1:2]]
            return SemanticChunker(embedder, *args[:1], *threshold, **kwargs)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"bad chunking spec {spec!r} ({exc}); {_SPEC_HELP}") from exc
    raise ConfigError(f"unknown chunking kind {kind!r} in {spec!r}; {_SPEC_HELP}")
