"""One conformance suite that every backend of this area runs through a parametrized fixture.

Backends: FakeLLM (the reference), OpenAILLM against ragloom's server, LangChainLLM wrapping
RagloomChatModel (both adapters in one round trip), LlamaCppLLM and the embedded TorchLLM on
SmolLM2-135M.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from ragloom.runtime.backends.openai_compat import OpenAILLM
from ragloom.runtime.langchain import LangChainLLM, RagloomChatModel
from ragloom.runtime.llm import LLM, FakeLLM, SamplingParams
from ragloom.runtime.server import create_app

REPLY = "alpha beta gamma delta epsilon zeta"


@pytest.fixture(scope="module")
def smollm2():
    from ragloom.runtime.backends.llamacpp import LlamaCppLLM

    llm = LlamaCppLLM("smollm2", n_ctx=512, n_threads=1)
    yield llm
    llm.close()


def make(kind, request):
    if kind == "fake":
        return FakeLLM(lambda prompt: REPLY)
    if kind == "openai":
        client = TestClient(create_app(FakeLLM(lambda prompt: REPLY)))
        return OpenAILLM("fake", base_url="http://testserver/v1", http_client=client)
    if kind == "langchain":
        chat = RagloomChatModel(llm=FakeLLM(lambda prompt: REPLY))
        return LangChainLLM(chat, pass_sampling=True)
    if kind == "torch":
        from _engine_models import smol_llm

        return smol_llm()
    return request.getfixturevalue("smollm2")


@pytest.fixture(
    params=[
        "fake",
        "openai",
        "langchain",
        pytest.param("llamacpp", marks=pytest.mark.model),
        pytest.param("torch", marks=pytest.mark.model),
    ]
)
def backend(request):
    return make(request.param, request)


PROMPT = "Write the Greek letters in order: alpha"
GREEDY = SamplingParams(max_tokens=8)


def test_is_an_llm(backend):
    llm = backend
    assert isinstance(llm, LLM) and isinstance(llm.model_name, str) and llm.model_name


def test_generate_one_completion_per_prompt(backend):
    llm = backend
    done = llm.generate([PROMPT, [{"role": "user", "content": PROMPT}]], GREEDY)
    assert len(done) == 2 and all(isinstance(c.text, str) and c.text for c in done)


def test_stream_agrees_with_generate(backend):
    llm = backend
    whole = llm.generate([PROMPT], GREEDY)[0].text
    assert "".join(llm.stream(PROMPT, GREEDY)) == whole


def test_stop_string_cuts_both_ways(backend):
    llm = backend
    whole = llm.generate([PROMPT], GREEDY)[0].text
    cut = len(whole) // 2
    stop = whole[cut : cut + 3]
    if not stop.strip():
        pytest.skip("the reply has no usable middle to stop at")
    params = SamplingParams(max_tokens=8, stop=(stop,))
    done = llm.generate([PROMPT], params)[0]
    assert done.text == whole[: whole.index(stop)] and done.finish_reason == "stop"
    assert "".join(llm.stream(PROMPT, params)) == done.text


def test_max_tokens_gives_length(backend):
    llm = backend
    done = llm.generate([PROMPT], SamplingParams(max_tokens=2))[0]
    assert done.finish_reason == "length" and len(done.text) < len(REPLY)


async def test_async_twins_agree(backend):
    llm = backend
    [whole] = await llm.agenerate([PROMPT], GREEDY)
    assert "".join([p async for p in llm.astream(PROMPT, GREEDY)]) == whole.text
