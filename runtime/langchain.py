"""Adapters both ways between ragloom LLMs and LangChain chat models.

- :class:`RagloomChatModel` wraps any ragloom :class:`~ragloom.runtime.llm.LLM` (the torch
  engine, llama.cpp, a FakeLLM) as a LangChain ``BaseChatModel``, so LangGraph's prebuilt
  agents (``langchain.agents.create_agent``) can run on it. Tool calling works by prompt: the
  bound tools and a JSON call format are described in the system message, and a reply of the
  form ``{"tool_calls": [{"name": ..., "arguments": {...}}]}`` is parsed back into
  ``AIMessage.tool_calls``. When the caller forces a tool (``tool_choice``), the reply is
  constrained to that JSON with a grammar.
- :class:`LangChainLLM` wraps any LangChain chat model as a ragloom LLM, so hosted models can
  drive ragloom's planners.

This module imports langchain_core at import time; ``ragloom.runtime`` loads it lazily.
"""

from __future__ import annotations

import asyncio
import json
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict

from ragloom.runtime.constrained import json_grammar
from ragloom.runtime.llm import (
    BaseLLM,
    Completion,
    Message,
    PrefixCacheCounter,
    PrefixCacheStats,
    Prompt,
    SamplingParams,
    apply_stop,
    context_window_errors,
)

__all__ = ["LangChainLLM", "RagloomChatModel", "parse_tool_calls"]

_TOOL_PROMPT = """You can call these tools:
{tools}
To call tools, reply with only this JSON and nothing else:
{{"tool_calls": [{{"name": "<tool name>", "arguments": {{<arguments>}}}}]}}
When you can answer without a tool, reply with the answer as plain text."""


def _tool_lines(tools: Sequence[dict[str, Any]]) -> str:
    lines = []
    for tool in tools:
        fn = tool["function"]
        args = json.dumps(fn.get("parameters", {}).get("properties", {}))
        lines.append(f"- {fn['name']}: {fn.get('description', '')} Arguments: {args}")
    return "\n".join(lines)


def parse_tool_calls(text: str, names: Sequence[str]) -> list[dict[str, Any]]:
    """Tool calls in a reply (the JSON call format), keeping only known tool names.

    The first JSON object in the reply that holds a call counts; text after it is ignored (a
    small model may go on to write the tool's result and further calls itself, which it has
    not seen).

    >>> reply = '{"tool_calls": [{"name": "add", "arguments": {"a": 1}}]}'
    >>> parse_tool_calls(reply, ["add"])[0]["args"]
    {'a': 1}
    >>> parse_tool_calls(reply + " Result of add: 7. " + reply, ["add"])[0]["args"]
    {'a': 1}
    """
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start >= 0:
        try:
            data, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        calls = _known_calls(data, names)
        if calls:
            return calls
        start = text.find("{", start + 1)
    return []


def _known_calls(data: Any, names: Sequence[str]) -> list[dict[str, Any]]:
    """The calls of known tools in one decoded JSON value (``{"tool_calls": [...]}`` or a
    single ``{"name": ..., "arguments": ...}``)."""
    calls = data.get("tool_calls", [data]) if isinstance(data, dict) else []
    out = []
    for call in calls if isinstance(calls, list) else []:
        if not isinstance(call, dict) or call.get("name") not in names:
            continue
        args = call.get("arguments", call.get("args", {}))
        if isinstance(args, dict):
            out.append({"name": call["name"], "args": args, "id": f"call_{uuid.uuid4().hex[:12]}"})
    return out


def _forced_grammar(tools: Sequence[dict[str, Any]], choice: Any) -> SamplingParams | None:
    if choice in (None, "auto", "none"):
        return None
    names = [t["function"]["name"] for t in tools]
    if isinstance(choice, str) and choice in names:
        names = [choice]
    variants = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["function"]["name"]},
                "arguments": t["function"].get("parameters", {"type": "object"}),
            },
            "required": ["name", "arguments"],
        }
        for t in tools
        if t["function"]["name"] in names
    ]
    calls = {"type": "array", "minItems": 1, "maxItems": 4, "items": {"anyOf": variants}}
    schema = {"type": "object", "properties": {"tool_calls": calls}, "required": ["tool_calls"]}
    return SamplingParams(grammar=json_grammar(schema))


