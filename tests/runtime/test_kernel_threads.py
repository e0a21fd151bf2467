"""ragloom's thread pool for its CPU kernels (``runtime/layers/parallel.h``): every split job
gives the single-thread result, from any number of calling threads at once, and a forked child
(which has none of its parent's pool threads) runs kernels on threads of its own instead of
waiting forever for the parent's.
"""

from __future__ import annotations

import multiprocessing
import threading

import pytest
import torch

from ragloom.runtime.layers.gguf_linear import pack_panels, reference_linear
from ragloom.runtime.layers.kernels import available_kernels


def gguf():
    found = available_kernels()
    assert found is not None  # CI runs on AVX2 machines with g++: no silent fallback there
    return found.ragloom_gguf


def weights(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes and scales in the kernel's panel layout, and 64 rows of x."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(-16, 16, (1024, 256), dtype=torch.int8, generator=gen)
    scale = torch.rand(1024, 8, generator=gen)
    return pack_panels(q), pack_panels(scale), torch.randn(64, 256, generator=gen)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_split_jobs_equal_the_single_thread_result(two_threads):
    q, scale, x = weights()
    for rows in (1, 3, 8, 64):
        torch.set_num_threads(1)
        alone = gguf().grouped_linear(x[:rows], q, scale, torch.empty(0))
        torch.set_num_threads(2)
        split = gguf().grouped_linear(x[:rows], q, scale, torch.empty(0))
        # each output comes from one thread, whole: the split changes no number
        assert torch.equal(split, alone)
    gen = torch.Generator().manual_seed(0)  # (the same draws, row by row)
    q_rows = torch.randint(-16, 16, (1024, 256), dtype=torch.int8, generator=gen)
    want = reference_linear(x, q_rows, torch.rand(1024, 8, generator=gen), None)
    torch.testing.assert_close(split, want, rtol=1e-4, atol=1e-4)


def test_many_calling_threads_at_once(two_threads):
    # one job holds the pool at a time; the others run on their callers: all must be right
    q, scale, x = weights(1)
    torch.set_num_threads(1)
    want = gguf().grouped_linear(x, q, scale, torch.empty(0))
    wrong: list[int] = []
    errors: list[BaseException] = []

    def hammer(index: int) -> None:
        try:
            torch.set_num_threads(2)
            for _ in range(200):
                if not torch.equal(gguf().grouped_linear(x, q, scale, torch.empty(0)), want):
                    wrong.append(index)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a kernel call never returned"
    assert not errors and not wrong


def _child(conn, inputs: tuple[torch.Tensor, ...], want: torch.Tensor) -> None:
    # runs in the forked child, on the parent's tensors (making them here would run torch's
    # own parallel ops, whose OpenMP team does not survive a fork)
    torch.set_num_threads(2)
    threads = torch.get_num_threads()
    q, scale, x = inputs
    got = gguf().grouped_linear(x, q, scale, torch.empty(0))
    # torch's own OpenMP team does not survive a fork (a parallel torch op would hang here,
    # which is torch's limit, not the kernels'): compare on one thread
    torch.set_num_threads(1)
    conn.send((threads, bool(torch.equal(got, want))))


def test_a_forked_child_makes_its_own_pool(two_threads):
    q, scale, x = weights(2)
    want = gguf().grouped_linear(x, q, scale, torch.empty(0))  # the parent's pool runs now
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_child, args=(child, (q, scale, x), want))
    process.start()
    process.join(timeout=60)
    if process.is_alive():
        process.kill()
        pytest.fail("a kernel call in a forked child never returned")
    assert process.exitcode == 0
    assert parent.poll()
    threads, equal = parent.recv()
    assert threads == 2 and equal  # (two threads: the child's job was split, on its own pool)
