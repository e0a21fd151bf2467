"""ragloom.runtime.engine: the embedded continuous-batching engine (nano-vllm shaped).

``llm_engine`` (requests in, tokens out), ``scheduler`` (continuous batching, chunked
prefill, preemption), ``block_manager`` (paged KV cache, prefix hashing, LRU eviction),
``model_runner`` (packs a step, runs the model), ``sequence`` (request state), ``sampler``,
``background`` (a stepping thread shared by many callers), ``config``. Names are imported on
first use, so importing this package does not import torch.
"""

from __future__ import annotations

from ragloom._lazy import lazy_getattr

# public name -> module that defines it (imported on first use).
_LAZY: dict[str, str] = {
    "BackgroundEngine": "ragloom.runtime.engine.background",
    "BlockManager": "ragloom.runtime.engine.block_manager",
    "EngineConfig": "ragloom.runtime.engine.config",
    "EngineStats": "ragloom.runtime.engine.llm_engine",
    "LLMEngine": "ragloom.runtime.engine.llm_engine",
    "ModelRunner": "ragloom.runtime.engine.model_runner",
    "Sampler": "ragloom.runtime.engine.sampler",
    "Scheduler": "ragloom.runtime.engine.scheduler",
    "Sequence": "ragloom.runtime.engine.sequence",
    "SequenceStatus": "ragloom.runtime.engine.sequence",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
