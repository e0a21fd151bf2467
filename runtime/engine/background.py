"""Drives an :class:`LLMEngine` from a daemon thread so that many callers share its batches.

Callers on any thread (or event loop) ``submit`` token ids with a *listener*; the thread steps
the engine while work is pending and calls each listener after every step that advanced its
sequence (``listener(seq, None)``), or with the exception if a step failed. ``abort`` cancels a
request and frees its blocks at the next step. The thread ends after ``IDLE_EXIT_S`` seconds
without work (so nothing keeps a dropped model alive) and the next ``submit`` starts another.
Text, templates and futures are the caller's business (:mod:`ragloom.runtime.torch_llm`).

At interpreter exit every running thread finishes its step and stops (``atexit``): a daemon
thread still inside one of torch's ops while Python finalises is stopped where it next takes
the GIL, which can abort the process ("terminate called without an active exception").
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Callable
from collections.abc import Sequence as Seq

from ragloom.runtime.engine.llm_engine import LLMEngine
from ragloom.runtime.engine.sequence import Sequence
from ragloom.runtime.llm import SamplingParams

__all__ = ["BackgroundEngine", "Listener"]

logger = logging.getLogger(__name__)
IDLE_EXIT_S = 2.0  # the thread ends after this long without work; the next submit restarts it
EXIT_WAIT_S = 10.0  # how long interpreter exit waits for a thread's step to end

Listener = Callable[[Sequence, BaseException | None], None]


class BackgroundEngine:
    """A stepping thread around an engine.

    Args:
        engine: the engine to drive (only this thread calls its ``step``).
    """

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._listeners: dict[int, tuple[Sequence, Listener]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        _RUNNING.add(self)

    def submit(
        self,
        token_ids: Seq[int],
        params: SamplingParams,
        listener: Listener,
        *,
        score_from: int | None = None,
    ) -> Sequence:
        """Queue a request (errors in its input raise here, in the caller's thread).

        Raises:
            RuntimeError: after :meth:`close`.
        """
        if self._closed:
            raise RuntimeError("this engine's stepping thread is closed (interpreter exit)")
        seq = self.engine.add_request(token_ids, params, score_from=score_from)
        with self._lock:
            self._listeners[seq.seq_id] = (seq, listener)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="ragloom-engine", daemon=True
                )
                self._thread.start()
        self._wake.set()
        return seq

    def close(self, timeout: float = EXIT_WAIT_S) -> None:
        """Stop the thread after its current step and wait up to ``timeout`` seconds for it
        (at interpreter exit; requests still running are left unfinished)."""
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def abort(self, seq: Sequence) -> None:
        """Cancel ``seq``; its listener hears of it after the next step."""
        self.engine.abort(seq)
        self._wake.set()

    def _loop(self) -> None:
        while not self._closed:
            if not self._wake.wait(timeout=IDLE_EXIT_S):
                with self._lock:  # idle: end the thread, so a dropped LLM can be collected
                    if not self.engine.has_work() and not self._wake.is_set():
                        self._thread = None
                        return
                continue
            self._wake.clear()
            while self.engine.has_work() and not self._closed:
                try:
                    changed = self.engine.step()
                except BaseException as exc:  # handed to every waiting caller
                    self._fail_all(exc)
                    continue
                for seq in changed:
                    self._notify(seq, None)
        with self._lock:  # (closed)
            self._thread = None

    def _notify(self, seq: Sequence, error: BaseException | None) -> None:
        with self._lock:
            entry = self._listeners.get(seq.seq_id)
            if entry and (seq.is_finished or error is not None):
                del self._listeners[seq.seq_id]
        if entry:
            try:
                entry[1](seq, error)
            except Exception:  # a caller that went away (closed event loop) must not stop us
                logger.exception("listener of sequence %d failed", seq.seq_id)

    def _fail_all(self, exc: BaseException) -> None:
        with self._lock:
            entries = list(self._listeners.values())
        for seq, _ in entries:
            if not seq.is_finished:
                self.engine.cancel_now(seq)
            self._notify(seq, exc)


_RUNNING: weakref.WeakSet[BackgroundEngine] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for engine in list(_RUNNING):
        engine.close()
