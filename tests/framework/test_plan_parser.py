"""Plan text parsing: the LLMCompiler format, errors naming the line, streaming, fuzzing."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragloom import END_OF_PLAN, StreamingPlanParser, ToolRegistry, parse_plan
from ragloom.errors import PlanError


def search(query: str, k: int = 3) -> list[str]:
    """Search."""
    return [query] * k


def math(expression: str) -> float:
    """Evaluate arithmetic."""
    return 0.0


REGISTRY = ToolRegistry([search, math])

PLAN = """Thought: I need both populations.
1. search("population of Paris", k=3)
2. search('population of Rome')

Thought: now divide.
3. math("$1 / ${2}")
4. search(query=$3, k=-1)
5. join()
<END_OF_PLAN>
this trailing text is ignored"""


def test_parses_tasks_thoughts_refs_and_end_marker() -> None:
    plan = parse_plan(PLAN, REGISTRY)
    assert [(t.id, t.tool, t.args, t.line) for t in plan] == [
        (1, "search", {"query": "population of Paris", "k": 3}, 2),
        (2, "search", {"query": "population of Rome"}, 3),
        (3, "math", {"expression": "$1 / ${2}"}, 6),
        (4, "search", {"query": "$3", "k": -1}, 7),
        (5, "join", {}, 8),
    ]
    assert plan.tasks[2].deps == {1, 2} and plan.tasks[3].deps == {3}
    assert plan.tasks[0].raw == '1. search("population of Paris", k=3)'


def test_without_registry_positional_args_keep_index_keys() -> None:
    plan = parse_plan("1. anything(1, [2, {'a': (3, None)}], flag=True)")
    assert plan.tasks[0].args == {"0": 1, "1": [2, {"a": (3, None)}], "flag": True}


def test_end_marker_on_the_task_line_and_split_across_deltas() -> None:
    parser = StreamingPlanParser(REGISTRY)
    assert parser.feed("1. search('a')\n2. join()<END_OF") == [parser_task(1)]
    tail = parser.feed("_PLAN>\n3. search('never')\n")
    assert [t.id for t in tail] == [2] and parser.done
    assert parser.feed("4. garbage(") == [] and parser.close() == []


def parser_task(task_id: int):  # the task 1 the parser above produces
    return parse_plan(f"{task_id}. search('a')", REGISTRY).tasks[0]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("1. search('a')\nhello there", 2, "expected '1. tool"),
        ("1. search('a'", 1, "not a tool call"),
        ("1. search('a') extra", 1, "not a tool call"),
        ("1. search(__import__('os').system('x'))", 1, "not a literal"),
        ("1. search(query)", 1, "not a literal"),
        ("1. search(*xs)", 1, r"\*args"),
        ("1. search(**kw)", 1, r"\*\*kwargs"),
        ("1. search.run('a')", 1, "expected tool"),
        ("1. 42", 1, "expected tool"),
        ("2. search('a')\n1. search('b')", 2, "must increase"),
        ("1. search('a')\n1. search('b')", 2, "must increase"),
        ("1. search('$2')\n2. search('b')", 1, "forward reference"),
        ("1. search('$1')", 1, "itself"),
        ("3. search('a')\n5. search('$4')", 2, "not a task of this plan"),
        ("1. browse('x')", 1, "unknown tool 'browse'"),
        ("1. search('a', k='lots')", 1, "argument 'k'"),
        ("1. search(k=2)", 1, "missing argument 'query'"),
        ("1. search('a', 2, 3)", 1, "positional"),
        ("1. search('a', query='b')", 1, "multiple values"),
        ("1. join()\n2. search('a')", 2, "follow join"),
        ("1. join(1)", 1, "no arguments"),
        ("1. search($)", 1, "not a tool call"),
        ("9" * 5000 + ". search('a')", 1, "too long"),
        ("1. search(" + "[" * 300 + "]" * 300 + ")", 1, "not a tool call"),
    ],
)
def test_malformed_plans_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(PlanError, match=message) as info:
        parse_plan(text, REGISTRY)
    assert info.value.line == line and f"line {line}" in str(info.value)


def test_an_unknown_escape_keeps_its_backslash_whatever_the_warning_filters() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (as under python -W error: no PlanError, no warning)
        plan = parse_plan('1. search("price in \\$ or \\%")', REGISTRY)
    assert plan.tasks[0].args == {"query": "price in \\$ or \\%"}


def test_refs_below_the_first_id_belong_to_earlier_rounds() -> None:
    plan = parse_plan("4. search('more about $2')\n5. math('$4 + $1')", REGISTRY)
    assert [t.deps for t in plan] == [{2}, {1, 4}]


def test_streaming_char_by_char_matches_whole_parse() -> None:
    parser = StreamingPlanParser(REGISTRY)
    streamed = []
    first_seen_at = None
    for i, ch in enumerate(PLAN):
        got = parser.feed(ch)
        if got and first_seen_at is None:
            first_seen_at = i
        streamed += got
    streamed += parser.close()
    assert streamed == parse_plan(PLAN, REGISTRY).tasks
    assert first_seen_at == PLAN.index("\n2.")  # task 1 is out as soon as its line ends


def test_good_tasks_before_a_bad_line_in_one_delta_are_not_lost() -> None:
    parser = StreamingPlanParser(REGISTRY)
    assert [t.id for t in parser.feed("1. search('a')\n2. search('b')\nhello\n3. sea")] == [1, 2]
    with pytest.raises(PlanError, match="line 3"):
        parser.close()
    assert parser.feed("rch('c')\n") == [] and parser.close() == []
    with pytest.raises(PlanError, match="line 1"):  # nothing good before it: raised at once
        StreamingPlanParser().feed("hello\n1. a()\n")


def test_stream_without_trailing_newline_flushes_on_close() -> None:
    parser = StreamingPlanParser()
    assert parser.feed("1. a()\n2. b($1)") == parse_plan("1. a()").tasks
    assert [t.id for t in parser.close()] == [2]
    with pytest.raises(PlanError, match="line 1"):
        bad = StreamingPlanParser()
        bad.feed("1. a(")
        bad.close()


# --- fuzzing -------------------------------------------------------------------------------

# fmt: off
FRAGMENTS = [
    "1", "2", "3", "10", ". ", ".", " ", "\n", "\n", "search", "math", "join", "foo", "(", ")",
    '"', "'", '"""', "\\", "$1", "$2", "${3}", "$", "{", "}", "[", "]", ",", ":", "k=", "=",
    "-", "3.5", "1e400", "None", "True", "lambda x: x", "__import__('os')", "*", "**",
    "Thought: ", END_OF_PLAN, "#", "\t", "\x00", "é", "\r\n", "0x1F", "'a' 'b'", "f'{1}'",
]
VALID_LINES = [
    "1. search('a')", "2. search(\"b\", k=2)", "3. math('$1 + $2')", "4. search($3)",
    "Thought: hmm", "", "5. join()",
]
# fmt: on


