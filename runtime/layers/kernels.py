"""ragloom's compiled CPU kernels: built once per machine, loaded as torch ops.

Three C++ sources are compiled together with the system's C++ compiler (``$CXX`` or ``g++``) for
AVX2 + FMA into one library in ``cache_dir("kernels")``, keyed by the sources, the torch
version, the compiler and the flags:

- ``gguf_matmul.cpp``: linear layers over a GGUF file's quantised weights
  (``torch.ops.ragloom_gguf``, used by :mod:`ragloom.runtime.layers.gguf_linear`);
- ``paged_attention.cpp``: decode attention straight from the paged KV cache
  (``torch.ops.ragloom_attention``, used by :mod:`ragloom.runtime.layers.attention`);
- ``layer_ops.cpp``: RMSNorm fused with its residual add, rotary embeddings and the MLP's
  ``silu(gate) * up`` (``torch.ops.ragloom_layers``, used by
  :mod:`ragloom.runtime.layers.rmsnorm`, :mod:`ragloom.runtime.layers.rotary` and
  :mod:`ragloom.runtime.layers.activation`).

They share two headers: ``avx2.h`` (horizontal sums, a vectorised ``exp``) and ``parallel.h``
(ragloom's own thread pool, which splits a kernel's work where torch would use its OpenMP
team: with the engine stepping on its own thread, a second team made every parallel call
wait for a sleeping worker, and a two-thread decode step took 1.3-1.5x as long).

Each layer has a plain torch path that the tests hold its kernel to and that runs where the
library cannot be built (no AVX2, no compiler). Nothing here is on the import path of
``ragloom``: the build starts on first use.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from ragloom._config import cache_dir
from ragloom.errors import ConfigError

__all__ = ["KernelUnavailableError", "available_kernels", "cpu_kernels", "kernels_built"]

_SOURCES = tuple(
    Path(__file__).with_name(name)
    for name in ("gguf_matmul.cpp", "paged_attention.cpp", "layer_ops.cpp")
)
# included by the sources: part of the key
_HEADERS = tuple(Path(__file__).with_name(name) for name in ("avx2.h", "parallel.h"))
_log = logging.getLogger("ragloom.runtime.kernels")
_STEM = "ragloom_kernels"
_LEGACY_STEMS = ("gguf_matmul",)  # builds of earlier versions, pruned like old builds
_KEEP_BUILDS = 3  # cached builds kept (other torch versions or compilers in use)
_FLAGS = ("-O3", "-mavx2", "-mfma", "-ffp-contract=off", "-fopenmp", "-shared", "-fPIC")


class KernelUnavailableError(ConfigError):
    """ragloom's CPU kernels cannot be built or loaded here (no AVX2, no C++ compiler, a failed
    build); the message says which."""


@functools.cache
def cpu_kernels() -> Any:
    """``torch.ops``, once the kernels' library is loaded (``torch.ops.ragloom_gguf``,
    ``torch.ops.ragloom_attention``, ``torch.ops.ragloom_layers``); built on first use and
    cached per machine.

    Raises:
        KernelUnavailableError: this CPU lacks AVX2/FMA, no C++ compiler is found (``$CXX``
            or ``g++``) or the build fails (the compiler's last lines are in the message).
    """
    compiler, library = _library()
    if library.exists():
        _touch(library)
    else:
        _build(compiler, library)
        _prune(library)
    try:
        torch.ops.load_library(str(library))
    except OSError as exc:  # a damaged file in the cache: drop it so the next call rebuilds
        library.unlink(missing_ok=True)
        raise KernelUnavailableError(f"cannot load ragloom's CPU kernels {library}: {exc}") from exc
    return torch.ops


def kernels_built() -> bool:
    """Whether this machine's cache holds a build of the kernels' current sources (so that
    :func:`cpu_kernels` loads them without compiling); False where they cannot be built."""
    try:
        return _library()[1].exists()
    except KernelUnavailableError:
        return False


def _library() -> tuple[str, Path]:
    """The C++ compiler and the cached library's path for the current sources, flags and torch.

    Raises:
        KernelUnavailableError: no AVX2/FMA or no compiler.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX2", "AVX512"):
        raise KernelUnavailableError(
            f"ragloom's CPU kernels need AVX2 and FMA; this CPU has {capability}"
        )
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        raise KernelUnavailableError(
            "ragloom's CPU kernels need a C++ compiler ($CXX or g++) to build"
        )
    digest = hashlib.sha256()
    for source in (*_SOURCES, *_HEADERS):
        digest.update(source.read_bytes())
    digest.update(f"{torch.__version__} {compiler} {_FLAGS}".encode())
    return compiler, cache_dir("kernels") / f"{_STEM}-{digest.hexdigest()[:16]}.so"


@functools.cache
def available_kernels() -> Any:
    """``torch.ops`` with the kernels loaded, or ``None`` where they cannot be built here (the
    layers then run their torch paths; the reason is logged once). Unlike :func:`cpu_kernels`
    it also remembers a failure, so a machine whose build fails does not try again for every
    layer or engine."""
    try:
        return cpu_kernels()
    except KernelUnavailableError as exc:
        _log.info("ragloom's CPU kernels are not available, torch's paths run: %s", exc)
        return None


def _touch(library: Path) -> None:
    """Mark a cached library as used now (its age decides what :func:`_prune` keeps)."""
    try:
        os.utime(library)
    except OSError:  # (a read-only cache is still usable)
        pass


def _prune(library: Path) -> None:
    """Delete all but the ``_KEEP_BUILDS`` most recently used builds beside ``library``:
    each new source, torch version or compiler is a new file, and old ones are never loaded
    again (a process that has one loaded keeps its mapping)."""
    builds = [p for stem in (_STEM, *_LEGACY_STEMS) for p in library.parent.glob(f"{stem}-*.so")]
    builds.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for old in builds[_KEEP_BUILDS:]:
        if old != library:
            old.unlink(missing_ok=True)


def _build(compiler: str, library: Path) -> None:
    """Compile the kernels into ``library``: each source on its own core, then one link, all in
    a temporary directory and renamed into place, so that a concurrent or interrupted build
    never leaves a half-written library."""
    from torch.utils import cpp_extension

    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    flags = [*_FLAGS, "-std=c++20", f"-D_GLIBCXX_USE_CXX11_ABI={abi}"]
    flags += [f"-I{path}" for path in cpp_extension.include_paths()]
    libraries = [f"-L{path}" for path in cpp_extension.library_paths()] + ["-lc10", "-ltorch_cpu"]
    with tempfile.TemporaryDirectory(dir=library.parent, prefix=".build-") as work:
        objects = [str(Path(work) / f"{source.stem}.o") for source in _SOURCES]
        compiles = [
            [compiler, *flags, "-c", str(source), "-o", obj]
            for source, obj in zip(_SOURCES, objects, strict=True)
        ]
        with ThreadPoolExecutor(len(compiles)) as pool:
            for done in pool.map(_run, compiles):
                _raise_on_failure(done)
        tmp = str(Path(work) / library.name)
        _raise_on_failure(_run([compiler, *_FLAGS, *objects, "-o", tmp, *libraries]))
        os.replace(tmp, library)


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def _raise_on_failure(done: subprocess.CompletedProcess[str]) -> None:
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise KernelUnavailableError(f"building ragloom's CPU kernels failed:\n{tail}")
