"""ragloom.runtime: the LLM protocol, its fake, the embedded engine and the other backends.

Heavy parts (torch, llama.cpp, openai, vllm) are imported only when used.
"""

from __future__ import annotations

from ragloom._lazy import lazy_getattr
from ragloom.runtime import llm
from ragloom.runtime.llm import (
    LLM,
    BaseLLM,
    Completion,
    FakeLLM,
    Grammar,
    Message,
    PrefixCacheStats,
    Prompt,
    SamplingParams,
    apply_stop,
    context_window_errors,
)

# public name -> module that defines it (imported on first use).
_LAZY: dict[str, str] = {
    "Backend": "ragloom.runtime.factory",
    "Constraint": "ragloom.runtime.constrained",
    "ConstraintState": "ragloom.runtime.constrained",
    "EngineConfig": "ragloom.runtime.engine.config",
    "LLMEngine": "ragloom.runtime.engine.llm_engine",
    "LangChainLLM": "ragloom.runtime.langchain",
    "LlamaCppLLM": "ragloom.runtime.backends.llamacpp",
    "MODELS": "ragloom.runtime.model_files",
    "ModelInfo": "ragloom.runtime.model_files",
    "OpenAILLM": "ragloom.runtime.backends.openai_compat",
    "RagloomChatModel": "ragloom.runtime.langchain",
    "TokenizerInfo": "ragloom.runtime.constrained",
    "TorchLLM": "ragloom.runtime.torch_llm",
    "compile_grammar": "ragloom.runtime.constrained",
    "create_app": "ragloom.runtime.server",
    "default_num_threads": "ragloom.runtime.threads",
    "json_grammar": "ragloom.runtime.constrained",
    "list_models": "ragloom.runtime.model_files",
    "load_llm": "ragloom.runtime.factory",
    "model_name": "ragloom.runtime.model_files",
    "parse_tool_calls": "ragloom.runtime.langchain",
    "pick_backend": "ragloom.runtime.factory",
    "plan_grammar": "ragloom.runtime.constrained",
    "resolve_model": "ragloom.runtime.model_files",
    "torch_engine_ready": "ragloom.runtime.factory",
}

__all__ = sorted([*llm.__all__, *_LAZY])


__getattr__ = lazy_getattr(__name__, _LAZY)
