"""The local backends' default thread count (torch engine, llama.cpp): the cores this process
may use, less the ones other processes keep busy, measured over a short window (``/proc/stat``)
with this process's own work left out; the load average where ``/proc`` cannot be read.
"""

from __future__ import annotations

import os

import pytest

from ragloom.runtime import threads as threads_module
from ragloom.runtime.threads import default_num_threads

needs_affinity = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity"), reason="needs sched_getaffinity"
)


def fake_proc(monkeypatch, cpu: list[tuple[int, int]], own: list[int], cores: int = 4) -> None:
    """/proc readings: (busy, total) of the cores and this process's ticks, before and after."""
    cpu_reads, own_reads = iter(cpu), iter(own)
    monkeypatch.setattr(threads_module.os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(threads_module, "_cpu_ticks", lambda cpus: next(cpu_reads))
    monkeypatch.setattr(threads_module, "_own_ticks", lambda: next(own_reads))
    monkeypatch.setattr(threads_module.time, "sleep", lambda s: None)
    monkeypatch.setattr(threads_module.os, "getloadavg", lambda: (3.0, 3.0, 3.0))


@needs_affinity
@pytest.mark.parametrize(
    ("busy_ticks", "own_ticks", "threads"),
    [
        (0, 0, 4),  # idle machine: every core
        (20, 0, 3),  # another process keeps one of four cores busy (80 ticks in all)
        (20, 20, 4),  # the busy core is this process's own work: not held against it
        (45, 5, 2),  # two cores' worth of others
        (80, 0, 1),  # all busy: still one thread
        (9, 0, 4),  # less than half a core: noise, not a busy core
    ],
)
def test_threads_leave_out_cores_other_processes_use(monkeypatch, busy_ticks, own_ticks, threads):
    fake_proc(monkeypatch, cpu=[(100, 1000), (100 + busy_ticks, 1080)], own=[7, 7 + own_ticks])
    assert default_num_threads() == threads  # (the load average of 3 is not consulted)


@needs_affinity
def test_without_proc_the_load_average_decides(monkeypatch):
    fake_proc(monkeypatch, cpu=[None, None], own=[None, None])
    assert default_num_threads() == 1  # 4 cores - int(3.0)


def test_the_real_machine_gives_a_usable_count():
    threads = default_num_threads(window_s=0.05)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert 1 <= threads <= (cores or 1)
