"""The trainer as a real child process: `peft-advisor train` end to end, Ctrl-C (SIGINT) saving a
checkpoint and ending `cancelled`, resuming to the same result as an uninterrupted run, and bad
input giving one line and no run folder."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from peft_advisor import launch
from peft_advisor.core.errors import ExitCode
from peft_advisor.core.events import read_events


def cli(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "peft_advisor", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=timeout,
    )


def wait_for_event(run_dir, matches, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events, _ = read_events(run_dir / "events.jsonl")
        if any(matches(e) for e in events):
            return
        time.sleep(0.02)
    raise AssertionError(f"no such event within {timeout_s} s")


def wait_for_step(run_dir, step: int, timeout_s: float = 120) -> None:
    wait_for_event(run_dir, lambda e: e["kind"] == "step" and e["step"] >= step, timeout_s)


def test_train_cli_runs_and_monitor_replays_it(make_recipe, tmp_path):
    recipe = make_recipe("lora", **{"train.max_steps": 3, "train.save_every": 0, "train.eval_every": 0})
    run_dir = tmp_path / "run"
    done = cli("train", recipe, "--run-dir", run_dir)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("start  lora")
    assert sum(line.startswith("step ") for line in lines) == 3
    assert "[####################]  100%" in [l for l in lines if l.startswith("step ")][-1]
    assert lines[-1].startswith("end    ok")
    for name in ("train.log", "events.jsonl", "recipe.toml", "run.json", "adapter_model.safetensors", "trainer_state.json"):
        assert (run_dir / name).is_file(), name
    log = (run_dir / "train.log").read_text()
    assert "peft-advisor: run ended ok" in log
    assert "is deprecated and will be removed in v6" not in log  # transformers' chatter (train/quiet.py)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left

    replay = cli("monitor", run_dir)  # a finished run: the same lines, at once
    assert replay.returncode == 0
    assert replay.stdout.splitlines() == lines


def test_sigint_checkpoints_cancels_and_resume_matches_a_straight_run(make_recipe, tmp_path):
    """The stop is sent once training is set up (the start event: the stop handler is attached
    then), not at a later step: the tiny model trains 20 steps in about 0.1 s, so a stop sent after
    step 3 was seen could land after the run had ended (it then died by the signal in its
    interpreter's shutdown, -2). From the start event to the end there are 200 steps (over 1 s)."""
    from peft_advisor.train.__main__ import main

    steps = 200
    changes = {"train.max_steps": steps, "train.save_every": 0, "train.eval_every": 0, "data.eval_split": 0,
               "train.log_every": 1}
    recipe = make_recipe("lora", **changes)
    straight = tmp_path / "straight"
    assert main([str(recipe), "--run-dir", str(straight)]) == 0

    run_dir = tmp_path / "stopped"
    child = launch.start(recipe, run_dir)
    launch.wait_started(child)
    wait_for_event(run_dir, lambda e: e["kind"] == "start")
    assert launch.stop(run_dir)  # SIGINT to the pid in run.json
    assert child.process.wait(timeout=120) == ExitCode.INTERRUPTED
    events, skipped = read_events(run_dir / "events.jsonl")
    end = events[-1]
    assert skipped == 0 and end["kind"] == "end" and end["status"] == "cancelled"
    stopped_at = max(e["step"] for e in events if e["kind"] == "step")
    assert 1 <= stopped_at < steps
    assert "stop requested" in (run_dir / "train.log").read_text()
    assert (run_dir / f"checkpoint-{stopped_at}" / "adapter_model.safetensors").is_file()
    assert events[-2] == {**events[-2], "kind": "checkpoint", "step": stopped_at}
    assert not launch.stop(run_dir)  # nothing left to stop

    assert main([str(recipe), "--run-dir", str(run_dir), "--resume"]) == 0
    resumed, _ = read_events(run_dir / "events.jsonl")
    straight_end = read_events(straight / "events.jsonl")[0][-1]
    assert resumed[-1]["status"] == "ok"
    assert resumed[-1]["final_loss"] == pytest.approx(straight_end["final_loss"], rel=1e-4, abs=1e-5)


def test_a_stop_after_the_run_ended_changes_nothing(make_recipe, tmp_path):
    """A stop that arrives once the run has ended ok (here the trainer sends itself SIGTERM right
    after it, through a fault point) is ignored: exit 0, and no "stop requested" line announcing a
    checkpoint that never comes (nor, later in the shutdown, a death by the signal)."""
    import os

    from peft_advisor.core import run_folder as rf

    recipe = make_recipe("lora", **{"train.max_steps": 2, "train.save_every": 0, "train.eval_every": 0})
    run_dir = tmp_path / "run"
    child = launch.start(recipe, run_dir, env={**os.environ, rf.FAULT_ENV: "exit:term"})
    assert child.process.wait(timeout=120) == 0
    log = (run_dir / "train.log").read_text()
    assert "peft-advisor: run ended ok" in log and "stop requested" not in log
    assert read_events(run_dir / "events.jsonl")[0][-1]["status"] == "ok"


@pytest.mark.parametrize(
    "case, code, needle",
    [
        ("missing", ExitCode.BAD_DATA, "no such file or folder"),
        ("columns", ExitCode.BAD_DATA, "expected instruction+output[+input], messages, conversations (ShareGPT), prompt+completion or text"),
        ("empty", ExitCode.BAD_DATA, "has no rows"),
        ("too_long", ExitCode.BAD_DATA, "longer than data.max_seq_len = 8"),
        ("recipe", ExitCode.BAD_RECIPE, "train.rnak: unknown key"),
    ],
)
def test_bad_input_is_one_line_and_no_run_folder(case, code, needle, make_recipe, tmp_path, capsys):
    """In-process child (fast), then once through the CLI to check the launcher cleans up."""
    from peft_advisor.train.__main__ import main

    data = tmp_path / "data.jsonl"
    if case == "columns":
        data.write_text('{"question": "1+1", "answer": "2"}\n')
    elif case == "empty":
        data.write_text("")
    changes = {"data.path": str(data)} if case in ("columns", "empty", "missing") else {}
    if case == "too_long":
        changes["data.max_seq_len"] = 8
    recipe = make_recipe(**changes)
    if case == "recipe":
        recipe.write_text(recipe.read_text().replace("[train]", "[train]\nrnak = 3"))
    run_dir = tmp_path / "run"
    assert main([str(recipe), "--run-dir", str(run_dir)]) == code
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("peft-advisor: ")]
    assert len(err) == 1 and needle in err[0], err
    assert not run_dir.exists()


