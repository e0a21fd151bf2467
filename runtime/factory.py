"""``load_llm``: one call that picks and builds a backend for a model.

``backend="auto"`` takes the fastest local backend at equal outputs: llama.cpp (through
cyllama) when it is installed — on this class of machine it decodes Qwen2.5-0.5B at ~33 tok/s
against ~6 tok/s for HF transformers — else ragloom's own torch engine. The other backends are
named explicitly: ``"openai"`` (any OpenAI-compatible server), ``"vllm"`` (in-process, GPU).

This module imports no backend until it is asked for one.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal, get_args

from ragloom.errors import ConfigError
from ragloom.runtime.llm import BaseLLM

__all__ = ["Backend", "load_llm", "pick_backend"]

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
