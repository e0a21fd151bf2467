"""Open a small SQLite store shared by threads and processes (WAL mode), with a clear error.

Used by the embedding cache, the judge/generation cache and sweep results. It does not define
tables: callers pass their schema.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ragloom.errors import RagloomError

__all__ = ["open_store"]


def open_store(
    path: Path, schema: str, *, error: type[RagloomError], what: str, timeout: float = 60
) -> sqlite3.Connection:
    """Create ``path``'s folder, connect in WAL mode and apply ``schema`` (idempotent SQL).

    Raises:
        error: the file is not a readable SQLite database (message names ``what`` and path).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite3.connect(path, check_same_thread=False, timeout=timeout)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(schema)
        db.commit()
    except sqlite3.DatabaseError as exc:
        raise error(f"cannot open {what} {str(path)!r}: {exc}") from exc
    return db
