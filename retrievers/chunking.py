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

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ragloom.errors import ConfigError, RetrievalError
from ragloom.retrievers._semantic import SemanticChunker
from ragloom.retrievers._spans import Span, make_chunks, pack_sentences, split_sentences, windows
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


@runtime_checkable
class Chunker(Protocol):
    """Splits one document into chunks whose offsets point into ``doc.text``."""

    def split(self, doc: Document) -> list[Chunk]:
        """Return the document's chunks, in order."""
        ...


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
        return make_chunks(doc, windows(len(doc.text), self.size, self.overlap))


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
        size: tokens per chunk, special tokens not counted (the embedder adds two for BERT-style
            models, so with all-MiniLM-L6-v2's 256-token limit, sizes above 254 lose their last
            tokens when embedded -- the chunk text itself is kept whole).
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
            for a, b in windows(len(offsets), self.size, self.overlap)
            if b > a
        ]
        return make_chunks(doc, spans)

    def __repr__(self) -> str:
        return f"FixedTokenChunker(size={self.size}, overlap={self.overlap})"


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
        spans = pack_sentences(split_sentences(doc.text), self.max_chars, self.overlap_sentences)
        return make_chunks(doc, spans)


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
