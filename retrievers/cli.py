"""``ragloom index`` and ``ragloom search``: build an index of a folder, then query it.

Nothing heavy is imported at module level: torch, faiss, chromadb and friends load inside the
commands. Errors from ragloom's error tree are printed as one line and exit with status 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ragloom.errors import ConfigError, RagloomError

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, add_completion=False)


def _fail(exc: RagloomError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


def _parse_where(items: list[str]) -> dict[str, Any] | None:
    """``["source=a.md", "page=3"]`` -> ``{"source": "a.md", "page": 3}`` (JSON scalars parsed).

    >>> _parse_where(["source=a.md", "page=3"])
    {'source': 'a.md', 'page': 3}
    """
    where: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise _fail(ConfigError(f"--where {item!r}: expected KEY=VALUE"))
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        where[key] = value if isinstance(value, str | int | float | bool) else raw
    return where or None


@app.command("index")
def index_command(
    path: Path = typer.Argument(..., help="folder (or file) of .txt .md .html .json .jsonl .pdf"),
    out: Path = typer.Option(..., "--out", "-o", help="folder to write the index to"),
    store: str = typer.Option("faiss", help="faiss | chroma | bm25 | hybrid"),
    chunking: str = typer.Option(
        "fixed_tokens:256:32",
        help="fixed_tokens:SIZE:OVERLAP | chars:SIZE:OVERLAP | sentences:MAX[:OVERLAP] | "
        "semantic:percentile|std|iqr|gradient[:THRESHOLD]",
    ),
    glob: str = typer.Option("**/*", help="which files of the folder to index"),
    text_field: str = typer.Option("text", help="the text field of JSON / JSONL records"),
    faiss_index: str = typer.Option("flat", help="flat | hnsw | ivf (dense part)"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Build a searchable index of PATH and save it to --out."""
    from ragloom.retrievers.index import build_index

    try:
        index = build_index(
            path,
            store=store,  # type: ignore[arg-type]
            chunker=chunking,
            out=out,
            progress=progress,
            glob=glob,
            text_field=text_field,
            faiss_index=faiss_index,  # type: ignore[arg-type]
        )
    except RagloomError as exc:
        raise _fail(exc) from exc
    sources = len({c.metadata.get("source") for c in index.chunks})
    typer.echo(f"indexed {len(index.chunks)} chunks from {sources} files ({store}) -> {out}")


@app.command("search")
def search_command(
    query: str = typer.Argument(..., help="what to search for"),
    index: Path = typer.Option(..., "--index", "-i", help="an index folder from `ragloom index`"),
    k: int = typer.Option(5, "-k", min=1, help="number of hits"),
    as_json: bool = typer.Option(False, "--json", help="print hits as JSON lines"),
    max_chars: int = typer.Option(400, help="cut each printed passage to this many characters"),
    where: list[str] = typer.Option(
        [], "--where", help="metadata filter KEY=VALUE (repeatable), e.g. source=a.md or page=3"
    ),
) -> None:
    """Search an index built by `ragloom index`."""
    from ragloom.retrievers.index import Index
    from ragloom.retrievers.sources import render_hits

    try:
        hits = Index.load(index).search(query, k=k, where=_parse_where(where))
    except RagloomError as exc:
        raise _fail(exc) from exc
    if as_json:
        for hit in hits:
            row = {"id": hit.chunk.id, "score": hit.score, "rank": hit.rank}
            typer.echo(json.dumps({**row, "text": hit.chunk.text, "metadata": hit.chunk.metadata}))
    elif not hits:
        typer.echo(f"no results for {query!r}")
    else:
        typer.echo(render_hits(hits, max_chars=max_chars))
