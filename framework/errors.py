"""The one error tree of ragloom.

Every error ragloom raises on purpose derives from :class:`RagloomError`, names the offending
item, and says what to do about it::

    RagloomError
    ├── ConfigError              a setting or argument is out of range (also a ValueError)
    ├── MissingDependencyError   an optional extra is not installed (also an ImportError)
    ├── PlanError                plan text or a Plan is malformed; carries the line / task id
    ├── ToolError                a tool is unknown, got bad arguments, or failed
    │   └── ToolTimeoutError     a tool ran past its timeout
    ├── RunCancelledError        a run was cancelled as a whole
    ├── RetrievalError           loading, chunking, embedding or searching failed
    │   └── IndexCorruptError    an index file on disk cannot be read
    ├── ModelError               a model cannot be found or loaded
    ├── ContextWindowError       a prompt does not fit the model's context window
    └── EvalError                a metric, data set or sweep cannot be evaluated

This module does not define warnings, and it imports nothing heavy.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ContextWindowError",
    "EvalError",
    "IndexCorruptError",
    "MissingDependencyError",
    "ModelError",
    "PlanError",
    "RagloomError",
    "RetrievalError",
    "RunCancelledError",
    "ToolError",
    "ToolTimeoutError",
]


class RagloomError(Exception):
    """Base class of every error that ragloom raises on purpose."""


class ConfigError(RagloomError, ValueError):
    """A setting or argument is invalid; the message names it and the accepted values."""


class MissingDependencyError(RagloomError, ImportError):
    """An optional dependency is missing; the message gives the ``pip install`` line."""


class PlanError(RagloomError):
    """Plan text or a plan is malformed.

    Attributes:
        line: 1-based line number in the plan text, when the error comes from parsing.
        task_id: the offending task's id, when known.
    """

    def __init__(self, message: str, *, line: int | None = None, task_id: int | None = None):
        where = []
        if line is not None:
            where.append(f"line {line}")
        if task_id is not None:
            where.append(f"task {task_id}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.line = line
        self.task_id = task_id


class ToolError(RagloomError):
    """A tool is unknown, received arguments that do not fit its schema, or raised."""

    def __init__(self, message: str, *, tool: str | None = None):
        super().__init__(f"tool {tool!r}: {message}" if tool else message)
        self.tool = tool


class ToolTimeoutError(ToolError):
    """A tool call ran past its timeout and was cancelled."""


class RunCancelledError(RagloomError):
    """The whole run was cancelled before it finished."""


class RetrievalError(RagloomError):
    """Loading, chunking, embedding, indexing or searching failed."""


class IndexCorruptError(RetrievalError):
    """An index file on disk cannot be read; nothing was overwritten."""


class ModelError(RagloomError):
    """A model cannot be found, verified or loaded."""


class ContextWindowError(RagloomError, ValueError):
    """A prompt (plus the tokens asked for) does not fit the model's context window."""


class EvalError(RagloomError):
    """A metric, data set or sweep cannot be evaluated."""
