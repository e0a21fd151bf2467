"""The event loops ragloom starts itself (``ragloom.run_sync``): uvloop's where installed,
the standard loop on request or without it, and a clear error for a bad setting."""

from __future__ import annotations

import asyncio
import sys
import threading
import warnings

import pytest

from ragloom import ConfigError, run_sync
from ragloom._sync import LOOP_ENV, event_loop_factory

uvloop = pytest.importorskip("uvloop")


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_runs_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOOP_ENV, raising=False)
    assert run_sync(loop_module()).startswith("uvloop")


def test_asyncio_setting_runs_on_the_standard_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOOP_ENV, "asyncio")
    assert run_sync(loop_module()).startswith("asyncio")


def test_without_uvloop_auto_falls_back_and_uvloop_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    monkeypatch.setenv(LOOP_ENV, "auto")
    assert run_sync(loop_module()).startswith("asyncio")
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        event_loop_factory("uvloop")


def test_unknown_setting_names_the_variable_and_leaves_no_unawaited_coroutine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(LOOP_ENV, "tokio")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a "never awaited" RuntimeWarning would fail here
        with pytest.raises(ConfigError, match=f"{LOOP_ENV} must be one of .*'tokio'"):
            run_sync(loop_module())


async def test_inside_a_running_loop_it_runs_in_another_thread() -> None:
    outer = threading.get_ident()

    async def where() -> tuple[int, str]:
        return threading.get_ident(), await loop_module()

    thread, module = run_sync(where())
    assert thread != outer and module.startswith("uvloop")


def test_errors_propagate() -> None:
    async def boom() -> None:
        raise KeyError("lost")

    with pytest.raises(KeyError, match="lost"):
        run_sync(boom())
