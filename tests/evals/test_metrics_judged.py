"""Judged metrics against hand-computed values, with a scripted FakeLLM judge."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from evals_fakes import TableEmbedder, count_kind, scripted_judge

from ragloom.evals import (
    AnswerCorrectness,
    AnswerRelevancy,
    AnswerSimilarity,
    ContextPrecision,
    ContextRecall,
    Example,
    Faithfulness,
    Judge,
    Prediction,
    evaluate,
    precision_weighted,
)
from ragloom.runtime import FakeLLM

Q = "Where is the Eiffel Tower?"
ANSWER = "The Eiffel Tower is in Paris. It is 330 m tall."
REFERENCE = "The Eiffel Tower is in Paris, France."
A_CLAIMS = ["The Eiffel Tower is in Paris.", "The Eiffel Tower is 330 m tall."]
R_CLAIMS = ["The Eiffel Tower is in Paris.", "Paris is in France."]
CTX_PARIS = "The tower stands in Paris."
CTX_OTHER = "Bananas are yellow."
EX = Example(id="e", question=Q, answers=(REFERENCE,))


def make_judge(tmp_path, **tables):
    tables.setdefault("statements", {ANSWER: A_CLAIMS, REFERENCE: R_CLAIMS})
    llm = FakeLLM(scripted_judge(**tables))
    return Judge(llm, cache_path=tmp_path / "judge.sqlite"), llm


def test_faithfulness_hand_computed(tmp_path):
    judge, llm = make_judge(tmp_path, supported={CTX_PARIS: {A_CLAIMS[0]}})
    result = Faithfulness(judge)(EX, Prediction.of(ANSWER, [CTX_OTHER, CTX_PARIS]))
    assert result.score == 0.5 and "1 of 2" in result.explanation  # 1 supported / 2 claims
    assert len(llm.prompts) == 2  # extract, verify


def test_faithfulness_edge_cases(tmp_path):
    judge, llm = make_judge(tmp_path)
    empty_answer = Faithfulness(judge)(EX, Prediction.of("", [CTX_PARIS]))
    assert math.isnan(empty_answer.score) and "empty answer" in empty_answer.explanation
    assert llm.prompts == []  # no judge call for an empty answer
    no_context = Faithfulness(judge)(EX, Prediction.of(ANSWER, []))
    assert no_context.score == 0.0 and "no context" in no_context.explanation
    no_claims = Faithfulness(judge)(EX, Prediction.of("I don't know", [CTX_PARIS]))
    assert math.isnan(no_claims.score) and "no claims" in no_claims.explanation


@pytest.mark.parametrize("reply", [
    "The claims are all supported!",                       # no JSON at all
    '{"verdicts": [{"verdict": 1}]}',                      # 1 verdict for 2 claims
    '{"verdicts": [{"verdict": 1}, {"verdict": "yes"}]}',  # not 0/1
    '{"verdicts": [{"verdict": 1}, {"verdict": 1}',        # truncated
])
def test_malformed_verdict_is_nan_never_one(tmp_path, reply):
    extract = json.dumps({"statements": A_CLAIMS})
    judge = Judge(FakeLLM([extract, reply]), cache_path=tmp_path / "j.sqlite")
    result = Faithfulness(judge)(EX, Prediction.of(ANSWER, [CTX_PARIS]))
    assert math.isnan(result.score) and "malformed" in result.explanation


def test_answer_relevancy_mean_cosine_and_noncommittal(tmp_path):
    generated = ["Where is the tower?", "How tall is it?"]
    embedder = TableEmbedder({Q: [1, 0, 0], generated[0]: [1, 0, 0], generated[1]: [0.6, 0.8, 0]})
    judge, _ = make_judge(tmp_path, questions={ANSWER: generated})
    metric = AnswerRelevancy(judge, embedder)
    assert metric(EX, Prediction.of(ANSWER)).score == pytest.approx((1.0 + 0.6) / 2)
    vague = metric(EX, Prediction.of("It might be somewhere in Europe, hard to say."))
    assert vague.score == 0.0 and "noncommittal" in vague.explanation
    assert metric(EX, Prediction.of("")).score == 0.0


def test_context_precision_from_gold_needs_no_judge():
    ex = Example(id="e", question=Q, gold_ids=("d1",))
    pred = Prediction(contexts=tuple(Prediction.of("", ["a", "b", "c"]).contexts))
    pred = Prediction(contexts=tuple(
        c.__class__(id=c.id, text=c.text, metadata={"source": s})
        for c, s in zip(pred.contexts, ["d1", "d2", "d1"], strict=True)))
    result = ContextPrecision()(ex, pred)  # no judge given: would raise if it asked one
    assert result.score == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert "gold verdicts 101" in result.explanation
    assert ContextPrecision(k=1)(ex, pred).score == 1.0
    assert ContextPrecision()(ex, Prediction()).score == 0.0  # nothing retrieved


def test_context_precision_from_judge(tmp_path):
    judge, llm = make_judge(tmp_path, relevant={CTX_PARIS})
    pred = Prediction.of(ANSWER, [CTX_OTHER, CTX_PARIS, CTX_OTHER + "!"])
    result = ContextPrecision(judge)(EX, pred)  # verdicts 0,1,0 -> (1/2) / 1
    assert result.score == 0.5 and "judge verdicts 010" in result.explanation
    assert count_kind(llm.prompts, "Decide whether") == 3
    nothing = ContextPrecision(judge)(Example(id="x", question=Q), Prediction.of("", ["c"]))
    assert math.isnan(nothing.score)


def test_precision_weighted_all_irrelevant():
    assert precision_weighted([0, 0, 0]) == 0.0 and precision_weighted([]) == 0.0


def test_context_recall(tmp_path):
    judge, _ = make_judge(tmp_path, supported={CTX_PARIS: {R_CLAIMS[0]}})
    assert ContextRecall(judge)(EX, Prediction.of(ANSWER, [CTX_PARIS])).score == 0.5
    assert ContextRecall(judge)(EX, Prediction.of(ANSWER, [])).score == 0.0
    unanswerable = Example(id="u", question=Q, answerable=False)
    assert math.isnan(ContextRecall(judge)(unanswerable, Prediction.of("x", ["c"])).score)
    assert math.isnan(ContextRecall(judge)(Example(id="n", question=Q), Prediction.of("x")).score)


def test_answer_similarity():
    embedder = TableEmbedder({ANSWER: [1, 0, 0], REFERENCE: [0.8, 0.6, 0]})
    metric = AnswerSimilarity(embedder=embedder)
    assert metric(EX, Prediction.of(ANSWER)).score == pytest.approx(0.8)
    assert metric(EX, Prediction.of("")).score == 0.0
    assert math.isnan(metric(Example(id="n", question=Q), Prediction.of(ANSWER)).score)


def test_answer_correctness_hand_computed(tmp_path):
    # answer claims supported by the reference: [1, 0]; reference claims covered: [1, 0]
    # TP=1, FP=1, FN=1 -> F1 = 1 / (1 + 1) = 0.5; similarity 0.8 -> 0.75*0.5 + 0.25*0.8
    supported = {"Paris, France": {A_CLAIMS[0]}, "in Paris. It": {R_CLAIMS[0]}}
    judge, _ = make_judge(tmp_path, supported=supported)
    embedder = TableEmbedder({ANSWER: [1, 0, 0], REFERENCE: [0.8, 0.6, 0]})
    result = AnswerCorrectness(judge, embedder)(EX, Prediction.of(ANSWER))
    assert result.score == pytest.approx(0.575)


def test_answer_correctness_edge_cases(tmp_path):
    judge, llm = make_judge(tmp_path)
    metric = AnswerCorrectness(judge, TableEmbedder({}))
    unanswerable = Example(id="u", question=Q, answerable=False)
    assert metric(unanswerable, Prediction.of("I don't know")).score == 1.0
    assert metric(unanswerable, Prediction.of("In Paris")).score == 0.0
    assert metric(EX, Prediction.of("")).score == 0.0
    assert math.isnan(metric(Example(id="n", question=Q), Prediction.of(ANSWER)).score)
    assert llm.prompts == []


def test_evaluate_batches_rounds_and_shares_statement_extraction(tmp_path):
    judge, llm = make_judge(tmp_path, supported={CTX_PARIS: set(A_CLAIMS)})
    embedder = TableEmbedder({})
    examples = [EX, Example(id="e2", question=Q, answers=(REFERENCE,))]
    preds = [Prediction.of(ANSWER, [CTX_PARIS])] * 2
    metrics = [Faithfulness(judge), AnswerCorrectness(judge, embedder), ContextRecall(judge)]
    calls = []
    original = llm.generate
    llm.generate = lambda prompts, params=None: calls.append(len(prompts)) or original(
        prompts, params)
    result = evaluate(examples, preds, metrics)
    assert result.means["faithfulness"] == 1.0
    # round 1: extraction of ANSWER and REFERENCE (identical prompts deduplicated: 2 distinct)
    # round 2: distinct verification prompts; every round is ONE generate call
    assert calls[0] == 2 and len(calls) == 2
    again = evaluate(examples, preds, metrics)  # re-running costs no judge call
    assert len(calls) == 2 and again.means == result.means
    assert judge.num_calls == sum(calls)


def test_cosines_are_clipped_not_negative():
    embedder = TableEmbedder({ANSWER: [1, 0, 0], REFERENCE: [-1, 0, 0]})
    assert AnswerSimilarity(embedder=embedder)(EX, Prediction.of(ANSWER)).score == 0.0
    assert np.isfinite(AnswerSimilarity(embedder=embedder)(EX, Prediction.of("x")).score)


def test_evaluate_counts_undefined_scores_instead_of_averaging_them():
    from ragloom.evals import exact_match

    examples = [EX, Example(id="n", question=Q)]
    result = evaluate(examples, [Prediction.of(REFERENCE)] * 2, [exact_match])
    assert result.means == {"exact_match": 1.0} and result.num_undefined == {"exact_match": 1}
    assert math.isnan(result.rows[1]["exact_match"].score)


def test_exported_names_are_not_shadowed_by_submodules():
    import ragloom.evals as evals
    import ragloom.evals.runner  # noqa: F401  (imports every evals module it uses)

    assert callable(evals.evaluate) and not isinstance(evals.evaluate, type(evals))


def test_verification_grammar_demands_one_verdict_per_claim(tmp_path):
    seen = []

    class Recording(FakeLLM):
        def generate(self, prompts, params=None):
            seen.append(params)
            return super().generate(prompts, params)

    llm = Recording(scripted_judge({ANSWER: A_CLAIMS}, {CTX_PARIS: set(A_CLAIMS)}))
    judge = Judge(llm, cache_path=tmp_path / "j.sqlite")
    assert Faithfulness(judge)(EX, Prediction.of(ANSWER, [CTX_PARIS])).score == 1.0
    schema = json.loads(seen[-1].grammar.source)
    assert schema["properties"]["verdicts"]["minItems"] == 2
    assert schema["properties"]["verdicts"]["maxItems"] == 2
