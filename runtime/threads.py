"""How many CPU threads a local backend should use: the cores this process may run on, less
those other processes keep busy right now.

Used by the torch engine (``EngineConfig(num_threads=None)``); imports nothing heavy.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["default_num_threads"]


def default_num_threads(window_s: float = 0.1) -> int:
    """Threads for this machine: its cores, less those other processes keep busy now.

    subtle: work split over threads waits for its slowest thread; on a shared CPU a
    descheduled thread makes every small op of a decode step 10x slower, so busy cores are left
    alone. Busy is measured, not guessed from the 1-minute load average, which counts this
    process's own recent work (loading the model just before): the cores' busy time in
    ``/proc/stat`` over ``window_s`` (steal time included: the hypervisor has the core), less
    this process's own CPU time in it. The load average stands in where ``/proc`` is missing.
    """
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    cores = len(cpus) or os.cpu_count() or 1
    others = _others_busy(cpus, cores, window_s)
    if others is None:  # no /proc: the load average (which counts this process's work too)
        return max(1, cores - int(os.getloadavg()[0]))
    return max(1, cores - int(others + 0.5))


def _others_busy(cpus: list[int], cores: int, window_s: float) -> float | None:
    """Cores' worth of other processes' work on ``cpus`` over ``window_s``; None without /proc."""
    before, own_before = _cpu_ticks(cpus), _own_ticks()
    if before is None or own_before is None:
        return None
    time.sleep(window_s)
    after, own_after = _cpu_ticks(cpus), _own_ticks()
    if after is None or own_after is None or after[1] <= before[1]:
        return None
    busy = after[0] - before[0] - (own_after - own_before)
    return max(0.0, busy / (after[1] - before[1]) * cores)


def _cpu_ticks(cpus: list[int]) -> tuple[int, int] | None:
    """(busy, total) clock ticks of ``cpus`` so far, from ``/proc/stat``; None if unreadable."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    wanted = set(cpus)
    busy = total = 0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in wanted:
            continue
        # user nice system idle iowait irq softirq steal (guest time is inside user)
        ticks = [int(f) for f in fields[:8]]
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]
    return (busy, total) if total else None


def _own_ticks() -> int | None:
    """This process's CPU time so far (user + system, all threads), in clock ticks."""
    try:
        stat = Path("/proc/self/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # (the name in parentheses may hold spaces)
    return int(fields[11]) + int(fields[12])
