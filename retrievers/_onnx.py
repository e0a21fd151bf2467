"""Run a sentence-transformers model with onnxruntime: export once, cache, optionally int8.

sentence-transformers' own ``backend="onnx"`` needs ``optimum-onnx``, which pins
``transformers<4.58`` (ragloom's runtime needs 5.x), so ragloom exports the model itself: the
whole sentence-transformers module stack (transformer, pooling, normalisation) goes through
``torch.onnx.export`` into ``cache_dir("onnx", <fingerprint>)``, and the int8 variant through
onnxruntime's dynamic quantisation. Files are written to a temporary name and renamed, so a
crash never leaves a half-written graph behind.

This module does not download anything and is imported only when the ONNX backend is chosen.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ragloom._config import cache_dir
from ragloom._lazy import require
from ragloom.errors import ModelError

__all__ = ["OnnxEncoder"]


def _fingerprint(model_path: Path) -> str:
    """A key that changes whenever the model folder's weights or config change."""
    digest = hashlib.sha256(str(model_path.resolve()).encode())
    for file in sorted(model_path.rglob("*")):
        if file.is_file() and file.suffix in {".safetensors", ".bin", ".json", ".txt"}:
            stat = file.stat()
            digest.update(
                f"{file.relative_to(model_path)}:{stat.st_size}:{stat.st_mtime_ns}".encode()
            )
    digest.update(importlib.metadata.version("torch").encode())  # without importing torch
    return digest.hexdigest()[:16]


def _max_seq_length(model_path: Path) -> int:
    """The model's own truncation length, as sentence-transformers would use it."""
    config = model_path / "sentence_bert_config.json"
    if config.exists():
        value = json.loads(config.read_text()).get("max_seq_length")
        if isinstance(value, int):
            return value
    return 512


def _atomic_write(target: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _export(st_model: Any, target: Path) -> None:
    torch = require("torch", "retrieval")
    require("onnx", "retrieval")  # the exporter serialises through it
    names = list(st_model.tokenizer.model_input_names)

    class _Wrapper(torch.nn.Module):  # type: ignore[name-defined,misc]
        # positional tensors in, sentence embedding out
        def __init__(self) -> None:
            super().__init__()
            self.st = st_model

        def forward(self, *tensors: Any) -> Any:
            return self.st(dict(zip(names, tensors, strict=True)))["sentence_embedding"]

    sample = st_model.tokenizer(["a short example", "x"], padding=True, return_tensors="pt")
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "seq"} for n in names}
    axes["embedding"] = {0: "batch"}
    # the exporter warns about traced control flow that is constant for this graph
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _atomic_write(
            target,
            lambda tmp: torch.onnx.export(
                _Wrapper().eval(),
                tuple(sample[n] for n in names),
                tmp,
                input_names=names,
                output_names=["embedding"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            ),
        )


def _quantize(source: Path, target: Path) -> None:
    quantization = require("onnxruntime.quantization", "retrieval")
    _atomic_write(
        target,
        lambda tmp: quantization.quantize_dynamic(
            str(source), tmp, weight_type=quantization.QuantType.QInt8, per_channel=True
        ),
    )


class OnnxEncoder:
    """Encodes texts with an exported sentence-transformers graph on onnxruntime's CPU provider."""

    def __init__(self, path: Path, tokenizer: Any, max_seq_length: int) -> None:
        """Open the graph at ``path``; ``tokenizer`` is a ``tokenizers.Tokenizer`` that pads."""
        ort = require("onnxruntime", "retrieval")
        self.path = path
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        options = ort.SessionOptions()
        # subtle: spinning worker threads burn the cores that other processes need on a small
        # shared machine; measured no slower without it (benchmarks/embed_backends.py).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load the ONNX graph {str(path)!r}: {exc}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.dim = int(self.encode(["x"], 1, 8, normalize=False).shape[1])

    @classmethod
    def for_model(
        cls, model_path: Path, *, quantize: Literal["int8"] | None = None, device: str = "cpu"
    ) -> OnnxEncoder:
        """Load the graph of the model in ``model_path``, exporting it the first time only.

        torch and sentence-transformers are imported only for that first export.
        """
        from ragloom.retrievers.embeddings import _load_sentence_transformer, load_fast_tokenizer

        folder = cache_dir("onnx", _fingerprint(model_path))
        fp32 = folder / "model.onnx"
        if not fp32.exists():
            _export(_load_sentence_transformer(model_path, device), fp32)
        path = fp32
        if quantize == "int8":
            path = folder / "model_int8.onnx"
            if not path.exists():
                _quantize(fp32, path)
        return cls(path, load_fast_tokenizer(model_path), _max_seq_length(model_path))

    def encode(
        self, texts: Sequence[str], batch_size: int, max_seq_length: int, normalize: bool
    ) -> npt.NDArray[np.float32]:
        """Embed ``texts`` in batches of similar length (less padding), in input order."""
        order = np.argsort([-len(t) for t in texts], kind="stable")
        self.tokenizer.enable_truncation(max_seq_length)
        out: list[npt.NDArray[np.float32]] = []
        for i in range(0, len(texts), batch_size):
            encodings = self.tokenizer.encode_batch([texts[j] for j in order[i : i + batch_size]])
            columns = {
                "input_ids": [e.ids for e in encodings],
                "attention_mask": [e.attention_mask for e in encodings],
                "token_type_ids": [e.type_ids for e in encodings],
            }
            feeds = {n: np.asarray(columns[n], dtype=np.int64) for n in self.input_names}
            out.append(self.session.run(None, feeds)[0])
        vectors = np.empty((len(texts), out[0].shape[1]), dtype=np.float32)
        vectors[order] = np.concatenate(out)
        if normalize:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors
