"""The ReAct baseline: LangChain's ``create_agent`` loop — think, call one tool, observe, repeat.

It runs the same LLM (through the runtime's ``RagloomChatModel`` adapter, which implements
``bind_tools``) and the same ragloom tools as the planners, so comparisons differ only in the
control flow: ReAct makes one LLM call before every tool call, where LLMCompiler and REAPER
plan once and run tools in parallel. Results come back as an :class:`~ragloom.agent.
AgentResult` (the tool calls become observations; ``plans`` is empty).

This module does not plan; it adapts tools and messages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ragloom._sync import run_sync
from ragloom.agent import AgentResult, _as_registry
from ragloom.errors import ConfigError
from ragloom.planners._render import evidence_ids, render_value

if TYPE_CHECKING:
    from ragloom.runtime.llm import LLM, Message
    from ragloom.tfu import Observation
    from ragloom.tools import Tool, ToolRegistry

__all__ = ["REACT_SYSTEM", "ReactAgent"]

REACT_SYSTEM = (
    "You answer questions using the tools. Think about what you still need, call one tool at "
    "a time, read its result, and when you know the answer reply with the answer only. "
    "Never repeat a call you already made."
)
_CALL_EXAMPLE = (
    'A tool call looks like: {{"tool_calls": [{{"name": "{name}", "arguments": {args}}}]}}'
)


_CALLS: ContextVar[list[Observation] | None] = ContextVar("ragloom_react_calls", default=None)


class ReactAgent:
    """A ReAct agent (``langchain.agents.create_agent``) over ragloom tools.

    Args:
        llm: a ragloom LLM (wrapped in ``RagloomChatModel``) or a LangChain chat model.
        tools: functions, ragloom tools, or a ``ToolRegistry``.
        system_prompt: the agent's instructions (a tool-call example is appended).
        examples: few-shot examples appended to the instructions (as for the planners).
        max_steps: the most tool calls per question (LangGraph recursion limit).
        max_tokens: the longest model reply (for a ragloom LLM).

    Example:
        >>> agent = ReactAgent(llm, [search])          # doctest: +SKIP
        >>> agent.invoke("Who wrote Dune?").answer     # doctest: +SKIP
    """

    def __init__(
        self,
        llm: LLM | Any,
        tools: Sequence[Tool | Callable[..., Any]] | ToolRegistry,
        *,
        system_prompt: str = REACT_SYSTEM,
        examples: Sequence[str] = (),
        max_steps: int = 6,
        max_tokens: int = 256,
    ) -> None:
        if max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {max_steps}")
        from langchain.agents import create_agent
        from langchain_core.language_models import BaseChatModel

        self.registry = _as_registry(tools)
        if isinstance(llm, BaseChatModel):
            self.model = llm
        else:
            from ragloom.runtime.langchain import RagloomChatModel

            self.model = RagloomChatModel(llm=llm, max_tokens=max_tokens)
        self.max_steps = max_steps
        lc_tools = [_langchain_tool(self.registry.get(n)) for n in self.registry.names]
        system = "\n\n".join([system_prompt, _call_example(self.registry), *examples])
        self.graph = create_agent(self.model, lc_tools, system_prompt=system)

    async def ainvoke(self, question: str, *, history: Sequence[Message] = ()) -> AgentResult:
        """Run the ReAct loop to an answer."""
        calls: list[Observation] = []
        token = _CALLS.set(calls)
        try:
            messages: Any = [{"role": m["role"], "content": m["content"]} for m in history]
            messages.append({"role": "user", "content": question})
            config: Any = {"recursion_limit": 2 * self.max_steps + 1}
            try:
                out = await self.graph.ainvoke({"messages": messages}, config)
                answer = _final_text(out["messages"])
            except Exception as exc:  # recursion limit: report, do not crash a benchmark
                if type(exc).__name__ != "GraphRecursionError":
                    raise
                answer = f"No answer within {self.max_steps} steps."
        finally:
            _CALLS.reset(token)
        observations = {o.task_id: o for o in calls}
        return AgentResult(
            answer=answer,
            sources=evidence_ids(calls),
            plans=[],
            observations=observations,
        )

    def invoke(self, question: str, *, history: Sequence[Message] = ()) -> AgentResult:
        """Blocking twin of :meth:`ainvoke`."""
        return run_sync(self.ainvoke(question, history=history))


def _call_example(registry: ToolRegistry) -> str:
    """A concrete call of the first tool, so small models fill in values, not the schema."""
    import json

    first = registry.get(registry.names[0])
    args = json.dumps({p: "..." for p in first.parameters[:1]})
    return _CALL_EXAMPLE.format(name=first.name, args=args)


def _final_text(messages: Sequence[Any]) -> str:
    for message in reversed(messages):
        if getattr(message, "type", "") == "ai" and not getattr(message, "tool_calls", None):
            content = message.content
            return content if isinstance(content, str) else str(content)
    return ""


def _langchain_tool(tool: Tool) -> Any:
    """A LangChain ``StructuredTool`` that runs the ragloom tool and records the call."""
    from langchain_core.tools import StructuredTool

    async def run(**kwargs: Any) -> str:
        from ragloom.tfu import Observation

        calls = _CALLS.get()
        task_id = len(calls) + 1 if calls is not None else 0
        try:
            value = await tool.ainvoke(kwargs)
        except Exception as exc:  # the model sees the error and may try again
            obs = Observation(
                task_id=task_id, tool=tool.name, args=kwargs, value=None, error=str(exc), ok=False
            )
            text = f"ERROR: {exc}"
        else:
            obs = Observation(
                task_id=task_id, tool=tool.name, args=kwargs, value=value, error=None, ok=True
            )
            text = render_value(value, 1500)
        if calls is not None:
            calls.append(obs)
        return text

    return StructuredTool.from_function(
        coroutine=run,
        name=tool.name,
        description=tool.description,
        args_schema=tool.args_schema,
    )
