"""Embedding throughput of MiniLM backends on real COVID-QA chunks, and whether they rank alike.

Baseline: sentence-transformers on torch (fp32, max_seq_length 256). Candidates: the same
model exported to ONNX (fp32 and dynamic int8), each also with max_seq_length 128. For each
configuration: chunks embedded per second, the mean top-10 overlap of its rankings with the
baseline's over real COVID-QA questions, and the answer-span hit rate@10 (does a top-10 chunk
contain the gold answer text).

    .venv/bin/python benchmarks/embed_backends.py --quick

The last line is a JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ragloom._config import data_dir
from ragloom.retrievers.chunking import chunk_documents, make_chunker
from ragloom.retrievers.embeddings import SentenceTransformerEmbedder
from ragloom.retrievers.loaders import Document

CONFIGS: dict[str, dict[str, Any]] = {
    "torch": {"backend": "torch"},
    "torch_seq128": {"backend": "torch", "max_seq_length": 128},
    "onnx": {"backend": "onnx"},
    "onnx_int8": {"backend": "onnx", "quantize": "int8"},
    "onnx_int8_seq128": {"backend": "onnx", "quantize": "int8", "max_seq_length": 128},
}


def load_covid(num_docs: int) -> tuple[list[Document], list[tuple[str, str]]]:
    path = Path(data_dir()) / "covid_qa_deepset" / "200423_covidQA.json"
    data = json.loads(path.read_text())["data"]
    docs: list[Document] = []
    questions: list[tuple[str, str]] = []
    for article in data[:num_docs]:
        for para in article["paragraphs"]:
            doc_id = str(para["document_id"])
            docs.append(Document(doc_id, para["context"], {"source": doc_id}))
            questions.extend((qa["question"], qa["answers"][0]["text"]) for qa in para["qas"])
    return docs, questions


def top10(emb, matrix, questions):
    q = np.stack([emb.embed_query(x) for x in questions])
    return np.argsort(-(q @ matrix.T), axis=1)[:, :10]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small subset (< 1 minute)")
    parser.add_argument("--chunking", default="fixed_tokens:256:32")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    num_docs, max_chunks, rounds = (2, 32, 2) if args.quick else (8, 240, 2)
    rounds = args.rounds or rounds
    configs = {k: v for k, v in CONFIGS.items() if not (args.quick and "seq128" in k)}
    docs, qa = load_covid(num_docs)
    chunks = chunk_documents(docs, make_chunker(args.chunking))[:max_chunks]
    texts = [c.text for c in chunks]
    qa = [(q, a) for q, a in qa if any(a in t for t in texts)]  # answerable in this corpus
    words = np.mean([len(t.split()) for t in texts])
    print(f"{len(texts)} chunks ({args.chunking}, {words:.0f} words), {len(qa)} questions")
    embedders, setup = {}, {}
    for name, config in configs.items():
        start = time.perf_counter()
        embedders[name] = SentenceTransformerEmbedder(batch_size=32, **config)
        setup[name] = time.perf_counter() - start
        embedders[name].embed(texts[:4])  # warm-up
    # interleaved rounds, best of each: the machine is shared, so load drifts between runs
    times: dict[str, list[float]] = {name: [] for name in configs}
    matrices = {}
    for _ in range(rounds):
        for name, emb in embedders.items():
            start = time.perf_counter()
            matrices[name] = emb.embed(texts)
            times[name].append(time.perf_counter() - start)
    questions = [q for q, _ in qa]
    tops = {name: top10(emb, matrices[name], questions) for name, emb in embedders.items()}
    figures: dict[str, float] = {"num_chunks": len(texts), "num_questions": len(qa)}
    print(f"{'config':18} {'chunks/s':>9} {'speedup':>8} {'top10 overlap':>14} {'hit@10':>7}")
    for name in configs:
        rate = len(texts) / min(times[name])
        speedup = rate / (len(texts) / min(times["torch"]))
        overlap = np.mean(
            [len(set(a) & set(b)) / 10 for a, b in zip(tops[name], tops["torch"], strict=True)]
        )
        hits = np.mean(
            [any(a in texts[i] for i in row) for row, (_, a) in zip(tops[name], qa, strict=True)]
        )
        print(f"{name:18} {rate:9.1f} {speedup:8.2f} {overlap:14.3f} {hits:7.3f}")
        figures.update(
            {
                f"{name}_chunks_per_s": round(rate, 2),
                f"{name}_speedup": round(speedup, 3),
                f"{name}_top10_overlap": round(float(overlap), 4),
                f"{name}_hit_rate_at_10": round(float(hits), 4),
                f"{name}_setup_s": round(setup[name], 2),
            }
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