def test_bad_data_through_the_cli_leaves_nothing_behind(make_recipe, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "1+1"}\n')
    recipe = make_recipe(**{"data.path": str(data)})
    done = cli("train", recipe, "--run-dir", tmp_path / "runs" / "x")
    assert done.returncode == ExitCode.BAD_DATA
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("peft-advisor: data: ") and "question" in last
    assert list((tmp_path / "runs").iterdir()) == []  # neither the run folder nor the staging folder


def test_existing_run_folder_is_refused_without_resume(make_recipe, tmp_path):
    (tmp_path / "run").mkdir()
    done = cli("train", make_recipe(), "--run-dir", tmp_path / "run")
    assert done.returncode == ExitCode.EXISTS
    assert "--resume" in done.stderr


def test_resume_without_a_checkpoint_or_a_file_as_run_folder_write_nothing(make_recipe, tmp_path):
    empty, afile = tmp_path / "empty", tmp_path / "afile"
    empty.mkdir()
    afile.write_text("mine")
    done = cli("train", make_recipe(), "--run-dir", empty, "--resume")
    assert done.returncode == ExitCode.USAGE and "no checkpoint-N folder to resume from" in done.stderr
    assert list(empty.iterdir()) == []  # no run.json, no train.log
    for extra in ([], ["--resume"]):
        done = cli("train", make_recipe(), "--run-dir", afile, *extra)
        assert done.returncode == ExitCode.USAGE and "is a file, not a run folder" in done.stderr
    assert afile.read_text() == "mine"


