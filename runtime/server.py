"""An OpenAI-compatible HTTP server for any ragloom LLM (``ragloom serve``).

Routes: ``GET /v1/models``, ``POST /v1/completions`` and ``POST /v1/chat/completions``, with
server-sent-event streaming (``"stream": true``; with ``"stream_options": {"include_usage":
true}`` a last chunk with empty ``choices`` carries the token ``usage``, as OpenAI sends it,
and every earlier chunk ``"usage": null``). Sampling fields map onto
:class:`~ragloom.runtime.llm.SamplingParams`; constrained decoding is asked for with OpenAI's
``response_format`` (``json_object`` / ``json_schema``) or vLLM's ``structured_outputs``
(``json``/``regex``/``grammar``) and older ``guided_regex``, ``guided_json`` and
``guided_grammar`` (Lark or GBNF) extension fields. Bad requests get
OpenAI-style error bodies (``{"error": {"message", "type", "code"}}``) with status 400.

This module builds the app (:func:`create_app`); it does not pick or load a model
(``ragloom.runtime.cli`` does), and it needs the ``runtime`` extra (FastAPI).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from ragloom.errors import ConfigError, ContextWindowError
from ragloom.runtime.constrained import json_grammar
from ragloom.runtime.llm import (
    LLM,
    BaseLLM,
    Completion,
    Grammar,
    Message,
    Prompt,
    SamplingParams,
)

__all__ = ["create_app"]


class StreamOptions(BaseModel):
    """``stream_options`` of a streamed request (other fields OpenAI may add are ignored)."""

    model_config = ConfigDict(extra="ignore")

    include_usage: StrictBool = False


class _Sampling(BaseModel):
    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: dict[str, Any] | None = None
    guided_regex: str | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_grammar: str | None = None
    structured_outputs: dict[str, Any] | None = None


class CompletionRequest(_Sampling):
    """Body of ``POST /v1/completions``."""

    prompt: str | list[str]


class ChatRequest(_Sampling):
    """Body of ``POST /v1/chat/completions``."""

    messages: list[dict[str, Any]] = Field(min_length=1)


def _grammar(req: _Sampling) -> Grammar | None:
    fmt, structured = req.response_format or {}, req.structured_outputs or {}
    req = req.model_copy(
        update={
            "guided_json": structured.get("json", req.guided_json),
            "guided_regex": structured.get("regex", req.guided_regex),
            "guided_grammar": structured.get("grammar", req.guided_grammar),
        }
    )
    if fmt.get("type") == "json_schema":
        return json_grammar(fmt.get("json_schema", {}).get("schema", {}))
    if fmt.get("type") == "json_object":
        return json_grammar({"type": "object"})
    if req.guided_json is not None:
        return json_grammar(req.guided_json)
    if req.guided_regex is not None:
        return Grammar(kind="regex", source=req.guided_regex)
    if req.guided_grammar is not None:
        kind: Literal["gbnf", "lark"] = "gbnf" if "::=" in req.guided_grammar else "lark"
        return Grammar(kind=kind, source=req.guided_grammar)
    return None


def _params(req: _Sampling) -> SamplingParams:
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    asked = [n for n in (req.max_completion_tokens, req.max_tokens) if n is not None]
    return SamplingParams(
        max_tokens=asked[0] if asked else 256,
        temperature=req.temperature,
        top_p=req.top_p,
        seed=req.seed,
        stop=stop,
        grammar=_grammar(req),
    )


def _messages(raw: list[dict[str, Any]]) -> list[Message]:
    out: list[Message] = []
    for m in raw:
        content = m.get("content") or ""
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        out.append({"role": str(m.get("role", "user")), "content": str(content)})
    return out


def _usage(done: list[Completion]) -> dict[str, Any]:
    prompt = sum(c.prompt_tokens for c in done)
    completion = sum(c.completion_tokens for c in done)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": sum(c.cached_tokens for c in done)},
    }


def _stream_usage(req: _Sampling, llm: LLM) -> bool:
    """Whether the stream ends with a usage chunk (``stream_options.include_usage``).

    Raises:
        ConfigError: ``stream_options`` without ``stream``, or usage asked of an LLM that
            cannot count a stream's tokens (one that is not a :class:`BaseLLM`).
    """
    if req.stream_options is None:
        return False
    if not req.stream:
        raise ConfigError("stream_options is only allowed when stream is true")
    if req.stream_options.include_usage and not isinstance(llm, BaseLLM):
        raise ConfigError(
            f"stream_options.include_usage: {type(llm).__name__} does not count the tokens "
            "of a stream"
        )
    return req.stream_options.include_usage


def _error(status: int, message: str, code: str) -> JSONResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return JSONResponse(status_code=status, content=body)


async def _sse(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    """Stream ``chunks`` as server-sent events; the first is awaited here, so that a bad
    request (a prompt too long, say) still gets a plain 400 instead of a broken stream."""
    first = await anext(chunks)

    async def body() -> AsyncIterator[str]:
        yield f"data: {json.dumps(first)}\n\n"
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream")


def create_app(llm: LLM) -> FastAPI:
    """An OpenAI-compatible app serving ``llm``.

    >>> from fastapi.testclient import TestClient
    >>> from ragloom.runtime import FakeLLM
    >>> client = TestClient(create_app(FakeLLM(["hi there"])))
    >>> client.post("/v1/completions", json={"prompt": "x"}).json()["choices"][0]["text"]
    'hi there'
    """
    app = FastAPI(title="ragloom", version="1")

    @app.exception_handler(ContextWindowError)
    async def _too_long(request: Request, exc: ContextWindowError) -> JSONResponse:
        return _error(400, str(exc), "context_length_exceeded")

    @app.exception_handler(ConfigError)
    async def _bad(request: Request, exc: ConfigError) -> JSONResponse:
        return _error(400, str(exc), "invalid_parameter")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": llm.model_name, "object": "model", "created": 0, "owned_by": "ragloom"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/completions", response_model=None)
    async def completions(req: CompletionRequest) -> dict[str, Any] | StreamingResponse:
        params, usage = _params(req), _stream_usage(req, llm)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if req.stream:
            return await _sse(_stream_chunks(llm, prompts, params, chat=False, usage=usage))
        done = await llm.agenerate(prompts, params)
        choices = [
            {"index": i, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None}
            for i, c in enumerate(done)
        ]
        return _envelope("text_completion", llm, choices) | {"usage": _usage(done)}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(req: ChatRequest) -> dict[str, Any] | StreamingResponse:
        params, usage = _params(req), _stream_usage(req, llm)
        prompt = _messages(req.messages)
        if req.stream:
            return await _sse(_stream_chunks(llm, [prompt], params, chat=True, usage=usage))
        [done] = await llm.agenerate([prompt], params)
        message = {"role": "assistant", "content": done.text}
        choices = [{"index": 0, "message": message, "finish_reason": done.finish_reason}]
        return _envelope("chat.completion", llm, choices) | {"usage": _usage([done])}

    return app


def _envelope(
    kind: str, llm: LLM, choices: list[dict[str, Any]], ident: str | None = None
) -> dict[str, Any]:
    prefix = "chatcmpl" if kind.startswith("chat") else "cmpl"
    return {
        "id": ident or f"{prefix}-{uuid.uuid4().hex[:24]}",
        "object": kind,
        "created": int(time.time()),
        "model": llm.model_name,
        "choices": choices,
    }


async def _stream_chunks(
    llm: LLM, prompts: list[Prompt], params: SamplingParams, *, chat: bool, usage: bool
) -> AsyncIterator[dict[str, Any]]:
    """The chunks of a streamed reply; with ``usage``, each carries ``"usage": null`` and a
    last one with no choices carries the backend's token counts over all ``prompts``.

    Each choice's ``finish_reason`` is the one the backend reports through its usage object
    (a :class:`BaseLLM` always gets one, asked for or not), so that it is the non-streamed
    reply's; an LLM that is not a :class:`BaseLLM` gets ``"length"`` once ``max_tokens``
    pieces came, its best guess.
    """
    kind = "chat.completion.chunk" if chat else "text_completion"
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"  # one id per stream
    extra: dict[str, Any] = {"usage": None} if usage else {}
    counts: list[Completion] = []
    for index, prompt in enumerate(prompts):
        done: Completion | None = None
        if isinstance(llm, BaseLLM):
            done = Completion(text="")
            counts.append(done)
            deltas = llm.astream(prompt, params, usage=done, count_tokens=usage)
        else:
            assert not usage  # checked by _stream_usage
            deltas = llm.astream(prompt, params)
        count, pieces = 0, aiter(deltas)
        piece = await anext(pieces, None)  # subtle: errors surface before the first event
        if chat:
            role = _delta(index, {"role": "assistant", "content": ""})
            yield _envelope(kind, llm, [role], ident) | extra
        while piece is not None:
            count += 1
            body = _delta(index, {"content": piece}) if chat else _text(index, piece)
            yield _envelope(kind, llm, [body], ident) | extra
            piece = await anext(pieces, None)
        guess = "length" if count >= params.max_tokens else "stop"
        reason = done.finish_reason if done is not None else guess  # filled by the backend
        last = _delta(index, {}, reason) if chat else _text(index, "", reason)
        yield _envelope(kind, llm, [last], ident) | extra
    if usage:
        yield _envelope(kind, llm, [], ident) | {"usage": _usage(counts)}


def _delta(index: int, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": reason}


def _text(index: int, text: str, reason: str | None = None) -> dict[str, Any]:
    return {"index": index, "text": text, "finish_reason": reason, "logprobs": None}
