"""Fixtures for the terminal UI tests: canned run folders in a fresh working directory, a
launcher that runs the fake trainer, and no cursor blink (so snapshots are stable)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tui_support.py, beside this file
from tui_support import FIXTURES, FakeLauncher  # noqa: E402


@pytest.fixture(autouse=True)
def no_cursor_blink(monkeypatch):
    """A blinking cursor makes screenshots differ from run to run (harlequin does the same)."""
    monkeypatch.setattr("textual.widgets._input.Input._toggle_cursor", lambda self: None)


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """No calibration records from this machine's real runs may change the tables under test."""
    monkeypatch.setenv("PEFT_ADVISOR_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh folder with the canned runs under runs/ and the H200 bench in bench-h200/ (outside
    runs/, so the runs list stays three rows), as the current directory."""
    shutil.copytree(FIXTURES / "runs", tmp_path / "runs")
    shutil.copytree(FIXTURES / "bench", tmp_path / "bench-h200")
    # Fixed, distinct times: the runs list is newest first, and a checkout's times are arbitrary.
    for i, name in enumerate(("demo-vera", "demo-dora", "demo-lora")):
        for path in (tmp_path / "runs" / name).iterdir():
            os.utime(path, (1_760_000_000 + i * 3600,) * 2)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def launcher():
    fake = FakeLauncher("--steps", "30", "--interval", "0.05")
    yield fake
    fake.cleanup()
