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
    "JOINER_SYSTEM": "ragloom.planners.prompts",
    "LLMCompilerPlanner": "ragloom.planners.llmcompiler",
    "LLMJoiner": "ragloom.planners.joiner",
    "PLANNER_SYSTEM": "ragloom.planners.prompts",
    "REACT_SYSTEM": "ragloom.planners.react",
    "REAPER_SYSTEM": "ragloom.planners.prompts",
    "ReactAgent": "ragloom.planners.react",
    "Reaper": "ragloom.planners.reaper",
    "demo_corpus": "ragloom.planners.demo",
    "joiner_messages": "ragloom.planners.prompts",
    "parse_decision": "ragloom.planners.joiner",
    "planner_messages": "ragloom.planners.prompts",
    "reaper_planner": "ragloom.planners.reaper",
    "run_demo": "ragloom.planners.demo",
    "source_report": "ragloom.planners.reaper",
    "stdlib_corpus": "ragloom.planners.demo",
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
