"""Shared fixtures for the evals tests: every judge cache lives in a temp folder."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGLOOM_CACHE_DIR", str(tmp_path / "cache"))
