"""`peft-advisor monitor` and the launcher's pure parts, with canned events (no torch here)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from peft_advisor import launch
from peft_advisor.cli import main
from peft_advisor.core.errors import ExitCode


def test_build_argv_is_an_argument_list():
    assert launch.build_argv("r.toml", "runs/x") == [
        sys.executable, "-m", "peft_advisor.train", "r.toml", "--run-dir", "runs/x"
    ]
    assert launch.build_argv("r.toml", "runs/x", resume=True)[-1] == "--resume"


def write_run(run_dir, end: dict | None, steps: int = 4, pid: int = 0):
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"pid": pid, "argv": [], "started": 0}))
    events = [{"v": 1, "kind": "start", "t": 100.0, "method": "lora", "model": "demo", "trainable_params": 1000,
               "total_params": 100000, "total_steps": steps, "device": "cpu", "estimate_peak_bytes": 2**30}]
    for step in range(1, steps + 1):
        events.append({"v": 1, "kind": "step", "t": 100.0 + step, "step": step, "loss": 2.0 / step, "lr": 1e-4,
                       "tokens_per_s": 500.0})
    events.append({"v": 1, "kind": "eval", "t": 110.0, "step": steps, "eval_loss": 0.5, "eval_accuracy": 0.25})
    if end:
        events.append({"v": 1, "kind": "end", "t": 111.0, **end})
    text = "".join(json.dumps(e) + "\n" for e in events)
    (run_dir / "events.jsonl").write_text(text + '{"v":1,"kind":"step","t":1')  # a partial last line
    (run_dir / "train.log").write_text("loading\nTraceback: boom\n")


@pytest.mark.parametrize(
    "status, code", [("ok", 0), ("cancelled", 130), ("oom", ExitCode.OOM), ("error", ExitCode.TRAIN_FAILED)]
)
def test_monitor_a_finished_run(status, code, tmp_path, capsys):
    write_run(tmp_path / "run", {"status": status, "final_loss": 0.5, "wall_s": 75.0,
                                 **({"message": "it broke"} if status != "ok" else {})})
    assert main(["monitor", str(tmp_path / "run")]) == code
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "start  lora on demo (cpu): 1.00 k trainable of 100.00 k params, 4 steps; estimate peak 1.00 GiB"
    assert out[1].startswith("step     1/4  [#####...............]   25%  loss 2.0000  lr 1.00e-04  500 tok/s")
    assert out[4].startswith("step     4/4  [####################]  100%  loss 0.5000")
    assert out[5] == "eval   step 4  eval_loss 0.5000  accuracy 25.0%"
    assert out[6].startswith(f"end    {status}") and "wall 1m15s" in out[6]
    assert len(out) == 7


def test_monitor_a_trainer_that_died_without_end(tmp_path, capsys):
    write_run(tmp_path / "run", None, pid=2**22 + 12345)  # no such process
    assert main(["monitor", str(tmp_path / "run")]) == ExitCode.TRAIN_FAILED
    err = capsys.readouterr().err
    assert "without an end event" in err and "Traceback: boom" in err


def test_monitor_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["monitor", str(tmp_path / "nope")]) == ExitCode.USAGE
    assert main(["monitor", str(tmp_path)]) == ExitCode.USAGE


def test_monitor_drops_fields_of_the_wrong_type(tmp_path, capsys):
    """A hand-edited or foreign events file: wrong-typed values are left out, the line still shows."""
    write_run(tmp_path / "run", {"status": "ok"})
    with open(tmp_path / "run" / "events.jsonl", "a") as f:
        f.write("\n" + json.dumps({"v": 1, "kind": "step", "t": 120.0, "step": 5, "loss": "low", "tokens_per_s": [1],
                                   "mem_peak_bytes": "big", "mem_peak_bytes_by_rank": [1, "x"]}) + "\n")
        f.write(json.dumps({"v": 1, "kind": "checkpoint", "t": 121.0, "path": "checkpoint-5", "adapter_bytes": "big"})
                + "\n")
        f.write(json.dumps({"v": 1, "kind": "eval", "t": 122.0, "step": 5, "eval_loss": 0.4, "eval_accuracy": 5}) + "\n")
    assert main(["monitor", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert any(line.startswith("step     5/4") and "loss —" in line for line in captured.out.splitlines())
    assert "saved  checkpoint-5 (" in captured.out
    assert "eval   step 5  eval_loss 0.4000\n" in captured.out  # an accuracy of 500 % is no accuracy


def test_monitor_bad_poll_and_unreadable_events_are_one_line(tmp_path, capsys):
    write_run(tmp_path / "run", {"status": "ok"})
    for poll in ("-1", "nan", "inf", "0"):
        assert main(["monitor", str(tmp_path / "run"), "--poll", poll]) == ExitCode.USAGE
    (tmp_path / "run" / "events.jsonl").unlink()
    (tmp_path / "run" / "events.jsonl").mkdir()  # unreadable as a file, whoever runs the test (root too)
    assert main(["monitor", str(tmp_path / "run")]) == ExitCode.USAGE
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("peft-advisor: cannot read ") and err[-1].endswith("events.jsonl: Is a directory")
    assert all("--poll must be" in line for line in err[:4])


def test_monitor_a_dead_trainer_with_no_log_says_so(tmp_path, capsys):
    write_run(tmp_path / "run", None, pid=2**22 + 12345)
    (tmp_path / "run" / "train.log").unlink()
    assert main(["monitor", str(tmp_path / "run")]) == ExitCode.TRAIN_FAILED
    assert "without an end event; train.log is empty or missing" in capsys.readouterr().err


WRITER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    run = Path(sys.argv[1])
    def emit(**e):
        with open(run / "events.jsonl", "a") as f:
            f.write(json.dumps({"v": 1, "t": time.time(), **e}) + "\\n")
    emit(kind="start", method="lora", model="m", total_steps=3, device="cpu")
    for s in (1, 2, 3):
        time.sleep(0.3)
        emit(kind="step", step=s, loss=1.0 / s, lr=1e-4)
    emit(kind="end", status="ok", final_loss=0.33)
    """
)


def test_monitor_follows_a_live_run(tmp_path):
    """A writer whose command line names peft_advisor.train counts as a live trainer."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(run_dir), "peft_advisor.train"])
    (run_dir / "run.json").write_text(json.dumps({"pid": writer.pid}))
    try:
        done = subprocess.run([sys.executable, "-m", "peft_advisor", "monitor", str(run_dir), "--poll", "0.05"],
                              capture_output=True, text=True, timeout=60)
    finally:
        writer.wait(timeout=30)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in lines] == ["start", "step", "step", "step", "end"]


def test_parent_cli_never_imports_torch():
    code = (
        "import sys, peft_advisor.cli as c, peft_advisor.cli.runs_cmd, peft_advisor.launch; c.build_parser();"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'datasets') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


@pytest.mark.parametrize("pid", [-1, 0, True, 2**64, "123", 1.5])
def test_a_pid_that_is_not_a_process_id_is_never_signalled(pid, tmp_path, monkeypatch):
    """run.json is a file anyone can edit: os.kill(-1, ...) would signal every process we may."""
    import os

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"pid": pid}))
    sent = []
    monkeypatch.setattr(os, "kill", lambda *a: sent.append(a))
    assert not launch.trainer_alive(pid) and not launch.stop(run)
    assert sent == []
