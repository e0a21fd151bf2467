"""The LLM protocol's shared plumbing, exercised through FakeLLM."""

from __future__ import annotations

import asyncio

import pytest

from ragloom.errors import ConfigError
from ragloom.runtime import LLM, FakeLLM, SamplingParams, apply_stop


def test_fake_llm_satisfies_protocol() -> None:
    assert isinstance(FakeLLM(["x"]), LLM)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -3}, "max_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"stop": ("",)}, "stop"),
    ],
)
def test_sampling_params_reject_bad_values(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        SamplingParams(**kwargs)


def test_single_stop_string_is_wrapped() -> None:
    assert SamplingParams(stop="END").stop == ("END",)  # type: ignore[arg-type]


def test_apply_stop_takes_the_earliest() -> None:
    assert apply_stop("a STOP b END", ["END", "STOP"]) == ("a ", True)
    assert apply_stop("abc", ["x"]) == ("abc", False)


@pytest.mark.parametrize("stop", ["<END_OF_PLAN>", "join()", "\n\n"])
def test_stream_and_generate_agree_on_stop(stop: str) -> None:
    reply = "1. search('a')\n2. search('b')\n3. join()\n\n<END_OF_PLAN> trailing words"
    llm = FakeLLM([reply])
    params = SamplingParams(stop=(stop,))
    streamed = "".join(llm.stream("p", params))
    generated = llm.generate(["p"], params)[0]
    assert streamed == generated.text == reply[: reply.index(stop)]
    assert generated.finish_reason == "stop"


def test_stream_holds_back_a_partial_stop_string_only() -> None:
    llm = FakeLLM(["alpha beta <END gamma"])
    pieces = list(llm.stream("p", SamplingParams(stop=("<END>",))))
    assert "".join(pieces) == "alpha beta <END gamma"  # "<END" never completed: all text comes out


def test_max_tokens_gives_length_finish() -> None:
    llm = FakeLLM(["one two three four five"])
    out = llm.generate(["p"], SamplingParams(max_tokens=2))[0]
    assert out.text == "one two"
    assert out.finish_reason == "length"


def test_responses_in_order_then_last_repeats() -> None:
    llm = FakeLLM(["first", "second"])
    texts = [c.text for c in llm.generate(["a", "b", "c"])]
    assert texts == ["first", "second", "second"]
    assert llm.prompts == ["a", "b", "c"]


def test_callable_responses_and_chat_render() -> None:
    llm = FakeLLM(lambda prompt: "saw user" if "<|user|>" in prompt else "no")
    out = llm.generate([[{"role": "user", "content": "hi"}]])[0]
    assert out.text == "saw user"


async def test_astream_and_agenerate() -> None:
    llm = FakeLLM(["a b c STOP d"], delay=0.001)
    params = SamplingParams(stop=("STOP",))
    pieces = [p async for p in llm.astream("p", params)]
    assert "".join(pieces) == "a b c "
    assert len(pieces) > 1  # really streamed, not one lump
    done = await llm.agenerate(["p", "q"], params)
    assert [c.text for c in done] == ["a b c ", "a b c "]


async def test_astream_consumer_can_stop_early() -> None:
    llm = FakeLLM([" ".join(str(i) for i in range(200))], delay=0.001)
    agen = llm.astream("p")
    first = await agen.__anext__()
    await agen.aclose()  # the worker thread notices and ends; nothing hangs
    assert first.strip() == "0"
    await asyncio.sleep(0)


def test_score_needs_a_scores_function() -> None:
    with pytest.raises(NotImplementedError):
        FakeLLM(["x"]).score(["p"], [" yes"])
    scored = FakeLLM(["x"], scores=lambda p, c: -1.0 if c == " yes" else -2.0)
    assert scored.score(["p", "q"], [" yes", " no"]) == [[-1.0, -2.0], [-1.0, -2.0]]
