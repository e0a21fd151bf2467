"""Sweep results in SQLite, written as each cell finishes, so a killed sweep loses nothing.

``results.sqlite`` in the run folder holds:

- ``meta(key, value)``: the sweep config (JSON) and data set name;
- ``cells``: one row per finished cell -- id, parameters, mean metrics, mean retrieval and
  total latency per question, wall seconds, the process that computed it and when;
- ``rows``: one row per (cell, example) -- answer, retrieved chunk ids, metric scores and
  explanations, latencies.

A cell's ``cells`` row and its ``rows`` are written in one transaction: a cell is either
finished with all its rows, or absent (and recomputed on resume). WAL mode lets Ray workers
in other processes write to the same file. This module does not compute anything.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragloom._sqlite import open_store
from ragloom.errors import EvalError

__all__ = ["CellRecord", "ResultStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS cells (
    cell_id TEXT PRIMARY KEY, params TEXT, metrics TEXT, retrieval_s REAL, total_s REAL,
    wall_s REAL, num_examples INT, pid INT, finished_at REAL);
CREATE TABLE IF NOT EXISTS rows (
    cell_id TEXT, example_id TEXT, answer TEXT, context_ids TEXT, scores TEXT,
    explanations TEXT, retrieval_s REAL, total_s REAL, PRIMARY KEY (cell_id, example_id));
"""


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else x


@dataclass(frozen=True, slots=True)
class CellRecord:
    """One finished cell as stored."""

    cell_id: str
    params: dict[str, Any]
    metrics: dict[str, float]
    retrieval_s: float
    total_s: float
    wall_s: float
    num_examples: int
    pid: int
    finished_at: float


class ResultStore:
    """The results file of one sweep run.

    Args:
        path: the SQLite file (its folder is created).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = open_store(path, _SCHEMA, error=EvalError, what="sweep results")

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under ``key``."""
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self, key: str) -> Any:
        """The value stored under ``key``, or None."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def finished_ids(self) -> set[str]:
        """Ids of the cells already finished."""
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT cell_id FROM cells")}

    def write_cell(self, record: CellRecord, rows: Sequence[dict[str, Any]]) -> None:
        """Write a finished cell and its per-example rows atomically."""
        cell = (record.cell_id, json.dumps(record.params),
                json.dumps({k: _nan_to_none(v) for k, v in record.metrics.items()}),
                record.retrieval_s, record.total_s, record.wall_s, record.num_examples,
                record.pid, record.finished_at)
        per_example = [(record.cell_id, r["example_id"], r["answer"], json.dumps(r["context_ids"]),
                        json.dumps({k: _nan_to_none(v) for k, v in r["scores"].items()}),
                        json.dumps(r["explanations"]), r["retrieval_s"], r["total_s"])
                       for r in rows]
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             cell)
            self._db.execute("DELETE FROM rows WHERE cell_id = ?", (record.cell_id,))
            self._db.executemany("INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?)", per_example)

    def cells(self) -> list[CellRecord]:
        """Every finished cell, in the order they finished."""
        with self._lock:
            found = self._db.execute("SELECT * FROM cells ORDER BY finished_at").fetchall()
        return [CellRecord(r[0], json.loads(r[1]),
                           {k: (float("nan") if v is None else v)
                            for k, v in json.loads(r[2]).items()},
                           r[3], r[4], r[5], r[6], r[7], r[8]) for r in found]

    def rows(self, cell_id: str) -> list[dict[str, Any]]:
        """The per-example rows of one cell."""
        with self._lock:
            found = self._db.execute(
                "SELECT example_id, answer, context_ids, scores, explanations, retrieval_s, "
                "total_s FROM rows WHERE cell_id = ? ORDER BY example_id", (cell_id,)).fetchall()
        return [{"example_id": r[0], "answer": r[1], "context_ids": json.loads(r[2]),
                 "scores": json.loads(r[3]), "explanations": json.loads(r[4]),
                 "retrieval_s": r[5], "total_s": r[6]} for r in found]

    def close(self) -> None:
        """Close the file."""
        self._db.close()


def now() -> tuple[int, float]:
    """(process id, time) stamped on each finished cell."""
    return os.getpid(), time.time()
