"""Plans: validation errors that name the task, $N resolution, critical path, Mermaid."""

from __future__ import annotations

import pytest

from ragloom import Plan, Task, ToolRegistry, find_refs, resolve_args
from ragloom.errors import PlanError


def search(query: str, k: int = 3) -> list[str]:
    """Search."""
    return [query] * k


def add(a: int, b: int) -> int:
    """Add."""
    return a + b


REGISTRY = ToolRegistry([search, add])


def test_deps_come_from_refs_and_explicit_deps() -> None:
    task = Task(4, "add", {"a": "$1", "b": ["x ${2}", {"k": "$3"}]}, deps=frozenset({9}))
    assert task.deps == {1, 2, 3, 9}
    assert find_refs(("$10", "$$2", "price $")) == {10, 2}
    assert not Task(1, "join").deps and Task(1, "join").is_join


def test_valid_plan_passes() -> None:
    plan = Plan(
        [
            Task(1, "search", {"query": "a"}),
            Task(2, "search", {"query": "b", "k": 2}),
            Task(3, "add", {"a": "$1", "b": "$2"}),  # refs: types checked once results exist
            Task(4, "join"),
        ]
    )
    plan.validate(REGISTRY)
    assert len(plan) == 4 and [t.id for t in plan] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("tasks", "task_id", "message"),
    [
        ([Task(1, "add", {"a": "$2", "b": 1}), Task(2, "add", {"a": "$1", "b": 1})], 1, "cycle"),
        ([Task(1, "add", {"a": "$1", "b": 1})], 1, "cycle"),
        ([Task(1, "search", {"query": "$2"}), Task(2, "search", {"query": "x"})], 1, "later"),
        ([Task(2, "search", {"query": "x"}), Task(2, "search", {"query": "y"})], 2, "used twice"),
        (
            [Task(3, "search", {"query": "x"}), Task(1, "search", {"query": "y"})],
            1,
            "must increase",
        ),
        ([Task(0, "search", {"query": "x"})], 0, "positive"),
        ([Task(2, "search", {"query": "$1"})], 2, "not an earlier task"),
        ([Task(1, "browse", {"url": "x"})], 1, "unknown tool 'browse'"),
        ([Task(1, "add", {"a": "one", "b": 2})], 1, "argument 'a'"),
        ([Task(1, "add", {"a": 1})], 1, "missing argument 'b'"),
        ([Task(1, "add", {"a": 1, "b": 2, "c": 3})], 1, "unexpected argument 'c'"),
        ([Task(1, "add", {"0": 1, "1": 2, "2": 3})], 1, "positional"),
    ],
)
def test_invalid_plans_name_the_task(tasks: list[Task], task_id: int, message: str) -> None:
    with pytest.raises(PlanError, match=message) as info:
        Plan(tasks).validate(REGISTRY)
    assert info.value.task_id == task_id and f"task {task_id}" in str(info.value)


def test_cycle_error_shows_the_cycle() -> None:
    tasks = [Task(1, "add", {"a": "$3", "b": 0}), Task(2, "add", {"a": "$1", "b": 0})]
    tasks.append(Task(3, "add", {"a": "$2", "b": 0}))
    with pytest.raises(PlanError, match=r"cycle \$\d -> \$\d -> \$\d -> \$\d"):
        Plan(tasks).validate()


def test_known_ids_from_earlier_rounds_may_be_referenced() -> None:
    plan = Plan([Task(5, "search", {"query": "about $2"})])
    with pytest.raises(PlanError, match="not an earlier task"):
        plan.validate(REGISTRY)
    plan.validate(REGISTRY, known=[1, 2, 3, 4])


def test_resolve_args_passes_objects_and_formats_strings() -> None:
    hits = [{"id": "a"}, {"id": "b"}]
    task = Task(
        3,
        "f",
        {
            "exact": "$1",
            "braced": "${2}",
            "text": "found $1 and ${2}!",
            "nested": {"xs": ["$2", ("$1",)], "n": 5},
        },
    )
    out = resolve_args(task, {1: hits, 2: 42})
    assert out["exact"] is hits and out["braced"] == 42
    assert out["text"] == "found [{'id': 'a'}, {'id': 'b'}] and 42!"
    assert out["nested"] == {"xs": [42, (hits,)], "n": 5}
    assert out["nested"]["xs"][1][0] is hits
    assert task.args["exact"] == "$1"  # the task itself is untouched


def test_resolve_args_without_the_result_names_it() -> None:
    with pytest.raises(PlanError, match=r"task 2: no result for \$1"):
        resolve_args(Task(2, "f", {"x": "$1"}), {})


def test_critical_path_uses_durations() -> None:
    plan = Plan(
        [
            Task(1, "a"),
            Task(2, "b"),
            Task(3, "c", deps=frozenset({1})),
            Task(4, "d", deps=frozenset({2, 3})),
        ]
    )
    assert plan.critical_path({1: 1.0, 2: 5.0, 3: 1.0, 4: 2.0}) == ([2, 4], 7.0)
    assert plan.critical_path() == ([1, 3, 4], 3.0)
    assert Plan([]).critical_path() == ([], 0.0)


def test_to_mermaid_draws_nodes_and_edges_with_escaping() -> None:
    plan = Plan(
        [
            Task(1, "search", {"0": 'say "hi" <b>'}),
            Task(2, "search", {"query": "x"}),
            Task(3, "add", {"a": "$1", "b": "$2"}),
            Task(4, "join", deps=frozenset({3})),
        ]
    )
    assert plan.to_mermaid().splitlines() == [
        "flowchart TD",
        "    t1[\"1. search('say #quot;hi#quot; #lt;b#gt;')\"]",
        "    t2[\"2. search(query='x')\"]",
        "    t3[\"3. add(a='$1', b='$2')\"]",
        '    t4["4. join()"]',
        "    t1 --> t3",
        "    t2 --> t3",
        "    t3 --> t4",
    ]
