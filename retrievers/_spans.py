"""Span arithmetic shared by the chunkers: windows, sentence spans, packing, chunk objects.

Offsets are character positions in a document's text; every chunk made here is exactly
``doc.text[start:end]``. Private: the chunkers in :mod:`ragloom.retrievers.chunking` are the
public surface. This module does not tokenise or embed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ragloom.retrievers._types import Chunk
from ragloom.retrievers.loaders import Document

__all__ = ["Span", "make_chunks", "pack_sentences", "split_sentences", "windows"]

Span = tuple[int, int]


def make_chunks(doc: Document, spans: Iterable[Span]) -> list[Chunk]:
    """Chunks ``doc.text[start:end]`` numbered in order; whitespace-only spans are dropped."""
    out: list[Chunk] = []
    for start, end in spans:
        if not doc.text[start:end].strip():
            continue
        index = len(out)
        meta = {**doc.metadata, "source": doc.metadata.get("source", doc.id), "doc_id": doc.id}
        meta.update(start=start, end=end, chunk_index=index)
        out.append(Chunk(f"{doc.id}#{index}", doc.text[start:end], meta))
    return out


def windows(n: int, size: int, overlap: int) -> list[Span]:
    """Index windows ``[i, i + size)`` stepping by ``size - overlap`` that cover ``range(n)``.

    >>> windows(10, 4, 1)
    [(0, 4), (3, 7), (6, 10)]
    """
    step = size - overlap
    spans = []
    for start in range(0, max(n, 1), step):
        spans.append((start, min(start + size, n)))
        if start + size >= n:
            break
    return spans


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


def pack_sentences(sentences: Sequence[Span], max_chars: int, overlap: int) -> list[Span]:
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
            out.extend((start + a, start + b) for a, b in windows(end - start, max_chars, 0))
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
