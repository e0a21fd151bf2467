"""The llama.cpp backend on SmolLM2-135M: prefix-state reuse, grammars, scoring, bad input."""

from __future__ import annotations

import asyncio
import re

import pytest

from ragloom.errors import ConfigError, ContextWindowError, ModelError
from ragloom.runtime.backends._prefix_cache import PrefixStateCache
from ragloom.runtime.constrained import plan_grammar
from ragloom.runtime.llm import Grammar, SamplingParams

SYSTEM = "You write plans. Tools: search(query) finds facts; math(expr) computes. " * 12


def chat(question):
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


@pytest.fixture(scope="module")
def llm():
    from ragloom.runtime.backends.llamacpp import LlamaCppLLM

    model = LlamaCppLLM("smollm2", n_ctx=1024, n_threads=1)
    yield model
    model.close()


def test_prefix_cache_lookup_and_lru():
    cache = PrefixStateCache(max_bytes=10, block=2)
    cache.store([1, 2, 3, 4], b"aaaa")
    cache.store([1, 2], b"bb")  # covered by the longer state: not stored
    cache.store([7, 8], b"cccc")
    assert len(cache) == 2 and cache.nbytes == 8
    assert cache.lookup([1, 2, 3, 4, 5], limit=4) == (4, b"aaaa")
    assert cache.lookup([1, 2, 9], limit=2) == (2, b"aaaa")  # longest, cut to the shared part
    assert cache.lookup([5, 6], limit=2) == (0, None)
    cache.store([9, 9], b"dddd")  # over 10 bytes: the least recently used, (7, 8), goes
    assert cache.lookup([7, 8, 1], limit=2) == (0, None)
    assert cache.nbytes <= 10


@pytest.mark.model
def test_greedy_identical_cold_and_cached(llm):
    questions = ["How tall is the Eiffel tower?", "Who wrote Hamlet?"]
    params = SamplingParams(max_tokens=12)
    cold = []
    for q in questions:
        llm.reset_prefix_cache()
        cold.append(llm.generate([chat(q)], params)[0])
    assert all(c.cached_tokens == 0 for c in cold)
    llm.reset_prefix_cache()
    first = llm.generate([chat(questions[0])], params)[0]
    llm.generate(["an unrelated prompt that evicts nothing"], SamplingParams(max_tokens=1))
    second = llm.generate([chat(questions[1])], params)[0]  # restored from the saved state
    again = llm.generate([chat(questions[1])], params)[0]  # the live context
    assert [first.text, second.text, again.text] == [cold[0].text, cold[1].text, cold[1].text]
    assert second.cached_tokens >= 64 and again.cached_tokens >= second.cached_tokens
    assert second.prompt_tokens == cold[1].prompt_tokens


@pytest.mark.model
def test_plan_grammar_gives_parsable_plan(llm):
    prompt = chat("How much taller is the Eiffel tower than the Statue of Liberty?")
    params = SamplingParams(max_tokens=80, grammar=plan_grammar(["search", "math"], max_tasks=3))
    text = llm.generate([prompt], params)[0].text
    assert text.endswith("join()<END_OF_PLAN>") or text.endswith("join()\n<END_OF_PLAN>")
    tasks = [ln for ln in text.splitlines() if re.match(r"\d+\. ", ln)]
    assert [int(t.split(".")[0]) for t in tasks] == list(range(1, len(tasks) + 1))
    from ragloom.plan_parser import parse_plan

    assert [t.tool for t in parse_plan(text)][-1] == "join"


@pytest.mark.model
def test_gbnf_stop_seed_and_stream(llm):
    yes_no = Grammar(kind="gbnf", source='root ::= " yes" | " no"')
    out = llm.generate(["Is the sky blue? Answer:"], SamplingParams(max_tokens=4, grammar=yes_no))
    assert out[0].text in {" yes", " no"} and out[0].finish_reason == "stop"
    bad = Grammar(kind="gbnf", source="root ::= undefined_rule")  # would crash llama.cpp
    with pytest.raises(ConfigError, match="gbnf grammar does not compile"):
        llm.generate(["x"], SamplingParams(max_tokens=2, grammar=bad))
    counted = llm.generate(["1, 2, 3, 4,"], SamplingParams(max_tokens=12, stop=("7",)))[0]
    assert "7" not in counted.text and counted.finish_reason == "stop"
    assert "".join(llm.stream("1, 2, 3, 4,", SamplingParams(max_tokens=12, stop=("7",)))) == (
        counted.text
    )
    sampled = SamplingParams(max_tokens=8, temperature=0.9, seed=7)
    assert (
        llm.generate(["Once upon"], sampled)[0].text == llm.generate(["Once upon"], sampled)[0].text
    )


@pytest.mark.model
async def test_astream_and_score(llm):
    pieces = [
        p async for p in llm.astream("The capital of France is", SamplingParams(max_tokens=3))
    ]
    assert "Paris" in "".join(pieces)
    [[paris, london]] = await asyncio.to_thread(
        llm.score, ["The capital of France is"], [" Paris", " London"]
    )
    assert paris > london and paris < 0


@pytest.mark.model
def test_context_window_error(llm):
    with pytest.raises(ContextWindowError, match="exceeds the context window of 1024"):
        llm.generate(["word " * 1100], SamplingParams(max_tokens=4))
    with pytest.raises(ContextWindowError):
        llm.generate(["hello"], SamplingParams(max_tokens=1024))


def test_bad_models(tmp_path):
    from ragloom.runtime.backends.llamacpp import LlamaCppLLM

    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelError, match="garbage.gguf"):
        LlamaCppLLM(garbage)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 64)
    with pytest.raises(ModelError, match="truncated.gguf"):
        LlamaCppLLM(truncated)
    with pytest.raises(ModelError, match="unknown model 'no-such-model'"):
        LlamaCppLLM("no-such-model")


@pytest.mark.model
def test_native_gbnf_sampler():
    from ragloom.runtime.backends.llamacpp import LlamaCppLLM

    native = LlamaCppLLM("smollm2", n_ctx=256, n_threads=1, native_gbnf=True)
    try:
        yes_no = Grammar(kind="gbnf", source='root ::= " yes" | " no"')
        params = SamplingParams(max_tokens=4, grammar=yes_no)
        out = native.generate(["Is the sky blue? Answer:"], params)
        assert out[0].text in {" yes", " no"}
    finally:
        native.close()


def test_default_threads_are_the_idle_cores(monkeypatch):
    # n_threads=0: the measured count (ragloom.runtime.threads), not a fixed share of the cores
    from ragloom.runtime.backends import llamacpp

    monkeypatch.setattr(llamacpp, "default_num_threads", lambda: 2)
    two = llamacpp.LlamaCppLLM("smollm2", n_ctx=256)
    monkeypatch.setattr(llamacpp, "default_num_threads", lambda: 1)
    one = llamacpp.LlamaCppLLM("smollm2", n_ctx=256)
    try:
        assert (two._ctx.n_threads(), one._ctx.n_threads()) == (2, 1)
    finally:
        two.close()
        one.close()
