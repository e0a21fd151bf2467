"""OpenAILLM against ragloom's own server: in-process, and over a real socket on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time

import openai
import pytest
from _window_llm import SmallWindowLLM
from fastapi.testclient import TestClient

from ragloom.errors import ContextWindowError
from ragloom.runtime.backends.openai_compat import OpenAILLM
from ragloom.runtime.constrained import json_grammar
from ragloom.runtime.llm import LLM, Completion, FakeLLM, Grammar, SamplingParams
from ragloom.runtime.server import create_app


def reply(prompt):
    return "echo: " + prompt.splitlines()[-2] if "\n" in prompt else "plain: " + prompt


@pytest.fixture
def fake():
    return FakeLLM(reply)


@pytest.fixture
def llm(fake):
    client = TestClient(create_app(fake))
    return OpenAILLM("fake", base_url="http://testserver/v1", http_client=client)


def test_is_an_llm(llm):
    assert isinstance(llm, LLM) and llm.model_name == "fake"


def test_chat_and_completions_routes(llm, fake):
    [chat, plain] = llm.generate(
        [[{"role": "user", "content": "hello there"}], "once upon"], SamplingParams(max_tokens=8)
    )
    assert chat.text == "echo: hello there" and chat.finish_reason == "stop"
    assert plain.text == "plain: once upon"
    assert chat.completion_tokens == 3  # FakeLLM streams word by word


def test_streaming_and_stop(llm):
    params = SamplingParams(max_tokens=16, stop=("there",))
    pieces = list(llm.stream([{"role": "user", "content": "hello there"}], params))
    assert "".join(pieces) == "echo: hello " and len(pieces) >= 2


async def test_async_twins(llm):
    [done] = await llm.agenerate(["abc"])
    assert done.text == "plain: abc"
    assert "".join([p async for p in llm.astream("abc")]) == "plain: abc"


def test_chat_only_sends_text_as_a_user_message(fake):
    client = TestClient(create_app(fake))
    llm = OpenAILLM("fake", base_url="http://testserver/v1", http_client=client, chat_only=True)
    assert llm.generate(["question"])[0].text == "echo: question"


def test_grammar_mapping():
    seen = []

    class Spy(FakeLLM):
        def _stream(self, prompt, params):
            seen.append(params.grammar)
            yield "{}"

    client = TestClient(create_app(Spy()))
    llm = OpenAILLM("spy", base_url="http://testserver/v1", http_client=client)
    for grammar in (json_grammar({"type": "object"}), Grammar(kind="regex", source="a+")):
        llm.generate(["x"], SamplingParams(grammar=grammar))
    assert [g.kind for g in seen] == ["json_schema", "regex"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_over_a_real_socket(fake):
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(fake), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        llm = OpenAILLM("fake", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
        assert llm.generate(["ping"])[0].text == "plain: ping"
        assert "".join(llm.stream([{"role": "user", "content": "hi"}])) == "echo: hi"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_streamed_usage_comes_from_the_server(llm):
    params = SamplingParams(max_tokens=8)
    for prompt in ("once upon", [{"role": "user", "content": "hello there"}]):
        usage = Completion(text="")
        text = "".join(llm.stream(prompt, params, usage=usage))
        [done] = llm.generate([prompt], params)
        assert text == done.text and usage.completion_tokens == done.completion_tokens == 3
        assert usage.prompt_tokens == done.prompt_tokens
        assert usage.finish_reason == done.finish_reason == "stop"


def test_streamed_finish_reason_comes_from_the_server(llm):
    params = SamplingParams(max_tokens=2)  # cuts "plain: once upon" after "plain: once"
    for count_tokens in (True, False):
        usage = Completion(text="")
        text = "".join(llm.stream("once upon", params, usage=usage, count_tokens=count_tokens))
        [done] = llm.generate(["once upon"], params)
        assert text == done.text and usage.finish_reason == done.finish_reason == "length"
        # only the finish reason asked for: the server is not asked for stream usage
        assert usage.completion_tokens == (2 if count_tokens else 0)


def small_window_llm(model: SmallWindowLLM) -> OpenAILLM:
    client = TestClient(create_app(model))
    return OpenAILLM("small", base_url="http://testserver/v1", http_client=client, max_retries=0)


def test_a_prompt_too_long_for_the_server_is_a_context_window_error():
    llm = small_window_llm(SmallWindowLLM(reply, window=20))
    assert llm.generate(["short"])[0].text == "plain: short"
    for call in (
        lambda: llm.generate(["a prompt much longer than twenty characters"]),
        lambda: list(llm.stream([{"role": "user", "content": "x" * 40}])),
    ):
        with pytest.raises(ContextWindowError, match="exceeds 20"):
            call()


def test_vllm_wording_without_a_code_is_a_context_window_error_and_others_are_not():
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()
    vllm = "This model's maximum context length is 2048 tokens. However, you requested 3000."

    @app.post("/v1/completions")
    async def refuse(body: dict) -> JSONResponse:
        message = vllm if body["prompt"] == "long" else "temperature must be positive"
        error = {"message": message, "type": "BadRequestError", "code": 400}
        return JSONResponse(status_code=400, content={"error": error})

    llm = OpenAILLM("v", base_url="http://testserver/v1", http_client=TestClient(app))
    with pytest.raises(ContextWindowError, match="maximum context length is 2048"):
        llm.generate(["long"])
    with pytest.raises(openai.BadRequestError, match="temperature"):
        llm.generate(["other"])


async def test_the_joiner_cuts_results_until_the_server_accepts_its_prompt():
    from ragloom.agent import Finish, PlanRound
    from ragloom.planners.joiner import LLMJoiner
    from ragloom.tfu import Observation

    results = {i: Observation(i, "search", {}, value="fact " + "x" * 2000) for i in (1, 2, 3)}
    rounds = [PlanRound(plan="", observations=results)]
    served = SmallWindowLLM(['{"action": "finish", "answer": "three facts"}'])
    fits = LLMJoiner(served).messages("Q?", rounds, can_replan=False, max_chars=175)
    served.window = len(served.render(fits))
    joiner = LLMJoiner(small_window_llm(served))
    assert await joiner.ajoin("Q?", rounds, can_replan=False) == Finish("three facts")
    assert len(served.too_long) == 2  # 700 and 350 characters a result were refused, 175 fit
