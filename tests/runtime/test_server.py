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
