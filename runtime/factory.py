"""``load_llm``: one call that picks and builds a backend for a model.

``backend="auto"`` takes llama.cpp (through cyllama) when it is installed — it starts in a
second and decodes Qwen2.5-0.5B at ~33-42 tok/s on this class of machine, against ~7 tok/s for HF
transformers — else ragloom's own torch engine. The engine is faster on an agent's job once its
weights are converted and its kernels built (``benchmarks/demo_backends.py``: the demo's job
1.7x llama.cpp exactly, 2.2x with ``quantization="gguf-q8"``, same plan and answer), but its
first load of a model converts it (about a minute); :func:`torch_engine_ready` says whether
that is done, and ``ragloom demo`` takes the engine when it is. The other backends are named
explicitly: ``"openai"`` (any OpenAI-compatible server), ``"vllm"`` (in-process, GPU).

This module imports no backend until it is asked for one.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal, get_args

from ragloom.errors import ConfigError
from ragloom.runtime.llm import BaseLLM

__all__ = ["Backend", "load_llm", "pick_backend", "torch_engine_ready"]

Backend = Literal["auto", "torch", "llamacpp", "openai", "vllm"]


def pick_backend(backend: Backend = "auto") -> Backend:
    """The concrete backend ``backend`` stands for (``"auto"`` resolved).

    >>> pick_backend("torch")
    'torch'
    """
    if backend not in get_args(Backend):
        raise ConfigError(f"unknown backend {backend!r}; choose one of {get_args(Backend)}")
    if backend != "auto":
        return backend
    return "llamacpp" if importlib.util.find_spec("cyllama") is not None else "torch"


def torch_engine_ready(model: str) -> bool:
    """Whether the torch engine would load ``model`` (a packaged model name or a ``.gguf``
    path) here without converting or compiling anything: its kernels are built for this
    machine and the file's weights are converted and checked. False for anything it cannot
    resolve or build."""
    from ragloom.errors import RagloomError
    from ragloom.runtime.layers.kernels import kernels_built
    from ragloom.runtime.model_files import resolve_model
    from ragloom.runtime.models.gguf_loader import weights_cached

    if not kernels_built():
        return False
    try:
        return weights_cached(resolve_model(model))
    except RagloomError:
        return False


def load_llm(
    model: str = "qwen2.5-coder-0.5b-instruct", backend: Backend = "auto", **kwargs: Any
) -> BaseLLM:
    """Build an LLM for ``model`` on ``backend``.

    Args:
        model: a packaged model name or alias, a ``.gguf`` path, or (``openai``/``vllm``) the
            name the server or vLLM knows the model by.
        backend: ``"auto"``, ``"torch"``, ``"llamacpp"``, ``"openai"`` or ``"vllm"``.
        **kwargs: passed to the backend's constructor (e.g. ``n_ctx=2048`` for llama.cpp,
            ``base_url=...`` for openai).

    Raises:
        ConfigError: unknown backend.
        ModelError: the model cannot be found or loaded.
        MissingDependencyError: the backend's package is not installed.

    >>> llm = load_llm("smollm2")  # doctest: +SKIP
    >>> type(llm).__name__  # doctest: +SKIP
    'LlamaCppLLM'
    """
    chosen = pick_backend(backend)
    if chosen == "llamacpp":
        from ragloom.runtime.backends.llamacpp import LlamaCppLLM

        return LlamaCppLLM(model, **kwargs)
    if chosen == "openai":
        from ragloom.runtime.backends.openai_compat import OpenAILLM

        return OpenAILLM(model, **kwargs)
    if chosen == "vllm":
        from ragloom.runtime.backends.vllm import VLLMLLM

        return VLLMLLM(model, **kwargs)
    from ragloom.runtime.torch_llm import TorchLLM

    llm: BaseLLM = TorchLLM(model, **kwargs)
    return llm
