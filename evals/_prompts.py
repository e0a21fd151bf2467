"""Judge prompts and the JSON shapes their answers must fit (private to ragloom.evals).

Every prompt states the task, the inputs, and the exact JSON to reply with; the shared
instruction text comes first so that an engine's prefix cache can reuse it across a batch.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, create_model

__all__ = [
    "Questions",
    "Relevance",
    "Statements",
    "Verdicts",
    "extract_prompt",
    "questions_prompt",
    "relevance_prompt",
    "verdicts_for",
    "verify_prompt",
]


# subtle: length caps reach the JSON-schema grammar, so a small judge cannot ramble until it
# runs out of tokens and leaves truncated, unparsable JSON
Short = Annotated[str, StringConstraints(max_length=240)]
Reason = Annotated[str, StringConstraints(max_length=160)]


class Statements(BaseModel):
    """Atomic, self-contained statements extracted from a text."""

    statements: list[Short] = Field(max_length=20)


class Verdict(BaseModel):
    """Whether one statement can be inferred from a text."""

    statement: Short = ""
    reason: Reason = ""
    verdict: Literal[0, 1]


class Verdicts(BaseModel):
    """One verdict per statement, in order."""

    verdicts: list[Verdict]


@functools.lru_cache(maxsize=64)
def verdicts_for(n: int) -> type[Verdicts]:
    """A :class:`Verdicts` schema that demands exactly ``n`` verdicts.

    Its JSON schema carries ``minItems``/``maxItems``, so constrained decoding cannot return
    the wrong count; one class per ``n`` keeps judge batches grouped.

    >>> verdicts_for(2).model_json_schema()["properties"]["verdicts"]["maxItems"]
    2
    """
    return create_model(f"Verdicts{n}", __base__=Verdicts,
                        verdicts=(list[Verdict], Field(min_length=n, max_length=n)))


class Questions(BaseModel):
    """Questions the answer would answer, and whether the answer is evasive."""

    questions: list[Short] = Field(max_length=5)
    noncommittal: bool


class Relevance(BaseModel):
    """Whether one retrieved context was useful to reach the answer."""

    reason: Reason = ""
    verdict: Literal[0, 1]


def extract_prompt(question: str, text: str) -> str:
    """Ask for the atomic claims made by ``text`` in answer to ``question``."""
    return (
        "Break the ANSWER into short, self-contained factual statements. Replace pronouns with "
        "what they refer to. Do not add anything the answer does not say. If the answer makes "
        "no factual claim (for example it says it does not know), return an empty list.\n"
        'Reply with JSON only: {"statements": ["...", "..."]}\n\n'
        f"QUESTION: {question}\nANSWER: {text}\nJSON:"
    )


def verify_prompt(statements: Sequence[str], context: str) -> str:
    """Ask, for each statement in order, whether ``context`` supports it."""
    listed = json.dumps(list(statements), ensure_ascii=False)
    return (
        "For each STATEMENT decide whether it can be directly inferred from the CONTEXT: "
        "verdict 1 if it can, 0 if it cannot. Give one verdict per statement, in the same "
        "order.\n"
        'Reply with JSON only: {"verdicts": [{"statement": "...", "reason": "...", '
        '"verdict": 0 or 1}, ...]}\n\n'
        f"CONTEXT:\n{context}\n\nSTATEMENTS: {listed}\nJSON:"
    )


def questions_prompt(answer: str, n: int) -> str:
    """Ask for ``n`` questions that ``answer`` answers, and whether it is noncommittal."""
    return (
        f"Write {n} different questions that the ANSWER below answers. Also say whether the "
        'answer is noncommittal (evasive or vague, e.g. "I don\'t know" or "I\'m not sure").\n'
        'Reply with JSON only: {"questions": ["...", ...], "noncommittal": true or false}\n\n'
        f"ANSWER: {answer}\nJSON:"
    )


def relevance_prompt(question: str, answer: str, context: str) -> str:
    """Ask whether ``context`` was useful in arriving at ``answer`` to ``question``."""
    return (
        "Decide whether the CONTEXT was useful in arriving at the ANSWER to the QUESTION: "
        "verdict 1 if it was, 0 if it was not.\n"
        'Reply with JSON only: {"reason": "...", "verdict": 0 or 1}\n\n'
        f"QUESTION: {question}\nANSWER: {answer}\nCONTEXT:\n{context}\nJSON:"
    )
