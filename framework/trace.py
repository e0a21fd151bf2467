"""Run traces: when each task was queued, became ready, started and ended, and how it went.

The task-fetching unit fills a :class:`Trace` as it runs (one :class:`TaskRecord` per task;
times in seconds since the trace was created). :meth:`Trace.plot` draws the run as a Gantt
timeline with matplotlib (imported on first use; a bare ``Figure``, so no display is needed).

This module does not schedule anything and keeps the result values by reference (it does not
copy or serialize them, except as ``repr`` in :meth:`Trace.to_dict`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ragloom.tfu import Observation

__all__ = ["TaskRecord", "Trace"]


@dataclass(slots=True)
class TaskRecord:
    """One task's timeline, in seconds since the trace started.

    Attributes:
        task_id: the task's id.
        tool: the tool's name.
        queued: when the unit received the task.
        ready: when its last dependency finished (``None`` if it never became ready).
        started: when its first attempt started (``None`` if it never ran).
        ended: when its observation was recorded.
        ok: whether it succeeded (``None`` while running).
        error: the error text of a failed task.
        value: the result (by reference).
        attempts: how many times the tool was called.
    """

    task_id: int
    tool: str
    queued: float
    ready: float | None = None
    started: float | None = None
    ended: float | None = None
    ok: bool | None = None
    error: str | None = None
    value: Any = None
    attempts: int = 0

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (``None`` if it did not run)."""
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started

    @property
    def dispatch_latency(self) -> float | None:
        """Seconds from ready (last dependency done) to started."""
        if self.started is None or self.ready is None:
            return None
        return self.started - self.ready


class Trace:
    """Per-task timings and results of one or more runs.

    >>> trace = Trace()
    >>> trace.queued(1, "search"); trace.started(1)
    >>> trace.records[0].tool, trace.records[0].ended is None
    ('search', True)
    """

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self._records: dict[int, TaskRecord] = {}

    def now(self) -> float:
        """Seconds since the trace started."""
        return time.perf_counter() - self.t0

    # --- recording (called by the task-fetching unit) ---------------------------------------

    def queued(self, task_id: int, tool: str, *, ready: bool = False) -> None:
        """The unit received the task (``ready``: with no dependency left to wait for)."""
        now = self.now()
        self._records[task_id] = TaskRecord(task_id, tool, queued=now, ready=now if ready else None)

    def ready(self, task_id: int) -> None:
        """The task's last dependency finished."""
        self._records[task_id].ready = self.now()

    def started(self, task_id: int) -> None:
        """The task's tool was called (first attempt)."""
        record = self._records[task_id]
        record.started = self.now()
        if record.ready is None:
            record.ready = record.started

    def finished(self, obs: Observation) -> None:
        """The task produced its observation (success, error or skipped dependant)."""
        record = self._records.get(obs.task_id)
        if record is None:
            record = self._records[obs.task_id] = TaskRecord(obs.task_id, obs.tool, self.now())
        record.ended = self.now()
        record.ok, record.error, record.value = obs.ok, obs.error, obs.value
        record.attempts = obs.attempts

    # --- reading -----------------------------------------------------------------------------

    @property
    def records(self) -> list[TaskRecord]:
        """The records in the order the tasks were queued."""
        return list(self._records.values())

    def __getitem__(self, task_id: int) -> TaskRecord:
        return self._records[task_id]

    @property
    def makespan(self) -> float:
        """Seconds from the first task queued to the last task ended (0 if none ended)."""
        ends = [r.ended for r in self._records.values() if r.ended is not None]
        if not ends:
            return 0.0
        return max(ends) - min(r.queued for r in self._records.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (values as truncated ``repr``)."""
        rows = []
        for r in self._records.values():
            row = {k: getattr(r, k) for k in TaskRecord.__slots__ if k != "value"}  # type: ignore[attr-defined]
            row["value"] = _short_repr(r.value)
            rows.append(row)
        return {"makespan": self.makespan, "records": rows}

    def plot(self, path: str | Path | None = None) -> Figure:
        """A Gantt timeline: one row per task, waiting time light, running time coloured
        (green ok, red failed). Saved to ``path`` when given (format from its suffix).
        """
        from matplotlib.figure import Figure  # no pyplot: no GUI backend, safe in threads

        records = self.records
        fig = Figure(figsize=(8, min(30.0, max(2.0, 0.3 * len(records) + 1))))
        ax = fig.add_subplot()
        for row, r in enumerate(records):
            start = r.started if r.started is not None else r.ended
            if start is not None and start > r.queued:
                ax.barh(row, start - r.queued, left=r.queued, color="#dddddd")
            if r.started is not None and r.ended is not None:
                color = "#4caf50" if r.ok else "#e53935"
                ax.barh(row, max(r.ended - r.started, 1e-4), left=r.started, color=color)
        if len(records) <= 80:  # beyond that the labels would overlap
            ax.set_yticks(range(len(records)), [f"{r.task_id}. {r.tool}" for r in records])
        else:
            ax.set_ylabel("tasks, in arrival order")
        ax.invert_yaxis()
        ax.set_xlabel("seconds")
        ax.set_title(f"ragloom run: {len(records)} tasks, makespan {self.makespan:.3f} s")
        fig.tight_layout()
        if path is not None:
            fig.savefig(path)
        return fig


def _short_repr(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"
