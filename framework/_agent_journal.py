"""The agent's durable side: a per-task journal in the LangGraph store, and the SQLite pair.

Every finished task's observation is written to the store (``AsyncSqliteStore`` on the
checkpoint file) the moment it finishes, keyed by thread, run and round, with the plan line it
came from; a resumed run reuses an entry only if the task's line is unchanged. Values go
through LangGraph's serializer with an allowlist of ragloom's own types (nothing is unpickled
blindly; other types come back as their serialized payload).

This module does not run tasks or build the graph (see ``_agent_graph``).
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ragloom.plan import Task
    from ragloom.tfu import Observation

__all__ = ["journal_load", "journal_put", "journalled", "persistence", "serde"]

# ragloom's own types that may sit in the checkpointed state; other types are restored only as
# their serialized payload (LangGraph's msgpack allowlist; nothing is unpickled blindly).
_ALLOWED_TYPES = [
    ("ragloom.agent", "Finish"),
    ("ragloom.agent", "PlanRound"),
    ("ragloom.agent", "Replan"),
    ("ragloom.plan", "Task"),
    ("ragloom.retrievers._types", "Chunk"),
    ("ragloom.retrievers._types", "Hit"),
    ("ragloom.tfu", "Observation"),
    ("ragloom.tfu", "TaskEvent"),
]


def _allowed() -> list[tuple[str, str]]:
    from ragloom.tfu import Observation

    return [*_ALLOWED_TYPES, (Observation.__module__, Observation.__qualname__)]


def serde() -> Any:
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    return JsonPlusSerializer(allowed_msgpack_modules=_allowed())


async def journal_put(
    store: Any, namespace: tuple[str, ...], obs: Observation, raws: dict[int, str]
) -> None:
    kind, blob = serde().dumps_typed(obs)
    value = {
        "raw": raws.get(obs.task_id, ""),
        "kind": kind,
        "blob": base64.b64encode(blob).decode(),
    }
    await store.aput(namespace, str(obs.task_id), value)


async def journal_load(store: Any, namespace: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    if store is None:
        return {}
    items = await store.asearch(namespace, limit=100_000)
    return {item.key: item.value for item in items}


def journalled(entries: dict[str, dict[str, Any]], tasks: Sequence[Task]) -> dict[int, Any]:
    """Observations of finished tasks whose plan line is unchanged."""
    codec = serde()
    done = {}
    for task in tasks:
        entry = entries.get(str(task.id))
        if entry and entry.get("raw") == task.raw:
            done[task.id] = codec.loads_typed((entry["kind"], base64.b64decode(entry["blob"])))
    return done


@contextlib.asynccontextmanager
async def persistence(checkpointer: Any, store: Any = None) -> AsyncIterator[tuple[Any, Any]]:
    """(checkpointer, store) for a run: a path opens both on one SQLite file; a checkpointer
    object is used with ``store`` (the journal; in memory when None)."""
    if checkpointer is None:
        yield None, None
    elif isinstance(checkpointer, str | Path):
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
        from langgraph.store.sqlite.aio import AsyncSqliteStore

        path = str(checkpointer)
        async with aiosqlite.connect(path) as conn:
            async with AsyncSqliteStore.from_conn_string(path) as sqlite_store:
                await sqlite_store.setup()
                yield AsyncSqliteSaver(conn, serde=serde()), sqlite_store
    else:
        from langgraph.store.memory import InMemoryStore

        yield checkpointer.with_allowlist(_allowed()), store or InMemoryStore()
