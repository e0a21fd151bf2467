"""The OpenAI-compatible server over FakeLLM: routes, SSE streaming, grammars, errors."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from ragloom.errors import ContextWindowError
from ragloom.runtime.llm import FakeLLM
from ragloom.runtime.server import create_app


class TooLong(FakeLLM):
    def _stream(self, prompt, params):
        raise ContextWindowError("prompt of 9999 tokens exceeds the context window")


@pytest.fixture
def fake():
    return FakeLLM(["Paris is the capital."])


@pytest.fixture
def client(fake):
    return TestClient(create_app(fake))


def events(response):
    lines = [ln for ln in response.text.splitlines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(ln[6:]) for ln in lines[:-1]]


def test_models(client):
    body = client.get("/v1/models").json()
    assert body["data"][0]["id"] == "fake" and body["object"] == "list"


def test_chat_completion(client, fake):
    body = client.post(
        "/v1/chat/completions",
        json={"model": "fake", "messages": [{"role": "user", "content": "Capital?"}]},
    ).json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Paris is the capital.",
    }
    assert "Capital?" in fake.prompts[0]
    assert set(body["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}


def test_completion_stop_and_batch(client):
    body = client.post(
        "/v1/completions", json={"prompt": ["a", "b"], "stop": " the", "max_tokens": 9}
    ).json()
    assert [c["text"] for c in body["choices"]] == ["Paris is", "Paris is"]
    assert body["choices"][0]["finish_reason"] == "stop"


def test_chat_streaming(client):
    response = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "x"}], "stream": True},
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = events(response)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "Paris is the capital."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert len({c["id"] for c in chunks}) == 1


def test_completion_streaming(client):
    chunks = events(client.post("/v1/completions", json={"prompt": "x", "stream": True}))
    assert "".join(c["choices"][0]["text"] for c in chunks) == "Paris is the capital."


def test_grammar_fields_reach_the_llm():
    seen = []

    class Spy(FakeLLM):
        def _stream(self, prompt, params):
            seen.append(params.grammar)
            yield "{}"

    client = TestClient(create_app(Spy()))
    schema = {"type": "object"}
    client.post(
        "/v1/completions",
        json={
            "prompt": "x",
            "response_format": {"type": "json_schema", "json_schema": {"schema": schema}},
        },
    )
    client.post("/v1/completions", json={"prompt": "x", "guided_regex": "[0-9]+"})
    client.post("/v1/completions", json={"prompt": "x", "guided_grammar": 'root ::= "a"'})
    assert [(g.kind, g.source) for g in seen] == [
        ("json_schema", json.dumps(schema)),
        ("regex", "[0-9]+"),
        ("gbnf", 'root ::= "a"'),
    ]


def test_errors_are_openai_shaped():
    client = TestClient(create_app(TooLong()))
    for stream in (False, True):
        response = client.post("/v1/completions", json={"prompt": "x", "stream": stream})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "context_length_exceeded"
    bad = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 0})
    assert bad.status_code == 400 and "max_tokens" in bad.json()["error"]["message"]
    assert client.post("/v1/chat/completions", json={"messages": []}).status_code == 422


def test_cli_models_and_bad_serve_arguments():
    from typer.testing import CliRunner

    from ragloom.runtime.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["models"])
    assert listed.exit_code == 0 and "smollm2-135m-instruct" in listed.output
    assert "Apache-2.0" in listed.output
    bad = runner.invoke(app, ["serve", "--model", "smollm2", "--backend", "tensorrt"])
    assert bad.exit_code == 2 and "unknown backend 'tensorrt'" in bad.output
    unknown = runner.invoke(app, ["serve", "--model", "gpt-9"])
    assert unknown.exit_code == 2 and "unknown model 'gpt-9'" in unknown.output
    args = ["serve", "--model", "smollm2", "--quantization", "gguf-q8"]
    wrong = runner.invoke(app, [*args, "--backend", "llamacpp"])
    assert wrong.exit_code == 2 and "--quantization applies to the torch backend" in wrong.output
    odd = runner.invoke(app, ["serve", "--backend", "torch", "--quantization", "fp4"])
    assert odd.exit_code == 2 and "quantization must be" in odd.output


def test_cli_serve_passes_the_quantization_to_the_torch_engine(monkeypatch):
    from typer.testing import CliRunner

    from ragloom.runtime.cli import app

    seen = {}

    def fake_load(model, backend, **options):
        seen.update(model=model, backend=backend, **options)
        return FakeLLM([])

    monkeypatch.setattr("ragloom.runtime.factory.load_llm", fake_load)
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: seen.setdefault("served", True))
    args = ["serve", "--model", "smollm2", "--backend", "torch", "--quantization", "gguf-q8"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert seen == {
        "model": "smollm2",
        "backend": "torch",
        "quantization": "gguf-q8",
        "served": True,
    }


def chat_body(**extra):
    return {"messages": [{"role": "user", "content": "x"}], "max_tokens": 8} | extra


USAGE = {"stream": True, "stream_options": {"include_usage": True}}


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/v1/chat/completions", chat_body()),
        ("/v1/completions", {"prompt": ["a", "b"], "max_tokens": 3}),
    ],
)
def test_streamed_usage_is_the_last_chunk(client, route, body):
    plain = client.post(route, json=body).json()
    chunks = events(client.post(route, json=body | USAGE))
    *content, last = chunks
    assert last["choices"] == [] and last["usage"] == plain["usage"]
    assert all(c["usage"] is None and c["choices"] for c in content)
    assert last["object"] == content[0]["object"] and len({c["id"] for c in chunks}) == 1
    assert last["usage"]["completion_tokens"] == (4 if "messages" in body else 6)


def test_no_usage_unless_asked(client):
    for extra in ({}, {"stream_options": {"include_usage": False}}, {"stream_options": None}):
        chunks = events(client.post("/v1/chat/completions", json=chat_body(stream=True) | extra))
        assert chunks and all("usage" not in c and c["choices"] for c in chunks)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ("yes", "stream_options"),
        ([True], "stream_options"),
        ({"include_usage": "true"}, "include_usage"),
        ({"include_usage": 1}, "include_usage"),
        ({"include_usage": None}, "include_usage"),
    ],
)
def test_bad_stream_options_are_rejected(client, options, field):
    for route, body in (
        ("/v1/chat/completions", chat_body()),
        ("/v1/completions", {"prompt": "x"}),
    ):
        response = client.post(route, json=body | {"stream": True, "stream_options": options})
        assert response.status_code == 422
        assert any(field in err["loc"] for err in response.json()["detail"])


def test_stream_options_need_stream(client):
    body = chat_body(stream_options={"include_usage": True})
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400 and "stream_options" in response.json()["error"]["message"]


def test_usage_needs_an_llm_that_counts():
    class Bare:  # the LLM protocol without BaseLLM's token counting
        model_name = "bare"

        async def astream(self, prompt, params=None):
            yield "hi"

    client = TestClient(create_app(Bare()))
    assert events(client.post("/v1/completions", json={"prompt": "x", "stream": True}))
    response = client.post("/v1/completions", json={"prompt": "x"} | USAGE)
    assert response.status_code == 400 and "include_usage" in response.json()["error"]["message"]


@pytest.fixture(params=["torch", "llamacpp"])
def real_llm(request):
    if request.param == "torch":
        from _engine_models import smol_llm

        yield smol_llm()
        return
    from ragloom.runtime.backends.llamacpp import LlamaCppLLM

    llm = LlamaCppLLM("smollm2", n_ctx=512, n_threads=1)
    yield llm
    llm.close()


@pytest.mark.model
def test_streamed_usage_of_a_real_model(real_llm):
    client = TestClient(create_app(real_llm))
    body = chat_body(max_tokens=6, temperature=0)
    plain = client.post("/v1/chat/completions", json=body).json()["usage"]
    *content, last = events(client.post("/v1/chat/completions", json=body | USAGE))
    streamed = last["usage"]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in content)
    for usage in (plain, streamed):  # the streamed run may reuse the first one's prefix
        del usage["prompt_tokens_details"]
    assert streamed == plain and plain["prompt_tokens"] > 5 and plain["completion_tokens"] > 0


def streamed(client, route, body):
    """Text and finish reason of a streamed reply (only its last choice chunk has one)."""
    chunks = events(client.post(route, json=body | {"stream": True}))
    choices = [c["choices"][0] for c in chunks if c["choices"]]
    assert all(c["finish_reason"] is None for c in choices[:-1])
    text = "".join(c["delta"].get("content", "") if "delta" in c else c["text"] for c in choices)
    return text, choices[-1]["finish_reason"]


def unstreamed(client, route, body):
    """Text and finish reason of the same request, not streamed."""
    [choice] = client.post(route, json=body).json()["choices"]
    text = choice["message"]["content"] if "message" in choice else choice["text"]
    return text, choice["finish_reason"]


class OnePiece(FakeLLM):
    """Streams its reply as one piece, as a backend does that decodes several tokens into
    one delta: only its own finish reason can tell that ``max_tokens`` cut it."""

    def _stream_counted(self, prompt, params, usage):
        yield "".join(super()._stream_counted(prompt, params, usage))


@pytest.mark.parametrize("backend", [FakeLLM, OnePiece])
@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize(
    ("sampling", "expected"),
    [
        ({"max_tokens": 3}, "length"),  # cut after "Paris is the"
        ({"max_tokens": 50}, "stop"),  # the whole reply
        ({"max_tokens": 4, "stop": " capital"}, "stop"),  # the stop string ends it at 4 words
    ],
)
@pytest.mark.parametrize("options", [{}, {"stream_options": {"include_usage": True}}])
def test_streamed_finish_reason_is_the_non_streamed_one(
    backend, route, sampling, expected, options
):
    client = TestClient(create_app(backend(["Paris is the capital of France."])))
    body = (chat_body() if "chat" in route else {"prompt": "x"}) | sampling
    plain = unstreamed(client, route, body)
    assert plain[1] == expected
    assert streamed(client, route, body | options) == plain


@pytest.mark.model
@pytest.mark.parametrize(
    ("question", "max_tokens", "expected"),
    [
        ("Say hi with an emoji.", 6, "length"),  # emoji: several tokens to a streamed piece
        ("What is 2+2? Answer with the number only.", 40, "stop"),  # ends by itself
        ("What is 2+2? Answer with the number only.", 8, "stop"),  # torch: the 8th is its EOS
    ],
)
def test_streamed_finish_reason_of_a_real_model(real_llm, question, max_tokens, expected):
    client = TestClient(create_app(real_llm))
    body = {"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens}
    body |= {"temperature": 0}
    route = "/v1/chat/completions"
    plain = client.post(route, json=body).json()
    text, reason = streamed(client, route, body)
    assert (text, reason) == (plain["choices"][0]["message"]["content"], expected)
    assert plain["choices"][0]["finish_reason"] == expected
    chunks = events(client.post(route, json=body | USAGE))  # counts asked for: same reason
    *content, last = chunks
    assert content[-1]["choices"][0]["finish_reason"] == expected
    tokens = last["usage"]["completion_tokens"]
    assert tokens <= max_tokens and (tokens == max_tokens or expected == "stop")
    if expected == "length":  # fewer pieces than tokens: counting pieces would say "stop"
        assert len([c for c in content if c["choices"][0]["delta"].get("content")]) < tokens
