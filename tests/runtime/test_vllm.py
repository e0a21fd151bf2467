"""The vLLM backend: the missing-dependency path, and the parameter mapping on a fake vllm.

vllm is not installed here (no GPU), so the real engine is never run in this suite.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest

from ragloom.errors import MissingDependencyError
from ragloom.runtime.constrained import json_grammar
from ragloom.runtime.llm import Completion, Grammar, SamplingParams


def test_missing_vllm_gives_the_pip_hint(monkeypatch):
    from ragloom.runtime.backends.vllm import VLLMLLM

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'ragloom\[vllm\]'"):
        VLLMLLM("Qwen/Qwen2.5-0.5B-Instruct")


@dataclass
class FakeParams:
    kwargs: dict

    def __init__(self, **kwargs):
        self.kwargs = kwargs


@dataclass
class Logprob:
    logprob: float


@dataclass
class Out:
    text: str
    token_ids: list
    finish_reason: str


@dataclass
class RequestOutput:
    prompt_token_ids: list
    outputs: list
    num_cached_tokens: int = 0
    prompt_logprobs: list = field(default_factory=list)


class Tokenizer:
    def encode(self, text):
        return list(text)  # one token per character

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


class FakeEngine:
    def __init__(self, **kwargs):
        self.kwargs, self.calls = kwargs, []

    def get_tokenizer(self):
        return Tokenizer()

    def generate(self, texts, params, use_tqdm=True):
        self.calls.append((texts, params))
        outs = []
        for text in texts:
            ids = [ord(c) for c in text]
            logprobs = [None] + [{i: Logprob(-0.5)} for i in ids[1:]]
            outs.append(RequestOutput(ids, [Out("ok", [1, 2], "length")], 3, logprobs))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    module: Any = types.ModuleType("vllm")
    module.LLM = FakeEngine
    module.SamplingParams = FakeParams
    module.sampling_params = types.SimpleNamespace(StructuredOutputsParams=FakeParams)
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


@pytest.fixture
def llm(fake_vllm):
    from ragloom.runtime.backends.vllm import VLLMLLM

    return VLLMLLM("some/model", max_model_len=2048, dtype="half")


def test_engine_args_turn_prefix_caching_on(llm):
    args = llm._engine.kwargs
    assert args["enable_prefix_caching"] is True and args["model"] == "some/model"
    assert args["max_model_len"] == 2048 and args["dtype"] == "half"


def test_generate_maps_params_and_outputs(llm):
    params = SamplingParams(max_tokens=7, temperature=0.5, top_p=0.9, seed=3, stop=("\n",))
    [done] = llm.generate([[{"role": "user", "content": "hi"}]], params)
    texts, sent = llm._engine.calls[0]
    assert texts == ["<user>hi<assistant>"]
    assert sent.kwargs == {
        "max_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 3,
        "stop": ["\n"],
    }
    assert (done.text, done.finish_reason, done.completion_tokens, done.cached_tokens) == (
        "ok",
        "length",
        2,
        3,
    )
    assert done.prompt_tokens == len("<user>hi<assistant>")


def test_grammars_become_structured_outputs(llm, fake_vllm):
    llm.generate(["x"], SamplingParams(grammar=json_grammar({"type": "object"})))
    llm.generate(["x"], SamplingParams(grammar=Grammar(kind="regex", source="[0-9]+")))
    first, second = (call[1].kwargs["structured_outputs"].kwargs for call in llm._engine.calls)
    assert first == {"json": {"type": "object"}} and second == {"regex": "[0-9]+"}


def test_older_vllm_uses_guided_decoding(llm, fake_vllm):
    fake_vllm.sampling_params = types.SimpleNamespace(GuidedDecodingParams=FakeParams)
    llm.generate(["x"], SamplingParams(grammar=Grammar(kind="lark", source='start: "a"')))
    assert llm._engine.calls[0][1].kwargs["guided_decoding"].kwargs == {"grammar": 'start: "a"'}


def test_score_sums_choice_logprobs(llm):
    [[short, long]] = llm.score(["ab"], ["c", "cde"])
    assert short == pytest.approx(-0.5) and long == pytest.approx(-1.5)
    assert llm._engine.calls[0][1].kwargs["prompt_logprobs"] == 0
    assert json.dumps(llm._engine.calls[0][0]) == json.dumps(["abc", "abcde"])


def test_stream_reports_the_request_usage(llm):
    usage = Completion(text="")
    assert "".join(llm.stream("hi", usage=usage)) == "ok"
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (2, 2, 3)
    assert usage.finish_reason == "length"  # vLLM's own, as generate reports it


def test_a_prompt_longer_than_the_window_is_a_context_window_error(llm, monkeypatch):
    from ragloom.errors import ContextWindowError

    def refuse(texts, params, use_tqdm=True):  # vLLM's own words for it
        raise ValueError(
            "The decoder prompt (length 3000) is longer than the maximum model length of 2048."
        )

    monkeypatch.setattr(llm._engine, "generate", refuse)
    with pytest.raises(ContextWindowError, match="maximum model length of 2048"):
        llm.generate(["x" * 3000])
    with pytest.raises(ContextWindowError):
        llm.score(["x" * 3000], ["y"])

    def other(texts, params, use_tqdm=True):
        raise ValueError("temperature must be non-negative")

    monkeypatch.setattr(llm._engine, "generate", other)
    with pytest.raises(ValueError, match="temperature") as caught:
        llm.generate(["x"])
    assert not isinstance(caught.value, ContextWindowError)
