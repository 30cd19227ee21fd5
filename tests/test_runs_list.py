"""`peft-advisor runs [FOLDER] [--json]` through the console (item 7 of issue 14), on the recorded
run folders in tests/fixtures/runs: one finished, one cancelled, one whose trainer died."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from peft_advisor.core.errors import ExitCode

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "runs"


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}  # this tree's package from any cwd
    return subprocess.run([sys.executable, "-m", "peft_advisor", "runs", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=60)


@pytest.fixture
def runs(tmp_path) -> Path:
    """The fixtures copied, aged so the order is known (lora newest), with a folder that is no run."""
    root = tmp_path / "runs"
    shutil.copytree(FIXTURES, root)
    for age_s, name in enumerate(("demo-lora", "demo-dora", "demo-vera")):
        for f in (root / name).iterdir():
            os.utime(f, (1e9 - age_s * 100, 1e9 - age_s * 100))
    (root / "notes").mkdir()
    (root / "adapter_model.safetensors").write_bytes(b"x" * 100)
    (root / "demo-lora" / "adapter_model.safetensors").write_bytes(b"x" * 2_500_000)
    return root


def test_the_table_newest_first(runs):
    proc = cli(runs)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["run", "method", "status", "steps", "loss", "best", "eval", "accuracy",
                                "peak", "/", "estimate", "adapter"]
    assert set(lines[1]) == {"-"}
    assert [line.split()[:3] for line in lines[2:]] == [
        ["demo-lora", "lora", "ok"], ["demo-dora", "dora", "cancelled"], ["demo-vera", "vera", "died"]]
    assert lines[2].split()[3:] == ["60/60", "0.8206", "0.9206", "60.0%", "2.85", "GiB", "/", "3.00", "GiB", "2.5", "MB"]
    assert "1.8337" in lines[4]  # a run that died mid-way: its best eval so far
    assert proc.stderr == ""


def test_json(runs):
    proc = cli(runs, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["name"] for r in rows] == ["demo-lora", "demo-dora", "demo-vera"]
    lora = rows[0]
    assert {k: lora[k] for k in ("method", "model", "status", "step", "total_steps", "last_loss", "best_eval_loss",
                                 "eval_accuracy", "peak_bytes", "estimate_peak_bytes", "adapter_bytes", "wall_s")} == {
        "method": "lora", "model": "demo", "status": "ok", "step": 60, "total_steps": 60, "last_loss": 0.8206,
        "best_eval_loss": 0.9206, "eval_accuracy": 0.6, "peak_bytes": 3060164198,
        "estimate_peak_bytes": 3221225472, "adapter_bytes": 2_500_000, "wall_s": 124.0}
    assert rows[1]["adapter_bytes"] == 19545000  # no final adapter: the last checkpoint's


def test_one_run_folder_lists_itself(runs):
    rows = json.loads(cli(runs / "demo-dora", "--json").stdout)
    assert [r["name"] for r in rows] == ["demo-dora"]


def test_default_folder_is_runs_and_may_be_absent(runs, tmp_path):
    proc = cli(cwd=tmp_path)  # tmp_path/runs: the fixtures
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 5
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    proc = cli(cwd=empty)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "peft-advisor: no run folders under runs\n")
    assert json.loads(cli("--json", cwd=empty).stdout) == []


def test_a_folder_that_is_not_there_is_one_line(tmp_path):
    proc = cli(tmp_path / "nope")
    assert proc.returncode == ExitCode.USAGE
    assert proc.stderr == f"peft-advisor: {tmp_path / 'nope'}: no such folder\n" and proc.stdout == ""
