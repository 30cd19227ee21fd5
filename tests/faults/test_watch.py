"""Faults in following a run (issue 12): a run larger than one read, a line too long to hold, a
FIFO where events.jsonl should be, a resumed file, odd figures and flags. Each test failed
before its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest

from peft_advisor.cli import main
from peft_advisor.core import events as ev
from peft_advisor.core.errors import ExitCode

TESTS = Path(__file__).resolve().parents[1]
DEAD_PID = 2**22 + 12345  # no such process


def line(kind: str, t: float, **fields) -> str:
    return json.dumps({"v": 1, "kind": kind, "t": t, **fields}) + "\n"


def dead_run(run_dir: Path, body: str, log: str = "loading\n") -> Path:
    """A run folder whose trainer is gone, holding `body` as its events."""
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"pid": DEAD_PID}))
    (run_dir / "events.jsonl").write_text(body)
    (run_dir / "train.log").write_text(log)
    return run_dir


def start(total: int) -> str:
    return line("start", 100.0, method="lora", model="demo", total_steps=total, device="cpu")


# ---------------------------------------------------------------- figures and flags


def test_a_negative_wall_time_is_unknown_not_minus_two_hours(tmp_path, capsys):
    from peft_advisor.tui.run_text import fmt_duration

    run = dead_run(tmp_path / "run", start(1) + line("end", 101.0, status="ok", wall_s=-7140.0))
    assert main(["monitor", str(run)]) == 0
    end = capsys.readouterr().out.splitlines()[-1]
    assert "wall ?" in end and "-1h" not in end
    assert fmt_duration(-7140.0) == "—" and fmt_duration(0.4) == "0s"


def test_poll_zero_says_what_is_allowed(tmp_path, capsys):
    run = dead_run(tmp_path / "run", start(1))
    assert main(["monitor", str(run), "--poll", "0"]) == ExitCode.USAGE
    assert capsys.readouterr().err == (
        "peft-advisor: --poll must be more than 0 and at most 3600 seconds, got 0\n")
