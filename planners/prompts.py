"""Prompt texts of the planners: LLMCompiler planner, joiner, REAPER retrieval planner, answerer.

Only strings and the small functions that fill them in live here; nothing calls an LLM. Prompts
are chat message lists (``[{"role": ..., "content": ...}]``) so every backend applies its own
chat template.
"""

from __future__ import annotations

from collections.abc import Sequence

from ragloom.runtime.llm import Message

__all__ = [
    "ANSWER_SYSTEM",
    "END_OF_PLAN",
    "JOINER_SYSTEM",
    "MULTIHOP_EXAMPLES",
    "PLANNER_SYSTEM",
    "REAPER_SYSTEM",
    "joiner_messages",
    "planner_messages",
]

END_OF_PLAN = "<END_OF_PLAN>"

# Few-shot plans for question answering over one ``search(query)`` tool.
MULTIHOP_EXAMPLES = (
    "Question: Which river is longer, the Rhine or the Elbe?\n"
    "Thought: two independent look-ups, in parallel\n"
    '1. search(query="Rhine river length")\n2. search(query="Elbe river length")\n'
    f"3. join(){END_OF_PLAN}",
    "Question: Who founded the company that makes the Model S?\n"
    '1. search(query="company that makes the Model S car")\n'
    '2. search(query="Tesla founders")\n'
    f"3. join(){END_OF_PLAN}",
)

PLANNER_SYSTEM = """You write a plan of tool calls that answers the user's question.
Tools:
{tools}
- join(): collects the results of the tasks above and answers. Always the last task.

Write one task per line, numbered from {first_id}: the number, a dot, then the call. Example:
{example}
Rules:
- Arguments are Python literals (strings in double quotes, numbers, lists) or "$N", the output
  of earlier task N (only tasks written earlier).
- Maximise parallelism: tasks that do not need each other's output must not depend on each other.
- Use as few tasks as the question needs; if no tool fits, write only `{first_id}. join()`.
- End with the join() task, then {end}. Optionally a `Thought: ...` line before a task.
  Write nothing else."""

REPLAN_HINT = """A previous plan did not answer the question yet. Its tasks and results:
{context}
Why it was not enough: {reason}
Write a NEW plan that fixes this. Continue the numbering at {first_id}; you may use the
results above as $N."""

JOINER_SYSTEM = """You read the results of tool calls and decide.
If they answer the question, reply with JSON {{"action": "finish", "answer": "<the answer>"}}.
If they do not and more tool calls would help, reply with JSON
{{"action": "replan", "reason": "<what is missing>"}}.{replan_note}
The answer is as short as possible - a name, a number, a date, "yes" or "no" - never a
sentence. For example {{"action": "finish", "answer": "yes"}} or
{{"action": "finish", "answer": "1997"}}. Answer in words taken from the results, never with
the [bracketed ids]. Reply with the JSON object only."""

REAPER_SYSTEM = """You plan retrieval for a conversational assistant. Sources you can search:
{tools}
- join(): gathers the evidence; always the last step.

Write the whole retrieval plan at once, one numbered step per line, starting at {first_id}.
Example:
{example}
Rules:
- Rewrite the user's words into a precise, self-contained search query for each step.
- Use a source only if its description fits the question; search several sources in parallel
  when the question needs them; if no source fits, write only `{first_id}. join()`.
- When a step needs the result of an earlier step (for example an id it found), put "$N" in
  its arguments.
- End with the join() step, then {end}. Write nothing else."""

ANSWER_SYSTEM = """Answer the question using only the evidence below. Cite the evidence you use
with its id in square brackets, like [doc.md#3]. If the evidence does not contain the answer,
say so. Be brief.
{failures}
Evidence:
{evidence}"""


def planner_messages(
    *,
    system: str,
    tools: str,
    example: str,
    question: str,
    examples: Sequence[str] = (),
    first_id: int = 1,
    replan_context: str = "",
    reason: str = "",
    history: Sequence[Message] = (),
) -> list[Message]:
    """Fill in a planner prompt (LLMCompiler or REAPER) as chat messages.

    Args:
        system: the system template, :data:`PLANNER_SYSTEM` or :data:`REAPER_SYSTEM`.
        tools: the tool descriptions, one ``- name(params): text`` line each.
        example: a short example plan in the right format (numbered from ``first_id``).
        question: the user's question.
        examples: few-shot examples, each a question followed by its plan.
        first_id: the first task id of this plan (it continues after a replan).
        replan_context: the previous plans with their results, when replanning.
        reason: the joiner's reason for replanning.
        history: earlier turns of the conversation.

    >>> m = planner_messages(system=PLANNER_SYSTEM, tools="- search(q: str)",
    ...                      example='1. search(q="x")\\n2. join()', question="Who?")
    >>> m[-1]["content"]
    'Question: Who?'
    """
    content = system.format(tools=tools, example=example, first_id=first_id, end=END_OF_PLAN)
    if examples:
        content += "\n\nExamples:\n" + "\n\n".join(e.strip() for e in examples)
    messages: list[Message] = [{"role": "system", "content": content}, *history]
    user = f"Question: {question}"
    if replan_context:
        user += "\n\n" + REPLAN_HINT.format(
            context=replan_context, reason=reason or "unknown", first_id=first_id
        )
    messages.append({"role": "user", "content": user})
    return messages


def joiner_messages(
    question: str, results: str, *, can_replan: bool, history: Sequence[Message] = ()
) -> list[Message]:
    """The joiner's prompt: the question and the rendered task results.

    >>> joiner_messages("Q?", "1. search('x') -> 'y'", can_replan=False)[0]["content"][:8]
    'You read'
    """
    note = "" if can_replan else ' No more tool calls are possible: you must use "finish".'
    return [
        {"role": "system", "content": JOINER_SYSTEM.format(replan_note=note)},
        *history,
        {"role": "user", "content": f"Question: {question}\n\nResults:\n{results}"},
    ]
