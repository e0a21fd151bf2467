"""ragloom.planners: the planners that write plans for the task-fetching unit, and baselines.

- :class:`LLMCompilerPlanner` — one LLM call streams a DAG of tool calls (prompt built from the
  tool registry plus application few-shot examples; optional constrained decoding).
- :class:`LLMJoiner` — reads the observations, answers ``Finish`` or asks to ``Replan``
  (structured JSON, parsed robustly by :func:`parse_decision`).
- :class:`Reaper` — conversational RAG over several retrieval sources: one planning call,
  dependent steps via ``$N``, answers that cite chunk ids and report failed/empty sources.
- :class:`ClassifierRouter` and :class:`ReactAgent` — the designs REAPER/LLMCompiler are
  measured against (``benchmarks/planners.py``).
- ``ragloom demo`` / ``ragloom ask`` — see :mod:`ragloom.planners.demo` and ``cli``.

The agent loop that runs them is :class:`ragloom.Agent`. Names are imported on first use.
"""

from __future__ import annotations

from ragloom._lazy import lazy_getattr

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
    "demo_agent": "ragloom.planners.demo",
    "demo_corpus": "ragloom.planners.demo",
    "demo_llm": "ragloom.planners.demo",
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


__getattr__ = lazy_getattr(__name__, _LAZY)
