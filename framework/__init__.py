"""ragloom: retrieval-augmented agents that plan in parallel.

The public names below are imported on first use (PEP 562), so ``import ragloom`` stays light:
it never imports torch, faiss, chromadb, ray or langgraph's graph machinery by itself.
"""

from __future__ import annotations

from ragloom import errors
from ragloom._lazy import lazy_getattr
from ragloom.errors import (
    ConfigError,
    ContextWindowError,
    EvalError,
    IndexCorruptError,
    MissingDependencyError,
    ModelError,
    PlanError,
    RagloomError,
    RetrievalError,
    RunCancelledError,
    ToolError,
    ToolTimeoutError,
)

__version__ = "0.1.0"

# public name -> module that defines it (imported on first use).
_LAZY: dict[str, str] = {
    "Agent": "ragloom.agent",
    "AgentEvent": "ragloom.agent",
    "AgentResult": "ragloom.agent",
    "END_OF_PLAN": "ragloom.plan_parser",
    "Executor": "ragloom.executors",
    "Finish": "ragloom.agent",
    "Joiner": "ragloom.agent",
    "LocalExecutor": "ragloom.executors",
    "Observation": "ragloom.tfu",
    "Plan": "ragloom.plan",
    "PlanRound": "ragloom.agent",
    "Planner": "ragloom.agent",
    "RayExecutor": "ragloom.executors",
    "Replan": "ragloom.agent",
    "RetryPolicy": "ragloom.tfu",
    "StreamingPlanParser": "ragloom.plan_parser",
    "Task": "ragloom.plan",
    "TaskEvent": "ragloom.tfu",
    "TaskFetchingUnit": "ragloom.tfu",
    "TaskRecord": "ragloom.trace",
    "Tool": "ragloom.tools",
    "ToolRegistry": "ragloom.tools",
    "Trace": "ragloom.trace",
    "event_loop_factory": "ragloom._sync",
    "find_refs": "ragloom.plan",
    "next_task_id": "ragloom.agent",
    "parse_plan": "ragloom.plan_parser",
    "resolve_args": "ragloom.plan",
    "run_sync": "ragloom._sync",
    "tool": "ragloom.tools",
}

__all__ = sorted([*errors.__all__, *_LAZY])


__getattr__ = lazy_getattr(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(__all__)