def test_sigterm_to_train_stops_the_trainer_as_ctrl_c_does(make_recipe, tmp_path):
    """`kill` or `timeout` on `peft-advisor train`: the trainer (in its own session) checkpoints and
    ends cancelled; it is not left running on its own."""
    recipe = make_recipe("lora", **{"train.max_steps": 400, "train.save_every": 0, "train.eval_every": 0})
    run_dir = tmp_path / "run"
    parent = subprocess.Popen([sys.executable, "-m", "peft_advisor", "train", str(recipe), "--run-dir", str(run_dir)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_step(run_dir, 2)
        child_pid = launch.read_run_json(run_dir)["pid"]
        parent.terminate()
        assert parent.wait(timeout=120) == ExitCode.INTERRUPTED, parent.stderr.read()
    finally:
        parent.kill()
    events, _ = read_events(run_dir / "events.jsonl")
    assert events[-1]["kind"] == "end" and events[-1]["status"] == "cancelled"
    assert events[-2]["kind"] == "checkpoint"
    assert not launch.trainer_alive(child_pid)


@pytest.mark.parametrize("changes, code, words", [
    ({"data.path": "missing/rows.jsonl"}, ExitCode.BAD_DATA, "data: no such file or folder: missing/rows.jsonl"),
    ({"model.id": "./no-such-model"}, ExitCode.UNKNOWN_MODEL, "model.id: no such folder: ./no-such-model"),
])
def test_a_missing_local_model_or_data_is_refused_before_any_child(changes, code, words, make_recipe, tmp_path,
                                                                    monkeypatch):
    """Said by the launcher in a moment, not after the trainer's imports; no process, no folder."""
    started = []
    monkeypatch.setattr(launch.subprocess, "Popen", lambda *a, **k: started.append(a))
    recipe = make_recipe(**changes)
    with pytest.raises(launch.UserError) as err:
        launch.start(recipe, tmp_path / "runs" / "x")
    assert err.value.code == code and str(err.value) == words
    assert started == [] and not (tmp_path / "runs").exists()


def test_a_stop_during_setup_reaches_a_trainer_started_from_a_background_job(make_recipe, tmp_path):
    """A background job inherits SIGINT ignored; the trainer still takes the launcher's SIGINT, so
    `kill` during setup stops it: no run folder, no trainer left."""
    import signal

    recipe = make_recipe("lora", **{"train.max_steps": 400, "train.save_every": 0, "train.eval_every": 0})
    run_dir = tmp_path / "runs" / "x"
    parent = subprocess.Popen([sys.executable, "-m", "peft_advisor", "train", str(recipe), "--run-dir", str(run_dir)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        first = parent.stderr.readline()  # "peft-advisor: trainer pid N; setting up ..."
        child_pid = int(first.split("trainer pid ")[1].split(";")[0])
        parent.terminate()
        assert parent.wait(timeout=120) == ExitCode.INTERRUPTED
    finally:
        parent.kill()
    assert not launch.trainer_alive(child_pid)
    assert not run_dir.exists() and list((tmp_path / "runs").iterdir()) == []


def _events_of(run_dir, kind: str) -> list[dict]:
    try:
        return [e for e in read_events(run_dir / "events.jsonl")[0] if e["kind"] == kind]
    except FileNotFoundError:
        return []


def test_a_slow_baseline_evaluation_has_a_line_of_its_own_and_a_row_cap(make_recipe, tmp_path):
    """Before step 1 the base model is evaluated: the CLI says so (rows, batches) instead of
    nothing, and train.baseline_eval_rows caps it while later evaluations use every eval row."""
    import os

    from peft_advisor.core import run_folder as rf

    recipe = make_recipe("lora", **{"train.max_steps": 2, "train.eval_every": 0, "train.save_every": 0,
                                    "train.baseline_eval_rows": 4})
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "peft_advisor", "train", str(recipe), "--run-dir", str(run_dir)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, rf.FAULT_ENV: "eval_batch:slow:0.5"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1] == "eval   baseline 0/1 batches (4 rows)"  # right after the start line
    assert "eval   step 2 0/2 batches (8 rows)" in lines  # the final evaluation: every eval row
    starts = _events_of(run_dir, "eval_start")
    assert [(e["step"], e["rows"]) for e in starts] == [(0, 4), (2, 8)]
    assert _events_of(run_dir, "eval_progress")[0] == {**_events_of(run_dir, "eval_progress")[0], "done": 1, "total": 1}


def test_no_baseline_when_its_row_cap_is_zero(make_recipe, tmp_path):
    recipe = make_recipe("lora", **{"train.max_steps": 1, "train.eval_every": 0, "train.save_every": 0,
                                    "train.baseline_eval_rows": 0})
    done = cli("train", recipe, "--run-dir", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    assert [e["step"] for e in _events_of(tmp_path / "run", "eval")] == [1]


def test_ctrl_c_during_the_baseline_evaluation_stops_it_promptly(make_recipe, tmp_path):
    """A stop is seen between two eval batches: the evaluation ends there, not after its last batch,
    and the run checkpoints and ends cancelled as at any step (--resume goes on from there)."""
    import os
    import signal

    from peft_advisor.core import run_folder as rf

    recipe = make_recipe("lora", **{"train.max_steps": 50, "train.eval_every": 0, "train.save_every": 0,
                                    "data.eval_split": 24, "train.baseline_eval_rows": 24})
    run_dir = tmp_path / "run"
    parent = subprocess.Popen([sys.executable, "-m", "peft_advisor", "train", str(recipe), "--run-dir", str(run_dir)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, rf.FAULT_ENV: "eval_batch:slow:2"})  # 6 batches: 12 s
    try:
        deadline = time.monotonic() + 120
        while not _events_of(run_dir, "eval_progress") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _events_of(run_dir, "eval_progress"), "no evaluation under way"
        stopped = time.monotonic()
        parent.send_signal(signal.SIGINT)
        out, err = parent.communicate(timeout=120)
        took = time.monotonic() - stopped
    finally:
        parent.kill()
    assert parent.returncode == ExitCode.INTERRUPTED, err
    assert took < 8, f"the stop waited for the whole evaluation ({took:.1f} s)"
    events, _ = read_events(run_dir / "events.jsonl")
    kinds = [e["kind"] for e in events]
    assert "eval" not in kinds  # no loss from half an evaluation
    stopped_eval = [e for e in events if e.get("status") == "stopped"]
    assert stopped_eval and stopped_eval[0]["kind"] == "eval_progress" and stopped_eval[0]["done"] < 6
    assert kinds[-2:] == ["checkpoint", "end"] and events[-1]["status"] == "cancelled"
    assert "eval   baseline 0/6 batches (24 rows)" in out.splitlines()
    assert any(line.startswith("eval   baseline stopped at ") for line in out.splitlines())
