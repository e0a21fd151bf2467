"""The uniform prefix-cache API: ``prefix_cache_stats()`` and ``reset_prefix_cache()`` on every
backend that can run here (FakeLLM, OpenAILLM, LangChainLLM, a fake vLLM, and TorchLLM and
LlamaCppLLM on SmolLM2-135M), and llama.cpp's ``score`` prefilling the prompt once."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from ragloom.errors import ModelError
from ragloom.runtime.backends._prefix_cache import common_prefix_len
from ragloom.runtime.backends.openai_compat import OpenAILLM
from ragloom.runtime.llm import FakeLLM, PrefixCacheStats, SamplingParams
from ragloom.runtime.server import create_app

SYSTEM = "You write plans. Tools: search(query) finds facts; math(expr) computes. " * 8
ONE = SamplingParams(max_tokens=1)


def chat(question):
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


@pytest.fixture(scope="module")
def smol_path():
    from ragloom.runtime.model_files import resolve_model

    try:
        return resolve_model("smollm2-135m-instruct")
    except ModelError as exc:
        pytest.skip(f"SmolLM2-135M is not installed: {exc}")


def test_stats_hit_rate_and_immutability():
    assert PrefixCacheStats().hit_rate == 0.0
    stats = PrefixCacheStats(requests=3, prompt_tokens=400, cached_tokens=100, entries=2)
    assert stats.hit_rate == 0.25 and stats.nbytes is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.requests = 4  # type: ignore[misc]


def test_fake_llm_has_no_prefix_cache():
    llm = FakeLLM(["hi"])
    llm.generate(["x"])
    assert llm.prefix_cache_stats() is None
    llm.reset_prefix_cache()  # a no-op, not an error
    assert llm.generate(["x"])[0].text == "hi"


class PrefixFake(FakeLLM):
    """Reports a word-level prefix cache: cached tokens are the words shared with any earlier
    prompt (what a server behind OpenAILLM would put in its usage)."""

    def generate(self, prompts, params=None):
        out = []
        for prompt in prompts:
            words = self.render(prompt).split()
            seen = [p.split() for p in self.prompts]
            cached = max((common_prefix_len(words, s) for s in seen), default=0)
            [done] = super().generate([prompt], params)
            out.append(dataclasses.replace(done, prompt_tokens=len(words), cached_tokens=cached))
        return out


def test_openai_counts_cached_tokens_from_usage():
    client = TestClient(create_app(PrefixFake(["ok"])))
    llm = OpenAILLM("fake", base_url="http://testserver/v1", http_client=client)
    assert llm.prefix_cache_stats() == PrefixCacheStats()
    head = "alpha beta gamma delta epsilon zeta eta theta"
    first = llm.generate([head + " one"])[0]
    second = llm.generate([head + " two"])[0]
    assert (first.cached_tokens, second.cached_tokens) == (0, 8)
    stats = llm.prefix_cache_stats()
    assert (stats.requests, stats.prompt_tokens, stats.cached_tokens) == (2, 18, 8)
    assert stats.hit_rate == pytest.approx(8 / 18) and stats.entries is None
    llm.reset_prefix_cache()  # zeroes the figures; the server's cache is not ours to empty
    assert llm.prefix_cache_stats() == PrefixCacheStats()


def test_langchain_round_trip_counts_cache_reads():
    from ragloom.runtime.langchain import LangChainLLM, RagloomChatModel

    llm = LangChainLLM(RagloomChatModel(llm=PrefixFake(["ok"])))
    head = "alpha beta gamma delta"
    done = [llm.generate([head + " one"])[0], llm.generate([head + " two"])[0]]
    assert [c.cached_tokens for c in done] == [0, 5]  # chat markers count as words
    stats = llm.prefix_cache_stats()
    assert (stats.requests, stats.prompt_tokens, stats.cached_tokens) == (2, 14, 5)
    llm.reset_prefix_cache()
    assert llm.prefix_cache_stats() == PrefixCacheStats()


def test_openai_stream_counts_usage_when_the_server_streams_it():
    chunks = [
        {"id": "c", "object": "text_completion", "created": 0, "model": "m",
         "choices": [{"index": 0, "text": "hi", "finish_reason": "stop", "logprobs": None}]},
        {"id": "c", "object": "text_completion", "created": 0, "model": "m", "choices": [],
         "usage": {"prompt_tokens": 40, "completion_tokens": 1, "total_tokens": 41,
                   "prompt_tokens_details": {"cached_tokens": 32}}},
    ]  # fmt: skip
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"

    def handler(request):
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    llm = OpenAILLM("m", base_url="http://mock/v1", http_client=http)
    assert "".join(llm.stream("prompt")) == "hi"
    stats = llm.prefix_cache_stats()
    assert (stats.requests, stats.prompt_tokens, stats.cached_tokens) == (1, 40, 32)


@dataclass
class VLLMOutput:
    prompt_token_ids: list
    num_cached_tokens: int
    outputs: list = field(default_factory=lambda: [types.SimpleNamespace(
        text="ok", token_ids=[1], finish_reason="stop")])  # fmt: skip
    prompt_logprobs: list = field(default_factory=list)


class VLLMEngine:
    """vllm.LLM as far as VLLMLLM uses it; one token per character, a character-level cache."""

    def __init__(self, **kwargs):
        self.seen, self.resets = [], 0

    def get_tokenizer(self):
        return types.SimpleNamespace(encode=list)

    def generate(self, texts, params, use_tqdm=True):
        outs = []
        for text in texts:
            cached = max((common_prefix_len(list(text), list(s)) for s in self.seen), default=0)
            self.seen.append(text)
            lp = [None] + [{ord(c): types.SimpleNamespace(logprob=-0.5)} for c in text[1:]]
            outs.append(VLLMOutput([ord(c) for c in text], cached, prompt_logprobs=lp))
        return outs

    def reset_prefix_cache(self):
        self.seen, self.resets = [], self.resets + 1
        return True


def test_vllm_adds_up_cached_tokens_and_resets_the_engine(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = VLLMEngine
    module.SamplingParams = lambda **kwargs: kwargs
    monkeypatch.setitem(sys.modules, "vllm", module)
    from ragloom.runtime.backends.vllm import VLLMLLM

    llm = VLLMLLM("some/model")
    llm.generate(["abcd", "abxy"])
    llm.score(["ab"], ["c", "cd"])  # scoring requests count too: "abc" and "abcd"
    stats = llm.prefix_cache_stats()
    assert (stats.requests, stats.prompt_tokens, stats.cached_tokens) == (4, 4 + 4 + 3 + 4, 9)
    assert stats.hit_rate == pytest.approx(9 / 15) and stats.entries is None
    llm.reset_prefix_cache()
    assert llm._engine.resets == 1 and llm.prefix_cache_stats() == PrefixCacheStats()
    assert llm.generate(["abcd"])[0].cached_tokens == 0


@pytest.mark.model
def test_torch_llm_stats_follow_the_block_cache(smol_path):
    from _engine_models import smol_llm

    llm = smol_llm()
    llm.reset_prefix_cache()
    assert llm.prefix_cache_stats() == PrefixCacheStats(entries=0, nbytes=0)
    cold = llm.generate([chat("Plan: 2+2?")], ONE)[0]
    after_cold = llm.prefix_cache_stats()
    assert cold.cached_tokens == 0 and after_cold.hit_rate == 0.0
    assert after_cold.requests == 1 and after_cold.prompt_tokens == cold.prompt_tokens
    assert after_cold.entries and after_cold.entries > 0 and after_cold.nbytes
    warm = llm.generate([chat("Plan: 3*7?")], ONE)[0]  # same system prompt
    assert warm.cached_tokens > 0.8 * warm.prompt_tokens
    stats = llm.prefix_cache_stats()
    assert stats.cached_tokens == warm.cached_tokens and stats.requests == 2
    assert stats.hit_rate == warm.cached_tokens / (cold.prompt_tokens + warm.prompt_tokens)
    assert "".join(llm.stream(chat("Plan: 2+2?"), ONE))  # streamed calls count too
    streamed = llm.prefix_cache_stats()
    assert streamed.requests == 3
    assert streamed.prompt_tokens == stats.prompt_tokens + cold.prompt_tokens
    block = llm.engine.config.block_size
    assert streamed.cached_tokens - stats.cached_tokens >= cold.prompt_tokens - block
    assert streamed.hit_rate > stats.hit_rate
    llm.score([chat("Plan: 2+2?")], [" 1.", " 2."])  # one prefill per choice
    assert llm.prefix_cache_stats().requests == 5
    llm.reset_prefix_cache()
    assert llm.prefix_cache_stats() == PrefixCacheStats(entries=0, nbytes=0)
    again = llm.generate([chat("Plan: 2+2?")], ONE)[0]
    assert again.cached_tokens == 0 and llm.prefix_cache_stats().cached_tokens == 0


@pytest.fixture(scope="module")
def cpp(smol_path):
    from ragloom.runtime.backends.llamacpp import LlamaCppLLM

    llm = LlamaCppLLM(smol_path, n_ctx=1024, n_threads=1)
    yield llm
    llm.close()


@pytest.mark.model
def test_llamacpp_stats_count_generate_and_stream(cpp):
    cpp.reset_prefix_cache()
    assert cpp.prefix_cache_stats() == PrefixCacheStats(entries=0, nbytes=0)
    cold = cpp.generate([chat("Who wrote Hamlet?")], ONE)[0]
    stats = cpp.prefix_cache_stats()
    assert cold.cached_tokens == 0 and stats.requests == 1 and stats.hit_rate == 0.0
    assert stats.prompt_tokens == cold.prompt_tokens and stats.entries == 1 and stats.nbytes
    assert "".join(cpp.stream(chat("How tall is the Eiffel tower?"), ONE))
    streamed = cpp.prefix_cache_stats()  # the stream's reuse is counted, not dropped
    assert streamed.requests == 2 and streamed.cached_tokens >= 64
    assert streamed.hit_rate > 0.3
    cpp.reset_prefix_cache()
    assert cpp.prefix_cache_stats() == PrefixCacheStats(entries=0, nbytes=0)
    again = cpp.generate([chat("How tall is the Eiffel tower?")], ONE)[0]
    assert again.cached_tokens == 0 and cpp.prefix_cache_stats().cached_tokens == 0


def score_per_choice(llm, prompt, choices):
    """The former ``LlamaCppLLM.score``: a prefill of the prompt for every choice."""
    text = llm.render(prompt)
    head = llm.tokenize(text)
    out = []
    for choice in choices:
        full = llm.tokenize(text + choice)
        shared = common_prefix_len(head, full)
        total = 0.0
        with llm._lock:
            llm._prefill(full[:shared])
            for pos in range(shared, len(full)):
                logits = np.asarray(llm._ctx.get_logits(), dtype=np.float64)
                top = logits.max()
                total += logits[full[pos]] - top - np.log(np.exp(logits - top).sum())
                if pos + 1 < len(full):
                    llm._decode([full[pos]], pos)
        out.append(float(total))
    return out


@pytest.mark.model
def test_llamacpp_score_prefills_the_prompt_once(cpp, monkeypatch):
    prompt = chat("Which tool finds facts? Answer with the tool name.")
    choices = [" search", " math", " search(query)", " I do not know."]
    head = cpp.tokenize(cpp.render(prompt))
    fulls = [cpp.tokenize(cpp.render(prompt) + c) for c in choices]
    assert all(f[: len(head)] == head for f in fulls)
    n, block = len(head), cpp.config.prefix_block
    tail = n - (n - 1) // block * block  # tokens after the last grid point, re-run per prefill
    assert tail > 8  # so that the saving below is visible

    decoded = []
    real_decode = cpp._decode

    def counting_decode(tokens, pos):
        decoded.append(len(tokens))
        real_decode(tokens, pos)

    monkeypatch.setattr(cpp, "_decode", counting_decode)

    cpp.reset_prefix_cache()
    old = score_per_choice(cpp, prompt, choices)
    old_tokens, decoded[:] = sum(decoded), []
    cpp.reset_prefix_cache()
    [new] = cpp.score([prompt], choices)
    new_tokens = sum(decoded)

    assert new == pytest.approx(old, abs=1e-6)  # bit-identical on this CPU
    assert new[0] > new[1]  # the model prefers the right tool
    choice_steps = sum(len(f) - n - 1 for f in fulls)  # each choice's tokens but its last
    assert new_tokens == n + choice_steps
    assert old_tokens == n + (len(choices) - 1) * tail + choice_steps
    stats = cpp.prefix_cache_stats()
    assert stats.requests == len(choices)  # each choice counts, its prompt from the cache
    assert stats.cached_tokens == (len(choices) - 1) * n
