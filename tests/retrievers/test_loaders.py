"""Loaders: every supported format from files made here, metadata, and path-escape refusal."""

from __future__ import annotations

import json
import os

import pytest

from ragloom.errors import RetrievalError
from ragloom.retrievers.loaders import Document, load_documents


@pytest.fixture()
def corpus(tmp_path):
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("Plain text about apples.")
    (root / "sub" / "b.md").write_text("# Bananas\n\nYellow fruit.")
    (root / "c.html").write_text(
        "<html><head><title>Cherries</title><style>p{}</style></head>"
        "<body><p>Red <b>cherries</b>.</p><script>var x=1;</script></body></html>"
    )
    (root / "d.jsonl").write_text(
        json.dumps({"body": "Dates are sweet.", "lang": "en"})
        + "\n\n"
        + json.dumps({"body": "Figs too.", "lang": "en"})
        + "\n"
    )
    (root / "e.json").write_text(json.dumps([{"body": "Elderberry.", "id": "E1"}]))
    (root / "notes.bin").write_bytes(b"\x00\x01")
    (root / ".hidden.txt").write_text("secret")
    return root


def make_pdf(path, pages):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(path) as pdf:
        for text in pages:
            fig = plt.figure(figsize=(4, 3))
            fig.text(0.1, 0.5, text)
            pdf.savefig(fig)
            plt.close(fig)


def test_loads_every_supported_format_with_metadata(corpus):
    docs = load_documents(corpus, text_field="body")
    by_id = {d.id: d for d in docs}
    assert set(by_id) == {"a.txt", "sub/b.md", "c.html", "d.jsonl:1", "d.jsonl:3", "e.json#0"}
    assert by_id["a.txt"].text == "Plain text about apples."
    assert by_id["a.txt"].metadata == {"source": "a.txt", "type": "text"}
    assert by_id["sub/b.md"].metadata == {
        "source": "sub/b.md",
        "type": "markdown",
        "title": "Bananas",
    }
    html = by_id["c.html"]
    assert "Red" in html.text and "cherries" in html.text
    assert "var x" not in html.text and "p{}" not in html.text
    assert html.metadata["title"] == "Cherries"
    assert by_id["d.jsonl:3"].text == "Figs too."
    assert by_id["d.jsonl:3"].metadata == {
        "lang": "en",
        "source": "d.jsonl",
        "type": "json",
        "line": 3,
    }
    assert by_id["e.json#0"].metadata["record"] == 0


def test_id_field_and_glob(corpus):
    docs = load_documents(corpus, glob="*.json", text_field="body", id_field="id")
    assert [d.id for d in docs] == ["E1"]


def test_real_pdf_one_document_per_page(tmp_path):
    make_pdf(tmp_path / "paper.pdf", ["First page about vaccines", "Second page on masks"])
    docs = load_documents(tmp_path)
    assert [d.id for d in docs] == ["paper.pdf#p1", "paper.pdf#p2"]
    assert "vaccines" in docs[0].text and "masks" in docs[1].text
    assert docs[1].metadata == {"source": "paper.pdf", "type": "pdf", "page": 2}


def test_single_file_and_unsupported_single_file(corpus):
    [doc] = load_documents(corpus / "a.txt")
    assert doc == Document("a.txt", "Plain text about apples.", {"source": "a.txt", "type": "text"})
    with pytest.raises(RetrievalError, match="unsupported file type"):
        load_documents(corpus / "notes.bin")


def test_missing_path_and_bad_json_name_the_file(tmp_path):
    with pytest.raises(RetrievalError, match="no such file"):
        load_documents(tmp_path / "nope")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(RetrievalError, match="bad.jsonl"):
        load_documents(tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"body": "no text field"}\n')
    with pytest.raises(RetrievalError, match="text_field"):
        load_documents(tmp_path)


def test_symlink_pointing_out_is_refused(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("private")
    root = tmp_path / "root"
    root.mkdir()
    (root / "ok.txt").write_text("fine")
    os.symlink(outside, root / "link.txt")
    with pytest.raises(RetrievalError, match="link.txt.*outside the indexed folder"):
        load_documents(root)


def test_symlinked_folder_pointing_out_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "private.md").write_text("private")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(tmp_path / "elsewhere", root / "linked")
    with pytest.raises(RetrievalError, match="linked.*outside the indexed folder"):
        load_documents(root)


def test_dotdot_outside_root_is_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "other.txt").write_text("private")
    with pytest.raises(RetrievalError, match="outside the indexed folder"):
        load_documents(root / ".." / "other.txt", root=root)


def test_symlink_inside_root_is_fine(tmp_path):
    (tmp_path / "real.txt").write_text("inside")
    os.symlink(tmp_path / "real.txt", tmp_path / "alias.txt")
    docs = load_documents(tmp_path)
    assert [(d.id, d.text) for d in docs] == [("alias.txt", "inside"), ("real.txt", "inside")]
