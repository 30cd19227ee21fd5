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


# ---------------------------------------------------------------- reading to the end


def test_monitor_reads_a_run_larger_than_two_reads_to_its_end(tmp_path, capsys):
    """It read 8 MiB, found the trainer gone, read 8 MiB more and said it died without an end."""
    steps, pad = 4500, "x" * 4000  # 18 MB
    body = start(steps) + "".join(line("step", 100.0 + s, step=s, loss=1.0, pad=pad) for s in range(1, steps + 1))
    run = dead_run(tmp_path / "run", body + line("end", 9000.0, status="ok", wall_s=60.0))
    assert main(["monitor", str(run), "--poll", "0.01"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert sum(text.startswith("step ") for text in out) == steps
    assert out[-1].startswith("end    ok")


def test_one_huge_line_neither_hides_the_end_nor_fills_memory(tmp_path, capsys):
    """A 20 MB line (a tensor dumped into the file) is skipped as it streams past and said once."""
    huge = '{"v":1,"kind":"step","t":1,"pad":"' + "y" * 20_000_000 + '"}\n'
    body = start(2) + line("step", 101.0, step=1, loss=1.0) + huge + line("step", 102.0, step=2, loss=0.5)
    run = dead_run(tmp_path / "run", body + line("end", 103.0, status="ok"))
    del huge, body
    tracemalloc.start()
    try:
        code = main(["monitor", str(run), "--poll", "0.01"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    captured = capsys.readouterr()
    assert code == 0 and captured.out.splitlines()[-1].startswith("end    ok")
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert captured.err.count("over-long") == 1
    assert "peft-advisor: 1 over-long line skipped" in captured.err


def test_line_buffer_drops_a_line_over_the_ceiling_across_chunks():
    buf = ev.LineBuffer(max_line_bytes=10)
    got = []
    for chunk in (b'{"a":1}\n{"long', b"x" * 50, b"x" * 50, b'"}\n{"b":2}\n', b"0123456789AB\n"):
        got += buf.feed(chunk)
        assert len(buf.pending) <= 10  # never held whole
    assert got == ['{"a":1}', '{"b":2}'] and buf.overlong == 2
    buf.feed(b"z" * 20)
    assert buf.flush() == [] and buf.overlong == 3


def test_a_resumed_runs_events_start_after_the_offset(tmp_path):
    """`train --resume` follows from the bytes the earlier run wrote; the first poll read from 0."""
    path = tmp_path / "events.jsonl"
    earlier = start(4) + line("step", 101.0, step=1) + line("end", 102.0, status="cancelled")
    path.write_text(earlier + start(4) + line("step", 110.0, step=2))
    tail = ev.EventTail(path)
    tail.offset = len(earlier.encode())
    assert [e["kind"] for e in tail.poll()] == ["start", "step"]


# ---------------------------------------------------------------- the watcher judges after draining


def test_the_watcher_judges_only_once_the_files_are_drained(tmp_path):
    from peft_advisor.core.watch import RunWatcher

    body = start(50) + "".join(line("step", 100.0 + s, step=s) for s in range(1, 51))
    run = dead_run(tmp_path / "run", body + line("end", 200.0, status="oom"))
    watcher = RunWatcher(run)
    watcher.events.max_bytes_per_poll = 256
    batches = []
    while not batches or batches[-1].outcome is None:
        batches.append(watcher.poll())
        assert len(batches) < 1000
    assert all(b.outcome is None and b.more for b in batches[:-1]) and len(batches) > 10
    outcome = batches[-1].outcome
    assert (outcome.status, outcome.exit_code) == ("oom", ExitCode.OOM)
    assert sum(len(b.events) for b in batches) == 52


def test_an_end_followed_by_a_resume_is_not_the_end(tmp_path):
    from peft_advisor.core.watch import RunWatcher

    body = start(4) + line("step", 101.0, step=1) + line("end", 102.0, status="cancelled")
    run = dead_run(tmp_path / "run", body + start(4) + line("step", 110.0, step=2), log="x\nTraceback: boom\n")
    watcher = RunWatcher(run)
    watcher.events.max_bytes_per_poll = len(body.encode())  # the first read stops right after the `end`
    outcome = watcher.poll().outcome or watcher.poll().outcome
    assert outcome.died and outcome.exit_code == ExitCode.TRAIN_FAILED
    assert outcome.message == "the trainer is gone without an end event"
    assert outcome.log_lines == ["x", "Traceback: boom"]


# ---------------------------------------------------------------- FIFOs


def test_a_fifo_events_file_is_refused_at_once(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"pid": DEAD_PID}))
    os.mkfifo(run / "events.jsonl")
    done = subprocess.run([sys.executable, "-m", "peft_advisor", "monitor", str(run)], capture_output=True,
                          text=True, timeout=60, cwd=TESTS.parent)
    assert done.returncode == ExitCode.USAGE
    assert done.stderr == f"peft-advisor: cannot read {run / 'events.jsonl'}: not a regular file\n"


def test_a_fifo_train_log_does_not_hang_the_watcher(tmp_path):
    from peft_advisor.core.watch import RunWatcher

    run = dead_run(tmp_path / "run", start(4))
    (run / "train.log").unlink()
    os.mkfifo(run / "train.log")
    result = []
    worker = threading.Thread(target=lambda: result.append(RunWatcher(run, log=True).poll()), daemon=True)
    worker.start()
    worker.join(20)
    assert result and result[0].outcome.died and result[0].outcome.log_lines == []


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


# ---------------------------------------------------------------- one idea of a run folder


def test_the_runs_list_and_monitor_agree_on_what_a_run_folder_is(tmp_path, capsys):
    """The runs list took a folder holding only recipe.toml for a run; `monitor` refuses it."""
    from peft_advisor.tui.run_index import scan_runs

    (tmp_path / "recipes-only").mkdir()
    (tmp_path / "recipes-only" / "recipe.toml").write_text("version = 1\n")
    dead_run(tmp_path / "real", start(1))
    assert [r.path.name for r in scan_runs(tmp_path)] == ["real"]
    assert main(["monitor", str(tmp_path / "recipes-only")]) == ExitCode.USAGE
    assert "not a run folder" in capsys.readouterr().err


def test_bench_force_removes_run_folders_only(tmp_path, monkeypatch, capsys):
    """bench counted a folder holding only train.log as a run, and --force deleted it."""
    from peft_advisor import launch

    def fake_argv(recipe_path, run_dir, resume=False, dist=None, port=None):
        return [sys.executable, str(TESTS / "fixtures" / "fake_trainer.py"), str(recipe_path), "--run-dir",
                str(run_dir), "--label", "peft_advisor.train", "--steps", "2", "--interval", "0.01", "--eval-every", "0"]

    monkeypatch.setattr(launch, "build_argv", fake_argv)
    monkeypatch.setenv("PEFT_ADVISOR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "bench"
    (out / "lora").mkdir(parents=True)
    (out / "lora" / "train.log").write_text("mine\n")
    (out / "bench.json").write_text("{}")
    recipe = TESTS.parent / "recipes" / "demo" / "lora.toml"
    argv = ["bench", str(recipe), "--methods", "lora", "--steps", "2", "--out", str(out), "--force"]
    assert main(argv) == ExitCode.EXISTS
    assert (out / "lora" / "train.log").read_text() == "mine\n"
    assert "is not a run folder; not removing it" in capsys.readouterr().err
    (out / "lora" / "train.log").unlink()
    (out / "lora" / "run.json").write_text("{}")  # a run folder: replaced
    assert main(argv) == 0 and (out / "lora" / "events.jsonl").is_file()


# ---------------------------------------------------------------- the app's monitor


@pytest.fixture
def tui(tmp_path, monkeypatch):
    sys.path.insert(0, str(TESTS / "tui"))
    monkeypatch.setenv("PEFT_ADVISOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    import tui_support

    return tui_support


async def test_the_app_monitor_refuses_a_fifo_events_file(tui, tmp_path):
    run = tmp_path / "runs" / "fifo"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"pid": DEAD_PID}))
    os.mkfifo(run / "events.jsonl")
    app = tui.make_app(monitor="runs/fifo")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await tui.wait_until(pilot, lambda: screen.exit_note is not None, timeout=10)
        assert screen.exit_note == "cannot read events.jsonl: not a regular file"


async def test_the_app_monitor_reads_a_large_finished_run_to_its_end(tui, tmp_path):
    steps, pad = 2200, "x" * 8000  # 17.6 MB: more than the two 8 MiB reads it made
    body = start(steps) + "".join(line("step", 100.0 + s, step=s, loss=1.0, pad=pad) for s in range(1, steps + 1))
    dead_run(tmp_path / "runs" / "big", body + line("end", 9000.0, status="ok", wall_s=60.0))
    app = tui.make_app(monitor="runs/big")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await tui.wait_until(pilot, lambda: screen.view.done or screen.exit_note is not None, timeout=60)
        assert screen.exit_note is None and screen.view.status == "ok" and screen.view.step == steps
