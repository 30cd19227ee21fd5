"""Small pieces of the UI without an app: following a log across the launcher's rename, the
import hygiene of the UI process, and the run list read from disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from peft_advisor.tui.run_index import scan_runs
from peft_advisor.core.tail import LineTail


def test_text_tail_buffers_partial_lines_and_follows_a_renamed_file(tmp_path):
    staging, final = tmp_path / ".run.starting", tmp_path / "run"
    staging.mkdir()
    log = staging / "train.log"
    tail = LineTail(final / "train.log", log, strict=False)
    assert tail.poll() == []  # nothing yet
    log.write_text("loading model\npartial")
    assert tail.poll() == ["loading model"]
    os.rename(staging, final)  # the trainer moves its staging folder into place
    with open(final / "train.log", "a") as f:
        f.write(" line\nstep 1\n")
    assert tail.poll() == ["partial line", "step 1"]  # same file: nothing re-read, nothing lost
    assert tail.poll() == []


def test_text_tail_reads_only_the_end_of_a_long_log(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("".join(f"line {i}\n" for i in range(10_000)))
    lines = LineTail(log, start_bytes=1000).poll()
    assert lines[-1] == "line 9999" and len(lines) < 200 and lines[0].startswith("line ")


def test_the_ui_does_not_import_the_training_stack():
    code = ("import sys, peft_advisor.tui.app, peft_advisor.tui.screens.advisor, peft_advisor.tui.screens.recipe,"
            " peft_advisor.tui.screens.monitor, peft_advisor.tui.screens.runs, peft_advisor.tui.launching;"
            " print([m for m in ('torch', 'transformers', 'peft', 'datasets') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_scan_runs_reads_status_figures_and_survives_junk(workdir):
    (workdir / "runs" / "not-a-run").mkdir()
    (workdir / "runs" / "empty").mkdir()
    (workdir / "runs" / "empty" / "run.json").write_text("{broken")
    runs = {r.path.name: r for r in scan_runs(Path("runs"))}
    assert set(runs) == {"demo-lora", "demo-dora", "demo-vera", "empty"}
    assert runs["demo-lora"].status == "ok" and runs["demo-dora"].status == "cancelled"
    assert runs["demo-vera"].status == "died" and runs["empty"].status == "empty"
    assert runs["demo-lora"].summary.final_loss == 0.8206 and runs["demo-lora"].adapter_bytes == 19_545_000
    assert [r.path.name for r in scan_runs(Path("runs"))] == ["empty", "demo-lora", "demo-dora", "demo-vera"]  # newest first