def check(text: str, chunks: list[int]) -> None:
    """Either a plan whose every task validates, or a PlanError naming a real line."""
    lines = text.split("\n")
    try:
        plan = parse_plan(text, REGISTRY)
    except PlanError as exc:
        assert exc.line is not None and 1 <= exc.line <= len(lines), (exc, exc.line)
        outcome: object = ("error", exc.line)
    else:
        first = plan.tasks[0].id if plan.tasks else 1
        plan.validate(REGISTRY, known=range(1, first))
        outcome = plan.tasks
    # streaming the same text in random pieces gives the same outcome
    parser, tasks, pos = StreamingPlanParser(REGISTRY), [], 0
    try:
        for size in [*chunks, len(text)]:
            tasks += parser.feed(text[pos : pos + size])
            pos += size
        tasks += parser.close()
    except PlanError as exc:
        assert outcome == ("error", exc.line)
    else:
        assert outcome == tasks


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join),
    st.lists(st.integers(1, 12), max_size=10),
)
@pytest.mark.timeout(60)
def test_fuzz_fragment_soup(text: str, chunks: list[int]) -> None:
    check(text, chunks)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=120), st.lists(st.integers(1, 12), max_size=10))
@pytest.mark.timeout(60)
def test_fuzz_arbitrary_text(text: str, chunks: list[int]) -> None:
    check(text, chunks)


@st.composite
def mutated_plans(draw: st.DrawFn) -> str:
    lines = draw(st.lists(st.sampled_from(VALID_LINES), min_size=1, max_size=8))
    text = "\n".join(lines)
    for _ in range(draw(st.integers(0, 3))):
        pos = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "swap"]))
        if action == "insert":
            text = text[:pos] + draw(st.sampled_from(FRAGMENTS)) + text[pos:]
        elif action == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 4)) :]
        else:
            parts = text.split("\n")
            i, j = draw(st.integers(0, len(parts) - 1)), draw(st.integers(0, len(parts) - 1))
            parts[i], parts[j] = parts[j], parts[i]
            text = "\n".join(parts)
    return text


@settings(max_examples=150, deadline=None)
@given(mutated_plans(), st.lists(st.integers(1, 12), max_size=10))
@pytest.mark.timeout(60)
def test_fuzz_mutated_plans(text: str, chunks: list[int]) -> None:
    check(text, chunks)
