"""ragloom.planners."""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it (imported on first use, so importing stays light).
_LAZY: dict[str, str] = {
    "ANSWER_SYSTEM": "ragloom.planners.prompts",
    "CitingAnswerer": "ragloom.planners.reaper",
    "ClassifierRouter": "ragloom.planners.router",
    "DECISION_SCHEMA": "ragloom.planners.joiner",
    "DemoCorpus": "ragloom.planners.demo",
    "END_OF_PLAN": "ragloom.planners.prompts",
    "Evidence": "ragloom.planners.reaper",
    "JOINER_SYSTEM": "ragloom.planners.prompts",
    "LLMCompilerPlanner": "ragloom.planners.llmcompiler",
    "LLMJoiner": "ragloom.planners.joiner",
    "MULTIHOP_EXAMPLES": "ragloom.planners.prompts",
    "PLANNER_SYSTEM": "ragloom.planners.prompts",
    "REACT_SYSTEM": "ragloom.planners.react",
    "REAPER_SYSTEM": "ragloom.planners.prompts",
    "ReactAgent": "ragloom.planners.react",
    "Reaper": "ragloom.planners.reaper",
    "demo_corpus": "ragloom.planners.demo",
    "example_plan": "ragloom.planners.llmcompiler",
    "hotpot_corpus": "ragloom.planners.demo",
    "joiner_messages": "ragloom.planners.prompts",
    "parse_decision": "ragloom.planners.joiner",
    "planner_messages": "ragloom.planners.prompts",
    "print_event": "ragloom.planners.demo",
    "reaper_planner": "ragloom.planners.reaper",
    "render_tools": "ragloom.planners.llmcompiler",
    "run_demo": "ragloom.planners.demo",
    "search_tool": "ragloom.planners.demo",
    "source_report": "ragloom.planners.reaper",
    "source_tool": "ragloom.planners.reaper",
    "stdlib_corpus": "ragloom.planners.demo",
    "stream_answer": "ragloom.planners.demo",
    "trace_table": "ragloom.planners.demo",
}

__all__ = sorted(
    [
        *_LAZY,
    ]
)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ragloom.planners' has no attribute {name!r}")
