"""Models shared by the engine tests, loaded once per test session (module-level cache)."""

from __future__ import annotations

from functools import cache
from typing import Any

from ragloom.runtime.engine.config import EngineConfig
from ragloom.runtime.engine.llm_engine import LLMEngine
from ragloom.runtime.llm import SamplingParams
from ragloom.runtime.model_files import resolve_model
from ragloom.runtime.models.gguf_loader import load_gguf

SMOL = "smollm2-135m-instruct"
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers.",
    "Explain what a hash table is in one sentence.",
]


@cache
def smol_llm() -> Any:
    """One TorchLLM on SmolLM2-135M for the whole session (1 thread: the CPU is shared)."""
    from ragloom.runtime.torch_llm import TorchLLM

    return TorchLLM(SMOL, kv_cache_tokens=8192, num_threads=1)


@cache
def fresh_engine(**settings: Any) -> LLMEngine:
    """A separate engine (its own model copy and KV cache), one per distinct settings."""
    settings.setdefault("num_threads", 1)
    return LLMEngine(load_gguf(resolve_model(SMOL)), EngineConfig(**settings))


@cache
def alone(prompt_ids: tuple[int, ...], max_tokens: int) -> list[int]:
    """Greedy completion of one prompt run by itself (cached across tests)."""
    engine = fresh_engine()
    params = SamplingParams(max_tokens=max_tokens)
    return engine.generate([list(prompt_ids)], params)[0].completion_token_ids


def transformers_from_gguf(model: str, config_class: Any, model_class: Any) -> Any:
    """A packaged model as transformers itself loads its GGUF file (its own dequantisation and
    tensor mapping: an independent check of ragloom's loader)."""
    import torch
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = str(resolve_model(model))
    settings = load_gguf_checkpoint(path)["config"]
    skip = ("model_type", "architectures", "_model_name_or_path")
    config = config_class(**{k: v for k, v in settings.items() if k not in skip})
    with torch.device("meta"):
        shell = model_class(config)
    state = load_gguf_checkpoint(path, return_tensors=True, model_to_load=shell)["tensors"]
    out = model_class(config)
    out.load_state_dict(state, strict=False)
    out.tie_weights()
    return out.eval()


def chat_ids(question: str) -> list[int]:
    """Token ids of ``question`` as a user message in SmolLM2's chat template."""
    return smol_llm().encode([{"role": "user", "content": question}])
