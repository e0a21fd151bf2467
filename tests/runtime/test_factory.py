"""load_llm: backend choice, errors, and the lazy exports of ragloom.runtime."""

from __future__ import annotations

import subprocess
import sys

import pytest

import ragloom.runtime as runtime
from ragloom.errors import ConfigError, ModelError
from ragloom.runtime.factory import load_llm, pick_backend

EXPORTS = [
    "LangChainLLM",
    "LlamaCppLLM",
    "OpenAILLM",
    "RagloomChatModel",
    "compile_grammar",
    "load_llm",
    "plan_grammar",
    "resolve_model",
]


def test_auto_prefers_llamacpp_when_installed():
    assert pick_backend("auto") == "llamacpp"
    assert pick_backend("torch") == "torch"
    with pytest.raises(ConfigError, match="unknown backend 'tensorrt'"):
        pick_backend("tensorrt")  # type: ignore[arg-type]


def test_auto_falls_back_to_torch(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "cyllama" else real(name, *a)
    )
    assert pick_backend("auto") == "torch"


@pytest.mark.model
def test_load_llm_llamacpp():
    llm = load_llm("smollm2", n_ctx=256, n_threads=1)
    try:
        assert type(llm).__name__ == "LlamaCppLLM" and llm.model_name == "smollm2-135m-instruct"
    finally:
        llm.close()  # type: ignore[attr-defined]


def test_load_llm_openai_and_errors():
    llm = load_llm("some-model", "openai", base_url="http://127.0.0.1:9/v1")
    assert type(llm).__name__ == "OpenAILLM"
    with pytest.raises(ModelError, match="unknown model"):
        load_llm("not-a-model", "llamacpp")


def test_runtime_exports_are_lazy():
    for name in EXPORTS:
        assert name in runtime.__all__
    code = (
        "import sys, ragloom.runtime as r; "
        "heavy = {'cyllama', 'openai', 'fastapi', 'llguidance', 'langchain_core.language_models'}; "
        "assert not heavy & set(sys.modules), sorted(sys.modules); r.plan_grammar; r.resolve_model"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert runtime.plan_grammar.__module__ == "ragloom.runtime.constrained"
