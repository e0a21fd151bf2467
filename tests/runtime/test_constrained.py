"""Constrained decoding: masks from llguidance, the plan grammar, JSON and bad grammars."""

from __future__ import annotations

import ast
import json
import re

import numpy as np
import pytest

from ragloom.errors import ConfigError
from ragloom.runtime.constrained import (
    TokenizerInfo,
    compile_grammar,
    json_grammar,
    plan_grammar,
)
from ragloom.runtime.llm import Grammar

PIECES = [b"\n", b"1. ", b"2. ", b"3. ", b"search", b"math", b"join()", b"<END_OF_PLAN>", b'("']
PIECES += [b'")\n', b"Thought: ", b"$1", b"$2", b" the", b", ", b"query=", b"{", b'"a"', b"}"]
VOCAB = [b"<eos>"] + [bytes([c]) for c in range(32, 127)] + PIECES


@pytest.fixture(scope="module")
def tok():
    return TokenizerInfo(vocab=VOCAB, eos_token_id=0, special_token_ids=(0,))


def sample(constraint, seed, max_steps=2000):
    """Decode with random logits under the constraint; return the text."""
    rng = np.random.default_rng(seed)
    state, ids = constraint.new_state(), []
    for _ in range(max_steps):
        if state.is_finished():
            break
        logits = state.mask_logits(rng.normal(size=len(VOCAB)) * 3)
        token = int(np.argmax(logits))
        if token == 0:
            assert state.is_accepting()
            break
        state.advance(token)
        ids.append(token)
    assert state.is_accepting()
    return b"".join(VOCAB[i] for i in ids).decode()


def check_plan(text, tools):
    """An independent reading of the plan format: numbering, tools, literal args, refs."""
    assert text.endswith("<END_OF_PLAN>") and text.count("<") == 1
    lines = [ln for ln in text[: -len("<END_OF_PLAN>")].splitlines() if ln.strip()]
    tasks = [ln for ln in lines if not ln.startswith("Thought: ")]
    for n, line in enumerate(tasks, start=1):
        head, call = line.split(". ", 1)
        assert int(head) == n
        for ref in re.findall(r"\$(\d+)", call):
            assert 1 <= int(ref) < n
        node = ast.parse(re.sub(r"\$(\d+)", r"\1", call), mode="eval").body  # $N -> N
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        assert node.func.id in {*tools, "join"}
        if node.func.id == "join":
            assert n == len(tasks)
        for value in [*node.args, *(kw.value for kw in node.keywords)]:
            assert isinstance(ast.literal_eval(value), str | int | float | list)
    assert tasks and tasks[-1].endswith("join()")
    return len(tasks)


def test_plan_grammar_always_parsable(tok):
    tools = ["search", "math"]
    constraint = compile_grammar(plan_grammar(tools, max_tasks=4, max_chars=30), tok)
    sizes = {check_plan(sample(constraint, seed), tools) for seed in range(40)}
    assert len(sizes) > 1  # random logits reach plans of different lengths


def test_plan_grammar_through_the_plan_parser(tok):
    from ragloom.plan_parser import parse_plan

    constraint = compile_grammar(plan_grammar(["search", "math"], max_tasks=3), tok)
    for seed in range(40):
        text = sample(constraint, seed)
        plan = parse_plan(text)
        assert [t.tool for t in plan][-1] == "join"
        assert len(plan) == len(re.findall(r"^\d+\. ", text, re.MULTILINE))


def test_regex_mask_and_advance(tok):
    state = compile_grammar(Grammar(kind="regex", source="ab+"), tok).new_state()
    allowed = np.flatnonzero(state.allowed_mask())
    assert [VOCAB[i] for i in allowed] == [b"a"]
    state.advance(VOCAB.index(b"a"))
    assert not state.is_accepting()
    with pytest.raises(ConfigError, match="not allowed"):
        state.advance(VOCAB.index(b"z"))


def test_json_schema_output_validates(tok):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    constraint = compile_grammar(json_grammar(schema), tok)
    for seed in range(5):
        value = json.loads(sample(constraint, seed))
        assert isinstance(value["a"], int)


def test_gbnf_and_lark_kinds(tok):
    gbnf = compile_grammar(Grammar(kind="gbnf", source='root ::= "math" | "search"'), tok)
    lark = compile_grammar(Grammar(kind="lark", source='start: "math" | "search"'), tok)
    for constraint in (gbnf, lark):
        assert sample(constraint, 0) in {"math", "search"}


def test_bad_grammars_raise_config_error(tok):
    with pytest.raises(ConfigError, match="lark grammar does not compile"):
        compile_grammar(Grammar(kind="lark", source="start: undefined_rule"), tok)
    with pytest.raises(ConfigError, match="JSON schema is not valid JSON"):
        json_grammar("{not json")
    with pytest.raises(ConfigError, match="identifiers"):
        plan_grammar(["bad name"])
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        TokenizerInfo(vocab=[b"a"], eos_token_id=3)


def test_mask_logits_pads_wider_model_vocab(tok):
    state = compile_grammar(Grammar(kind="regex", source="a"), tok).new_state()
    masked = state.mask_logits(np.zeros(len(VOCAB) + 7, dtype=np.float32))
    assert np.isfinite(masked).sum() == 1 and masked[VOCAB.index(b"a")] == 0