def _to_ragloom(messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]]) -> list[Message]:
    out: list[Message] = []
    for m in messages:
        text = m.content if isinstance(m.content, str) else m.text
        if isinstance(m, SystemMessage):
            out.append({"role": "system", "content": text})
        elif isinstance(m, AIMessage):
            if m.tool_calls:
                calls = [{"name": c["name"], "arguments": c["args"]} for c in m.tool_calls]
                text = json.dumps({"tool_calls": calls})
            out.append({"role": "assistant", "content": text})
        elif isinstance(m, ToolMessage):
            out.append({"role": "user", "content": f"Result of {m.name or 'the tool'}: {text}"})
        else:
            out.append({"role": "user", "content": text})
    if tools:
        note = _TOOL_PROMPT.format(tools=_tool_lines(tools))
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + note}
        else:
            out.insert(0, {"role": "system", "content": note})
    return out


class RagloomChatModel(BaseChatModel):
    """A ragloom LLM as a LangChain chat model, with prompt-based tool calling.

    Args:
        llm: any ragloom LLM.
        max_tokens: the most tokens per reply (a call's ``max_tokens`` keyword overrides it,
            as do ``temperature``, ``top_p`` and ``seed``).
        temperature: 0 is greedy.

    >>> from ragloom.runtime import FakeLLM
    >>> RagloomChatModel(llm=FakeLLM(["hi"])).invoke("hello").content
    'hi'
    """

    llm: Any
    max_tokens: int = 512
    temperature: float = 0.0
    model_config = ConfigDict(arbitrary_types_allowed=True)

    @property
    def _llm_type(self) -> str:
        return "ragloom"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools`` to the model (described in the prompt, parsed from its reply)."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[list[Message], SamplingParams, list[dict[str, Any]]]:
        tools = kwargs.get("tools") or []
        forced = _forced_grammar(tools, kwargs.get("tool_choice")) if tools else None
        params = SamplingParams(
            max_tokens=kwargs.get("max_tokens") or self.max_tokens,
            temperature=kwargs.get("temperature", self.temperature),
            top_p=kwargs.get("top_p", 1.0),
            seed=kwargs.get("seed"),
            stop=tuple(stop or ()),
            grammar=forced.grammar if forced else None,
        )
        return _to_ragloom(messages, tools), params, tools

    def _result(self, done: Completion, tools: list[dict[str, Any]]) -> ChatResult:
        names = [t["function"]["name"] for t in tools]
        calls = parse_tool_calls(done.text, names) if tools else []
        usage = {
            "input_tokens": done.prompt_tokens,
            "output_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens,
            "input_token_details": {"cache_read": done.cached_tokens},
        }
        message = AIMessage(
            content="" if calls else done.text,
            tool_calls=calls,
            usage_metadata=usage,  # type: ignore[arg-type]
            response_metadata={"finish_reason": done.finish_reason},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        prompt, params, tools = self._request(messages, stop, kwargs)
        return self._result(self.llm.generate([prompt], params)[0], tools)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        prompt, params, tools = self._request(messages, stop, kwargs)
        return self._result((await self.llm.agenerate([prompt], params))[0], tools)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        if kwargs.get("tools"):  # tool calls are parsed from the whole reply
            result = self._generate(messages, stop, run_manager, **kwargs)
            message = result.generations[0].message
            chunk = AIMessageChunk(content=message.content, tool_calls=message.tool_calls)  # type: ignore[attr-defined]
            yield ChatGenerationChunk(message=chunk)
            return
        prompt, params, _ = self._request(messages, stop, kwargs)
        for delta in self.llm.stream(prompt, params):
            if run_manager:
                run_manager.on_llm_new_token(delta)
            yield ChatGenerationChunk(message=AIMessageChunk(content=delta))


_ROLES: dict[str, Callable[[str], BaseMessage]] = {
    "system": lambda text: SystemMessage(content=text),
    "assistant": lambda text: AIMessage(content=text),
}


class LangChainLLM(BaseLLM):
    """A LangChain chat model as a ragloom LLM (it can drive ragloom's planners).

    Stop strings are sent to the model and applied again locally. With ``pass_sampling`` the
    other sampling settings go along as call keywords (``max_tokens``, ``temperature``,
    ``top_p``, ``seed``: what OpenAI-style chat models accept); otherwise they come from the
    chat model's own configuration. Grammars are not enforced (a warning says so). A provider's
    refusal of a prompt too long for its model raises ``ContextWindowError``
    (:func:`~ragloom.runtime.llm.context_window_errors`).

    >>> from langchain_core.language_models.fake_chat_models import FakeListChatModel
    >>> LangChainLLM(FakeListChatModel(responses=["4"])).generate(["2+2?"])[0].text
    '4'
    """

    def __init__(
        self,
        chat_model: BaseChatModel,
        *,
        model_name: str | None = None,
        pass_sampling: bool = False,
    ):
        self.chat_model = chat_model
        self.pass_sampling = pass_sampling
        self.model_name = (
            model_name or getattr(chat_model, "model_name", None) or type(chat_model).__name__
        )
        self._prefix_counter = PrefixCacheCounter()

    @staticmethod
    def to_messages(prompt: Prompt) -> list[BaseMessage]:
        """A ragloom prompt as LangChain messages."""
        if isinstance(prompt, str):
            return [HumanMessage(content=prompt)]
        return [
            _ROLES.get(m["role"], lambda t: HumanMessage(content=t))(m["content"]) for m in prompt
        ]

    def _check(self, params: SamplingParams) -> dict[str, Any]:
        """Keyword arguments of a chat-model call for ``params``."""
        if params.grammar is not None:
            warnings.warn(
                f"{self.model_name}: grammars are not enforced through LangChain chat models",
                stacklevel=3,
            )
        call: dict[str, Any] = {"stop": list(params.stop) or None}
        if self.pass_sampling:
            call |= {"max_tokens": params.max_tokens, "temperature": params.temperature}
            call |= {"top_p": params.top_p} | ({"seed": params.seed} if params.seed else {})
        return call

    def _stream(self, prompt: Prompt, params: SamplingParams) -> Iterator[str]:
        return self._stream_counted(prompt, params, Completion(text=""))

    def _stream_counted(
        self, prompt: Prompt, params: SamplingParams, usage: Completion
    ) -> Iterator[str]:
        """Stream the chat model; ``usage`` sums the chunks' usage metadata (where the chat
        model streams any, as :meth:`generate` reads it from the whole message) and takes
        the ``finish_reason`` of their response metadata (``"length"`` or ``"stop"``, as
        :meth:`generate` maps it)."""
        call = self._check(params)
        usage.finish_reason = "stop"  # a chat model that streams no finish reason
        messages = self.to_messages(prompt)
        with context_window_errors():
            for chunk in self.chat_model.stream(messages, **call):
                reason = (getattr(chunk, "response_metadata", None) or {}).get("finish_reason")
                if reason:
                    usage.finish_reason = "length" if reason == "length" else "stop"
                meta = getattr(chunk, "usage_metadata", None) or {}
                usage.prompt_tokens += meta.get("input_tokens", 0)
                usage.completion_tokens += meta.get("output_tokens", 0)
                details = meta.get("input_token_details") or {}
                usage.cached_tokens += details.get("cache_read", 0)
                if chunk.text:
                    yield chunk.text

    def _completion(self, message: BaseMessage, params: SamplingParams) -> Completion:
        text, stopped = apply_stop(message.text, params.stop)
        usage = getattr(message, "usage_metadata", None) or {}
        reason = message.response_metadata.get("finish_reason")
        done = Completion(
            text=text,
            finish_reason="length" if reason == "length" and not stopped else "stop",
            prompt_tokens=usage.get("input_tokens", 0),
            completion_tokens=usage.get("output_tokens", 0),
            cached_tokens=(usage.get("input_token_details") or {}).get("cache_read", 0),
        )
        if usage:
            self._prefix_counter.add(done.prompt_tokens, done.cached_tokens)
        return done

    def prefix_cache_stats(self) -> PrefixCacheStats:
        """Prompt and cached (``cache_read``) tokens from the chat model's usage metadata since
        the last reset; calls without usage (streamed ones, most fakes) are not counted."""
        return self._prefix_counter.stats()

    def reset_prefix_cache(self) -> None:
        """Zero the figures (the chat model's own cache is not reachable from here)."""
        self._prefix_counter.reset()

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[Completion]:
        """One ``invoke`` per prompt."""
        params = params or SamplingParams()
        call = self._check(params)
        with context_window_errors():
            replies = [self.chat_model.invoke(self.to_messages(p), **call) for p in prompts]
        return [self._completion(r, params) for r in replies]

    async def agenerate(
        self, prompts: Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[Completion]:
        """Concurrent ``ainvoke`` calls, one per prompt."""
        params = params or SamplingParams()
        call = self._check(params)
        with context_window_errors():
            replies = await asyncio.gather(
                *(self.chat_model.ainvoke(self.to_messages(p), **call) for p in prompts)
            )
        return [self._completion(r, params) for r in replies]
