"""The LangGraph agent loop: results, streamed events, bounds, and kill-and-resume on SQLite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ragloom.agent import Agent, AgentEvent, Finish, PlanRound, Replan, next_task_id
from ragloom.errors import ConfigError
from ragloom.runtime import FakeLLM


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_invoke_runs_plan_and_joins() -> None:
    llm = FakeLLM(
        [
            "1. add(2, 3)\n2. add($1, 10)\n3. join()<END_OF_PLAN>",
            '{"action": "finish", "answer": "15"}',
        ]
    )
    result = Agent(llm, [add]).invoke("What is 2+3+10?")
    assert result.answer == "15"
    assert {i: o.value for i, o in result.observations.items()} == {1: 5, 2: 15}
    assert result.plans == ["1. add(2, 3)\n2. add($1, 10)\n3. join()"]
    assert "Results:" in llm.prompts[1] and "15" in llm.prompts[1]


async def test_astream_yields_tokens_tasks_nodes_and_result() -> None:
    llm = FakeLLM(["1. add(1, 1)\n2. join()<END_OF_PLAN>", '{"action": "finish", "answer": "2"}'])
    events: list[AgentEvent] = [e async for e in Agent(llm, [add]).astream("1+1?")]
    kinds = [e.kind for e in events]
    assert "token" in kinds and "task" in kinds and "finish" in kinds
    assert [e.data for e in events if e.kind == "node"] == ["plan", "execute", "join"]
    assert kinds[-1] == "result" and events[-1].data.answer == "2"
    assert "".join(e.data for e in events if e.kind == "token").startswith("1. add(1, 1)")


def test_sync_stream_matches_async() -> None:
    llm = FakeLLM(["1. add(1, 2)\n2. join()<END_OF_PLAN>", '{"action": "finish", "answer": "3"}'])
    events = list(Agent(llm, [add]).stream("1+2?"))
    assert events[-1].kind == "result" and events[-1].data.answer == "3"


def test_replans_are_bounded_by_max_replans() -> None:
    def reply(prompt: str) -> str:
        if "You read the results" in prompt:
            return '{"action": "replan", "reason": "never enough"}'
        first = next_task_id_from(prompt)
        return f"{first}. add(1, 1)\n{first + 1}. join()<END_OF_PLAN>"

    llm = FakeLLM(reply)
    result = Agent(llm, [add], max_replans=1).invoke("loop?")
    assert len(result.rounds) == 2, "one plan plus one replan"
    assert result.answer.startswith("No answer found") and "never enough" in result.answer
    assert 'you must use "finish"' in llm.prompts[-1]  # the last joiner was told it cannot replan


def next_task_id_from(prompt: str) -> int:
    import re

    match = re.search(r"Continue the numbering at (\d+)", prompt)
    return int(match.group(1)) if match else 1


def test_bad_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="max_replans"):
        Agent(FakeLLM(), [add], max_replans=-1)
    with pytest.raises(ConfigError, match="executor"):
        Agent(FakeLLM(), [add], executor="gpu")  # type: ignore[arg-type]


def test_next_task_id_continues_after_every_used_id() -> None:
    assert next_task_id([]) == 1
    rounds = [PlanRound(plan="1. a()\n2. b()\n3. join()"), PlanRound(plan="4. c()\n5. join()")]
    assert next_task_id(rounds) == 6
    assert Finish("x") != Replan("x")


CHILD = textwrap.dedent(
    """
    import os, sys, time
    from ragloom.agent import Agent
    from ragloom.runtime import FakeLLM

    LOG = os.environ["LOG"]

    def note(line):
        with open(LOG, "a") as f:
            f.write(line + "\\n")

    def fetch(x: str) -> str:
        "Fetch x."
        note(f"fetch {x}")
        return x.upper()

    def slow(x: str, y: str) -> str:
        "Combine slowly."
        note(f"slow-start {x}")
        if os.environ.get("HANG") == "1":
            time.sleep(120)
        note(f"slow-end {x}")
        return x + y

    def reply(prompt):
        if "You read the results" in prompt:
            return '{"action": "finish", "answer": "done"}'
        return '1. fetch("a")\\n2. fetch("b")\\n3. slow("c", "$1")\\n4. join()<END_OF_PLAN>'

    agent = Agent(FakeLLM(reply), [fetch, slow], checkpointer=os.environ["DB"])
    result = agent.invoke("Combine?", thread_id="thread-1")
    print("ANSWER", result.answer, sorted(result.observations), result.observations[3].value)
    """
)


def _log_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_killed_run_resumes_without_rerunning_finished_tasks(tmp_path: Path) -> None:
    script, log, db = tmp_path / "child.py", tmp_path / "log.txt", tmp_path / "ckpt.sqlite"
    script.write_text(CHILD)
    env = {**os.environ, "LOG": str(log), "DB": str(db), "HANG": "1"}
    child = subprocess.Popen([sys.executable, str(script)], env=env)
    deadline = time.monotonic() + 60
    while "slow-start c" not in _log_lines(log):
        assert child.poll() is None and time.monotonic() < deadline, "child never reached task 3"
        time.sleep(0.05)
    time.sleep(0.5)  # let the journal commit tasks 1 and 2
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert sorted(_log_lines(log)) == ["fetch a", "fetch b", "slow-start c"]

    env["HANG"] = "0"
    out = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "ANSWER done [1, 2, 3] cA" in out.stdout
    lines = _log_lines(log)
    assert lines.count("fetch a") == 1 and lines.count("fetch b") == 1, lines  # not re-run
    assert lines.count("slow-start c") == 2 and lines[-1] == "slow-end c"  # the killed task re-ran


def test_compile_exposes_the_langgraph_graph() -> None:
    graph = Agent(FakeLLM(), [add], max_replans=1).compile().get_graph()
    assert {"plan", "execute", "join"} <= set(graph.nodes)
    edges = {(e.source, e.target) for e in graph.edges}
    assert {("plan", "execute"), ("execute", "join"), ("join", "plan")} <= edges


def test_a_langgraph_checkpointer_object_and_store_are_used() -> None:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.store.memory import InMemoryStore

    store = InMemoryStore()
    llm = FakeLLM(["1. add(4, 4)\n2. join()<END_OF_PLAN>", '{"action": "finish", "answer": "8"}'])
    agent = Agent(llm, [add], checkpointer=InMemorySaver(), store=store)
    assert agent.invoke("4+4?", thread_id="t-1").answer == "8"
    journal = store.search(("ragloom_journal", "t-1"), limit=10)
    assert {item.key for item in journal} == {"1", "plan"}  # task 1 and the plan, journalled


def test_parse_plan_text_keeps_the_tasks_before_a_bad_line() -> None:
    from ragloom._agent_graph import parse_plan_text
    from ragloom.tools import ToolRegistry

    tasks, error = parse_plan_text(
        "1. add(1, 2)\n2. add($1, 3)\n3. ???\n4. join()", ToolRegistry([add])
    )
    assert [t.id for t in tasks] == [1, 2] and "line 3" in error


def test_tasks_before_a_bad_line_in_one_delta_still_run() -> None:
    class OneChunk(FakeLLM):
        def _stream(self, prompt, params):  # the whole reply as one delta
            yield self._reply(self.render(prompt))

    llm = OneChunk(["1. add(1, 2)\n2. ???\n3. join()<END_OF_PLAN>", '{"answer": "3"}'])
    result = Agent(llm, [add], max_replans=0).invoke("1+2?")
    assert result.observations[1].value == 3 and "line 2" in result.rounds[0].error
