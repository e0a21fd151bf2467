"""The index builder (every store kind, save/load round trips, crash safety) and the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ragloom.errors import ConfigError, IndexCorruptError, RetrievalError
from ragloom.retrievers import index as index_module
from ragloom.retrievers.base import HashEmbedder
from ragloom.retrievers.index import Index, build_index

FILES = {
    "masks.md": "# Masks\n\nFace masks reduce the spread of respiratory droplets. "
    "Surgical masks filter most large droplets.",
    "vaccines.txt": "Vaccines train the immune system. Boosters restore waning antibody levels.",
    "fruit/bananas.txt": "Bananas are rich in potassium and grow in tropical climates.",
    "kettle.jsonl": json.dumps({"text": "The red kettle boils water in two minutes."}) + "\n",
}


@pytest.fixture()
def corpus(tmp_path):
    root = tmp_path / "corpus"
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize("store", ["faiss", "chroma", "bm25", "hybrid"])
def test_build_save_load_round_trip(corpus, tmp_path, store):
    out = tmp_path / "index"
    built = build_index(
        corpus, store=store, chunker="sentences:80", embedder=HashEmbedder(64), out=out,
        progress=False,
    )  # fmt: skip
    assert {c.metadata["source"] for c in built.chunks} == set(FILES)
    for chunk in built.chunks:
        text = (corpus / chunk.metadata["source"]).read_text()
        if chunk.metadata["type"] != "json":
            assert text[chunk.metadata["start"] : chunk.metadata["end"]] == chunk.text
    query = "do surgical masks filter droplets"
    before = [(h.chunk.id, round(h.score, 5)) for h in built.search(query, k=3)]
    assert before[0][0].startswith("masks.md#")
    loaded = Index.load(out)  # the HashEmbedder is rebuilt from the manifest
    after = [(h.chunk.id, round(h.score, 5)) for h in loaded.search(query, k=3)]
    assert after == before
    assert [c.id for c in loaded.chunks] == [c.id for c in built.chunks]
    assert loaded.store == store and loaded.chunking == "sentences:80"
    filtered = loaded.search("potassium", k=5, where={"source": "fruit/bananas.txt"})
    assert filtered and {h.chunk.metadata["source"] for h in filtered} == {"fruit/bananas.txt"}


def test_load_with_another_embedder_is_refused(corpus, tmp_path):
    build_index(corpus, embedder=HashEmbedder(64), out=tmp_path / "i", progress=False)
    with pytest.raises(ConfigError, match="does not match the index"):
        Index.load(tmp_path / "i", embedder=HashEmbedder(32))


def test_missing_and_corrupt_index(tmp_path, corpus):
    with pytest.raises(RetrievalError, match="no index"):
        Index.load(tmp_path / "nothing")
    out = tmp_path / "i"
    build_index(corpus, store="bm25", out=out, progress=False)
    (out / "index.json").write_text("{not json")
    with pytest.raises(IndexCorruptError, match="index.json"):
        Index.load(out)


def test_crash_while_saving_keeps_the_previous_index(corpus, tmp_path, monkeypatch):
    out = tmp_path / "i"
    first = build_index(corpus, store="bm25", out=out, progress=False)
    (corpus / "new.txt").write_text("A brand new document about teapots.")
    second = build_index(corpus, store="bm25", progress=False)
    real = index_module._atomic_text

    def crash_on_manifest(path, text):
        if path.name == "index.json":
            raise OSError("disk full")
        real(path, text)

    monkeypatch.setattr(index_module, "_atomic_text", crash_on_manifest)
    with pytest.raises(OSError, match="disk full"):
        second.save(out)
    monkeypatch.setattr(index_module, "_atomic_text", real)
    reopened = Index.load(out)
    assert [c.id for c in reopened.chunks] == [c.id for c in first.chunks]
    second.save(out)
    assert len(Index.load(out).chunks) == len(first.chunks) + 1
    assert len(list(out.glob("chunks-*.jsonl"))) == 1


def test_build_errors(tmp_path, corpus):
    with pytest.raises(ConfigError, match="unknown store"):
        build_index(corpus, store="elastic", progress=False)  # type: ignore[arg-type]
    (tmp_path / "empty").mkdir()
    with pytest.raises(RetrievalError, match="nothing to index"):
        build_index(tmp_path / "empty", store="bm25", progress=False)


def test_as_source(corpus):
    index = build_index(corpus, store="bm25", progress=False)
    tool = index.as_source("notes", "Health and kitchen notes.", k=1).as_tool()
    assert "kettle" in tool.invoke({"query": "red kettle"})


@pytest.fixture()
def cli():
    from ragloom.cli import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def test_cli_index_and_search_with_the_default_embedder(cli, corpus, tmp_path):
    out = tmp_path / "idx"
    result = cli("index", corpus, "--out", out, "--chunking", "sentences:200", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "indexed" in result.output and "from 4 files (faiss)" in result.output
    result = cli("search", "do face coverings stop infections", "--index", out, "-k", "2", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert len(rows) == 2 and rows[0]["metadata"]["source"] == "masks.md"
    text = cli("search", "potassium", "--index", out, "-k", "1").output
    assert text.startswith("[1] fruit/bananas.txt#0")
    only = cli("search", "water", "--index", out, "--where", "type=json", "--json").output
    assert [json.loads(line)["id"] for line in only.splitlines()] == ["kettle.jsonl:1#0"]
    bad = cli("search", "water", "--index", out, "--where", "type")
    assert bad.exit_code == 1 and "expected KEY=VALUE" in bad.output


def test_cli_errors_exit_1_with_one_line(cli, corpus, tmp_path):
    result = cli("search", "x", "--index", tmp_path / "missing")
    assert result.exit_code == 1 and "error: no index" in result.output
    result = cli("index", corpus, "--out", tmp_path / "o", "--store", "elastic")
    assert result.exit_code == 1 and "unknown store" in result.output
    result = cli("index", corpus, "--out", tmp_path / "o", "--chunking", "paragraphs:3")
    assert result.exit_code == 1 and "unknown chunking kind" in result.output


def test_cli_refuses_symlinks_out_of_the_folder(cli, corpus, tmp_path):
    (tmp_path / "secret.txt").write_text("private")
    (corpus / "leak.txt").symlink_to(tmp_path / "secret.txt")
    result = cli("index", corpus, "--out", tmp_path / "o", "--store", "bm25", "--no-progress")
    assert result.exit_code == 1 and "leak.txt" in result.output
    assert "outside the indexed folder" in result.output
