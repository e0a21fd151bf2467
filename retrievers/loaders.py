"""Load files from a folder into :class:`Document` objects, keeping where each came from.

Supported: ``.txt``, ``.md``/``.markdown``, ``.html``/``.htm`` (BeautifulSoup), ``.json`` and
``.jsonl`` (a configurable text field), ``.pdf`` (pypdf, one document per page). Every document
carries ``source`` (its path relative to the indexed folder), ``type`` and, where a file holds
several documents, a position (``page`` for PDFs, ``line`` for JSONL, ``record`` for JSON lists).

Paths that lead outside the folder being indexed (``..`` or symlinks pointing out) are refused
with a :class:`~ragloom.errors.RetrievalError` naming the path. This module does not chunk (see
:mod:`ragloom.retrievers.chunking`) and does not fetch anything from the network.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragloom.errors import RetrievalError
from ragloom.retrievers._types import Metadata

__all__ = ["SUPPORTED_SUFFIXES", "Document", "load_documents"]


@dataclass(slots=True)
class Document:
    """One loaded text with its metadata.

    Attributes:
        id: unique within a load, e.g. ``"notes/a.md"``, ``"paper.pdf#p3"``, ``"qa.jsonl:7"``.
        text: the document's text.
        metadata: at least ``source`` (path relative to the indexed folder) and ``type``.
    """

    id: str
    text: str
    metadata: Metadata = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Options:
    text_field: str
    id_field: str | None


Reader = Callable[[Path, str, _Options], Iterator[Document]]


def load_documents(
    path: str | Path,
    *,
    glob: str = "**/*",
    root: str | Path | None = None,
    text_field: str = "text",
    id_field: str | None = None,
) -> list[Document]:
    """Load every supported file under ``path`` (or ``path`` itself if it is a file).

    Args:
        path: a folder or a single file.
        glob: which files of a folder to load (hidden files and folders are skipped).
        root: the folder nothing may escape; defaults to ``path`` (or its parent for a file).
        text_field: the field holding the text in JSON / JSONL records.
        id_field: an optional record field to use as the document id in JSON / JSONL.

    Returns:
        The documents, in sorted path order.

    Raises:
        RetrievalError: ``path`` does not exist, a path escapes ``root``, a single file has an
            unsupported type, or a file cannot be parsed (the message names the file).

    >>> docs = load_documents("notes")  # doctest: +SKIP
    >>> docs[0].metadata["source"]  # doctest: +SKIP
    'a.md'
    """
    path = Path(path)
    if not path.exists():
        raise RetrievalError(f"cannot load {str(path)!r}: no such file or folder")
    given = Path(root) if root is not None else (path if path.is_dir() else path.parent)
    base = given.resolve()
    options = _Options(text_field=text_field, id_field=id_field)
    if path.is_file():
        if _reader(path) is None:
            raise RetrievalError(
                f"cannot load {str(path)!r}: unsupported file type "
                f"(supported: {', '.join(sorted(SUPPORTED_SUFFIXES))})"
            )
        files = [path]
    else:
        _check_inside(path, base)
        files = sorted(p for p in path.glob(glob) if _wanted(p, path))
    docs: list[Document] = []
    for file in files:
        resolved = _check_inside(file, base)
        reader = _reader(file)
        if reader is None:
            continue
        rel = _relative(file, given, resolved, base)
        try:
            docs.extend(reader(resolved, rel, options))
        except RetrievalError:
            raise
        except Exception as exc:  # parser errors of json / pypdf / bs4, named by file
            raise RetrievalError(f"cannot parse {str(file)!r}: {exc}") from exc
    return docs


def _check_inside(path: Path, base: Path) -> Path:
    resolved = path.resolve()
    if not resolved.is_relative_to(base):
        raise RetrievalError(
            f"refusing {str(path)!r}: it resolves to {str(resolved)!r}, outside the indexed "
            f"folder {str(base)!r} ('..' or a symlink pointing out)"
        )
    return resolved


def _relative(file: Path, given: Path, resolved: Path, base: Path) -> str:
    """The path as listed (a symlink keeps its own name), relative to the indexed folder."""
    listed, top = Path(os.path.abspath(file)), Path(os.path.abspath(given))
    return (
        listed.relative_to(top) if listed.is_relative_to(top) else resolved.relative_to(base)
    ).as_posix()


def _wanted(path: Path, top: Path) -> bool:
    rel = path.relative_to(top)
    hidden = any(part.startswith(".") for part in rel.parts)
    return not hidden and (path.is_file() or path.is_symlink())


def _reader(path: Path) -> Reader | None:
    return _READERS.get(path.suffix.lower())


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _read_plain(path: Path, rel: str, options: _Options) -> Iterator[Document]:
    kind = "markdown" if path.suffix.lower() in {".md", ".markdown"} else "text"
    text = _read_text(path)
    if text.strip():
        meta: Metadata = {"source": rel, "type": kind}
        heading = re.search(r"^#\s+(.+?)\s*#*\s*$", text, re.MULTILINE)
        if kind == "markdown" and heading:
            meta["title"] = heading.group(1)
        yield Document(rel, text, meta)


def _read_html(path: Path, rel: str, options: _Options) -> Iterator[Document]:
    from ragloom._lazy import require

    bs4 = require("bs4", "retrieval")
    soup = bs4.BeautifulSoup(_read_text(path), "html.parser")
    for tag in soup(["script", "style", "noscript"]):
        tag.decompose()
    title = soup.title.get_text(strip=True) if soup.title else ""
    lines = (line.strip() for line in soup.get_text(separator="\n").splitlines())
    text = "\n".join(line for line in lines if line)
    if text:
        meta: Metadata = {"source": rel, "type": "html"}
        if title:
            meta["title"] = title
        yield Document(rel, text, meta)


def _record_doc(record: Any, rel: str, where: str, pos: int, options: _Options) -> Document:
    if not isinstance(record, dict) or not isinstance(record.get(options.text_field), str):
        raise RetrievalError(
            f"{rel} {where} {pos}: expected an object with a string field "
            f"{options.text_field!r} (set text_field= to the field that holds the text)"
        )
    meta: Metadata = {
        k: v
        for k, v in record.items()
        if k != options.text_field and isinstance(v, str | int | float | bool)
    }
    meta.update({"source": rel, "type": "json", where: pos})
    doc_id = f"{rel}:{pos}" if where == "line" else f"{rel}#{pos}"
    if options.id_field is not None and options.id_field in record:
        doc_id = str(record[options.id_field])
    return Document(doc_id, record[options.text_field], meta)


def _read_json(path: Path, rel: str, options: _Options) -> Iterator[Document]:
    data = json.loads(_read_text(path))
    if isinstance(data, list):
        for i, record in enumerate(data):
            yield _record_doc(record, rel, "record", i, options)
    else:
        doc = _record_doc(data, rel, "record", 0, options)
        if options.id_field is None:
            doc.id = rel
        yield doc


def _read_jsonl(path: Path, rel: str, options: _Options) -> Iterator[Document]:
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        if line.strip():
            yield _record_doc(json.loads(line), rel, "line", n, options)


def _read_pdf(path: Path, rel: str, options: _Options) -> Iterator[Document]:
    from ragloom._lazy import require

    pypdf = require("pypdf", "retrieval")
    reader = pypdf.PdfReader(str(path))
    for number, page in enumerate(reader.pages, start=1):
        text = page.extract_text() or ""
        if text.strip():
            yield Document(f"{rel}#p{number}", text, {"source": rel, "type": "pdf", "page": number})


_READERS: dict[str, Reader] = {
    ".txt": _read_plain,
    ".md": _read_plain,
    ".markdown": _read_plain,
    ".html": _read_html,
    ".htm": _read_html,
    ".json": _read_json,
    ".jsonl": _read_jsonl,
    ".pdf": _read_pdf,
}

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_READERS)
"""File name suffixes that :func:`load_documents` reads."""
