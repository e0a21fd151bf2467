"""The judge's disk cache, batching, grammar hand-off and strict parsing."""

from __future__ import annotations

import json

from pydantic import BaseModel

from ragloom.evals import Ask, CachedLLM, CompletionCache, Judge, parse_json_reply
from ragloom.runtime import FakeLLM, SamplingParams


class Verdict(BaseModel):
    verdict: int


def test_cache_survives_a_new_judge_and_keys_on_params(tmp_path):
    path = tmp_path / "judge.sqlite"
    first = Judge(FakeLLM(['{"verdict": 1}']), cache_path=path)
    assert first.ask([Ask("p1", Verdict), Ask("p2", Verdict)])[1].value == Verdict(verdict=1)
    assert first.num_calls == 2
    llm = FakeLLM(['{"verdict": 0}'])
    second = Judge(llm, cache_path=path)
    assert second.ask([Ask("p1", Verdict)])[0].value == Verdict(verdict=1)  # from disk
    assert second.num_calls == 0 and llm.prompts == []
    hotter = Judge(llm, cache_path=path, params=SamplingParams(max_tokens=512, temperature=0.7))
    assert hotter.ask([Ask("p1", Verdict)])[0].value == Verdict(verdict=0)  # other params
    assert hotter.num_calls == 1


def test_cached_llm_sends_distinct_misses_in_one_batch(tmp_path):
    batches = []

    class Recording(FakeLLM):
        def generate(self, prompts, params=None):
            batches.append(list(prompts))
            return super().generate(prompts, params)

    llm = CachedLLM(Recording(lambda p: p.upper()), CompletionCache(tmp_path / "c.sqlite"))
    assert [c.text for c in llm.generate(["a", "b", "a"])] == ["A", "B", "A"]
    assert batches == [["a", "b"]]
    llm.generate(["b", "c"])
    assert batches[-1] == ["c"] and (llm.num_calls, llm.num_hits) == (3, 2)
    assert len(llm.last_elapsed) == 2


def test_grammar_is_passed_unless_the_backend_declines(tmp_path):
    seen = []

    class Constrained(FakeLLM):
        def generate(self, prompts, params=None):
            seen.append(params)
            return super().generate(prompts, params)

    judge = Judge(Constrained(['{"verdict": 1}']), cache_path=tmp_path / "j.sqlite")
    judge.ask([Ask("p", Verdict)])
    assert seen[0].grammar.kind == "json_schema"
    assert json.loads(seen[0].grammar.source)["properties"]["verdict"]["type"] == "integer"
    class Unconstrained(FakeLLM):
        supports_grammar = False

    plain = Judge(Unconstrained(['{"verdict": 1}']), cache_path=tmp_path / "k.sqlite")
    assert plain._params_for(Verdict).grammar is None
    assert Judge(FakeLLM(), use_grammar=False)._params_for(Verdict).grammar is None


def test_parse_tolerates_chatter_and_rejects_wrong_shapes():
    assert parse_json_reply('ok: {"verdict": 2} done', Verdict).value == Verdict(verdict=2)
    assert parse_json_reply("{bad} then {\"verdict\": 0}", Verdict).value == Verdict(verdict=0)
    wrong = parse_json_reply('{"score": 1}', Verdict)
    assert wrong.value is None and "verdict" in wrong.error
    assert parse_json_reply("", Verdict).error == "no JSON object in the reply"
