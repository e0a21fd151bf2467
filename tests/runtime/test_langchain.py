"""LangChain adapters both ways, with FakeLLM and langchain_core's fake chat models."""

from __future__ import annotations

import json

import pytest
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    SystemMessage,
    UsageMetadata,
)
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.tools import tool
from pydantic import BaseModel

from ragloom.runtime.langchain import LangChainLLM, RagloomChatModel, parse_tool_calls
from ragloom.runtime.llm import LLM, Completion, FakeLLM, SamplingParams


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def call(name, **arguments):
    return json.dumps({"tool_calls": [{"name": name, "arguments": arguments}]})


def test_chat_model_plain_reply_and_roles():
    fake = FakeLLM(["Paris."])
    model = RagloomChatModel(llm=fake)
    reply = model.invoke([SystemMessage("Be brief."), HumanMessage("Capital of France?")])
    assert reply.content == "Paris." and not reply.tool_calls
    assert "<|system|>\nBe brief." in fake.prompts[0] and "Capital of France?" in fake.prompts[0]
    assert "".join(c.content for c in model.stream("hi")) == "Paris."


def test_bind_tools_parses_calls_and_describes_tools():
    fake = FakeLLM([call("add", a=2, b=3)])
    reply = RagloomChatModel(llm=fake).bind_tools([add]).invoke("What is 2 + 3?")
    assert reply.tool_calls[0]["name"] == "add" and reply.tool_calls[0]["args"] == {"a": 2, "b": 3}
    assert "- add: Add two integers." in fake.prompts[0] and '"tool_calls"' in fake.prompts[0]


def test_forced_tool_choice_sends_a_json_grammar():
    seen = []

    class Spy(FakeLLM):
        def _stream(self, prompt, params):
            seen.append(params.grammar)
            yield call("add", a=1, b=1)

    RagloomChatModel(llm=Spy()).bind_tools([add], tool_choice="add").invoke("1+1")
    schema = json.loads(seen[0].source)
    assert seen[0].kind == "json_schema" and schema["required"] == ["tool_calls"]


def test_parse_tool_calls_ignores_unknown_and_garbage():
    assert parse_tool_calls("no json here", ["add"]) == []
    assert parse_tool_calls(call("rm_rf", path="/"), ["add"]) == []
    assert parse_tool_calls('prefix {"name": "add", "arguments": {"a": 1}} suffix', ["add"])


def test_parse_tool_calls_takes_the_first_call_of_a_reply_that_runs_on():
    # Qwen2.5-Coder-1.5B in the ReAct benchmark: the call, then a made-up result and a second
    # call in the same reply (before, nothing parsed and the whole text became the answer)
    reply = (
        call("add", a=1, b=2)
        + "\nResult of add: 4.\n"
        + call("add", a=4, b=5)
        + "\nSo the answer is 9."
    )
    calls = parse_tool_calls(reply, ["add"])
    assert [(c["name"], c["args"]) for c in calls] == [("add", {"a": 1, "b": 2})]
    # a JSON object that is not a call, then a call: the call
    assert parse_tool_calls('{"note": 1} then ' + call("add", a=3, b=3), ["add"])[0]["args"] == {
        "a": 3,
        "b": 3,
    }
    assert parse_tool_calls("{broken " + call("add", a=1, b=1), ["add"])  # (after garbage)
    assert parse_tool_calls('{"tool_calls": [{"name": "add", "arguments": [1]}]}', ["add"]) == []


async def test_prebuilt_agent_runs_on_a_ragloom_llm():
    from langchain.agents import create_agent

    fake = FakeLLM([call("add", a=20, b=22), "The answer is 42."])
    agent = create_agent(RagloomChatModel(llm=fake), tools=[add])
    state = await agent.ainvoke({"messages": [HumanMessage("What is 20 + 22?")]})
    messages = state["messages"]
    assert messages[-1].content == "The answer is 42."
    assert any(getattr(m, "content", None) == "42" for m in messages)  # the tool really ran
    assert "Result of add: 42" in fake.prompts[1]


def test_langchain_llm_drives_ragloom():
    llm = LangChainLLM(FakeListChatModel(responses=['1. search("x")\n2. join()<END_OF_PLAN>']))
    assert isinstance(llm, LLM)
    done = llm.generate(
        [[{"role": "system", "content": "plan"}, {"role": "user", "content": "q"}]],
        SamplingParams(stop=("<END_OF_PLAN>",)),
    )[0]
    assert done.text == '1. search("x")\n2. join()' and done.finish_reason == "stop"


async def test_langchain_llm_streams_and_gathers():
    chat = GenericFakeChatModel(messages=iter([AIMessage("hello world"), AIMessage("again")]))
    llm = LangChainLLM(chat, model_name="generic")
    assert "".join(llm.stream("hi")) == "hello world"
    [done] = await llm.agenerate(["hi"])
    assert done.text == "again" and llm.model_name == "generic"


def test_langchain_llm_warns_on_grammar():
    from ragloom.runtime.constrained import json_grammar

    llm = LangChainLLM(FakeListChatModel(responses=["{}"]))
    with pytest.warns(UserWarning, match="not enforced"):
        llm.generate(["x"], SamplingParams(grammar=json_grammar({"type": "object"})))


def test_pass_sampling_forwards_call_keywords():
    seen = []

    class Spy(FakeLLM):
        def _stream(self, prompt, params):
            seen.append(params)
            yield "ok"

    llm = LangChainLLM(RagloomChatModel(llm=Spy()), pass_sampling=True)
    llm.generate(["x"], SamplingParams(max_tokens=5, temperature=0.7, top_p=0.9, seed=4))
    assert (seen[0].max_tokens, seen[0].temperature, seen[0].top_p, seen[0].seed) == (
        5,
        0.7,
        0.9,
        4,
    )


class Answer(BaseModel):
    city: str
    population: int


def test_with_structured_output_is_grammar_constrained():
    seen = []

    class Spy(FakeLLM):
        def _stream(self, prompt, params):
            seen.append(params.grammar)
            yield call("Answer", city="Paris", population=2_100_000)

    model = RagloomChatModel(llm=Spy()).with_structured_output(Answer)
    assert model.invoke("Population of Paris?") == Answer(city="Paris", population=2_100_000)
    assert seen[0].kind == "json_schema" and "population" in seen[0].source


@pytest.mark.model
def test_structured_output_from_a_real_small_model():
    from ragloom.runtime.backends.llamacpp import LlamaCppLLM

    llm = LlamaCppLLM("smollm2", n_ctx=1024, n_threads=1)
    try:
        model = RagloomChatModel(llm=llm, max_tokens=60).with_structured_output(Answer)
        answer = model.invoke("What is the capital of France and its population?")
        assert isinstance(answer, Answer) and answer.city  # valid, whatever its quality
    finally:
        llm.close()


def test_langchain_llm_streams_usage_metadata():
    class Metered(GenericFakeChatModel):
        def _stream(self, messages, stop=None, run_manager=None, **kwargs):
            yield from super()._stream(messages, stop, run_manager, **kwargs)
            meta = UsageMetadata(input_tokens=7, output_tokens=2, total_tokens=9)
            meta["input_token_details"] = {"cache_read": 3}
            yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=meta))

    llm = LangChainLLM(Metered(messages=iter([AIMessage("hello world")])))
    usage = Completion(text="")
    assert "".join(llm.stream("hi", usage=usage)) == "hello world"
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (7, 2, 3)
    assert usage.finish_reason == "stop"  # none streamed: "stop", as generate says


def test_langchain_llm_streams_the_finish_reason():
    class Cut(GenericFakeChatModel):
        def _stream(self, messages, stop=None, run_manager=None, **kwargs):
            yield from super()._stream(messages, stop, run_manager, **kwargs)
            meta = {"finish_reason": "length"}
            yield ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata=meta))

    llm = LangChainLLM(Cut(messages=iter([AIMessage("hello world")])))
    usage = Completion(text="")
    assert "".join(llm.stream("hi", usage=usage)) == "hello world"
    assert usage.finish_reason == "length"


class ProviderRefusal(Exception):
    """What providers' clients raise for a bad request (an HTTP status and the server's words)."""

    status_code = 400


class Windowed(GenericFakeChatModel):
    """A chat model that refuses prompts over ``window`` characters, as Anthropic words it."""

    window: int = 10**9
    refused: int = 0

    def _check(self, messages):
        size = sum(len(m.text) for m in messages)
        if size > self.window:
            self.refused += 1
            raise ProviderRefusal(f"prompt is too long: {size} characters > {self.window} maximum")

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self._check(messages)
        return super()._generate(messages, stop, run_manager, **kwargs)

    def _stream(self, messages, stop=None, run_manager=None, **kwargs):
        self._check(messages)
        yield from super()._stream(messages, stop, run_manager, **kwargs)


async def test_a_provider_refusing_a_long_prompt_raises_context_window_error():
    from ragloom.errors import ContextWindowError

    llm = LangChainLLM(Windowed(messages=iter([AIMessage("ok")] * 4), window=10))
    assert llm.generate(["short"])[0].text == "ok"
    for call in (
        lambda: llm.generate(["a long prompt"]),
        lambda: list(llm.stream("a long prompt")),
    ):
        with pytest.raises(ContextWindowError, match="prompt is too long: 13 characters"):
            call()
    with pytest.raises(ContextWindowError):
        await llm.agenerate(["a long prompt"])

    class Other(GenericFakeChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            raise ProviderRefusal("temperature must be positive")

    with pytest.raises(ProviderRefusal):  # any other refusal stays the provider's own error
        LangChainLLM(Other(messages=iter([]))).generate(["x"])


async def test_a_langchain_model_drives_a_joiner_that_cuts_results_to_fit():
    from ragloom.agent import Finish, PlanRound
    from ragloom.planners.joiner import LLMJoiner
    from ragloom.tfu import Observation

    results = {i: Observation(i, "search", {}, value="fact " + "x" * 2000) for i in (1, 2, 3)}
    rounds = [PlanRound(plan="", observations=results)]
    fits = LLMJoiner(FakeLLM()).messages("Q?", rounds, can_replan=False, max_chars=350)
    chat = Windowed(messages=iter([AIMessage('{"action": "finish", "answer": "ok"}')]))
    chat.window = sum(len(m["content"]) for m in fits)
    decision = await LLMJoiner(LangChainLLM(chat)).ajoin("Q?", rounds, can_replan=False)
    assert decision == Finish("ok") and chat.refused == 1  # 700 characters a result refused
