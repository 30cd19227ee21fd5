"""Run folders that never lose work: a kill or a full disk mid-checkpoint, two trainers on one
folder, a resume of a finished run or with another method, a folder that cannot be made, and a stop
in the instant after the trainer is spawned. Faults are injected at precise points through
PEFT_ADVISOR_FAULT (core.run_folder.fault_point), never by sleeping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from peft_advisor import launch
from peft_advisor.core import run_folder as rf
from peft_advisor.core.errors import ExitCode
from peft_advisor.core.events import read_events
from tests.train.test_child import wait_for_step


def cli(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peft_advisor", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def one_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr, done.stderr
    return lines[-1]


def ends(run_dir) -> list[dict]:
    return [e for e in read_events(run_dir / "events.jsonl")[0] if e["kind"] == "end"]


def snapshot(folder) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


# ---------------------------------------------------------------- 1. torn checkpoints


def test_a_checkpoint_folder_without_its_last_file_is_passed_over(tmp_path):
    for step, whole in ((2, True), (4, True), (6, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if whole:
            (tmp_path / f"checkpoint-{step}" / rf.CHECKPOINT_LAST_FILE).write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    last, skipped = rf.last_complete_checkpoint(tmp_path)
    assert last.name == "checkpoint-4" and [p.name for p in skipped] == ["checkpoint-6"]
    rf.rotate_checkpoints(tmp_path, keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4", "checkpoint-6", "checkpoint-x"]


def test_a_kill_mid_checkpoint_leaves_the_last_complete_one_and_resume_takes_it(make_recipe, tmp_path):
    recipe = make_recipe("lora", **{"train.max_steps": 6, "train.save_every": 2, "train.eval_every": 0})
    run_dir = tmp_path / "run"
    killed = cli("train", recipe, "--run-dir", run_dir, env={rf.FAULT_ENV: "checkpoint:kill:2"})
    assert killed.returncode == ExitCode.TRAIN_FAILED
    assert "without an end event" in killed.stderr
    assert [p.name for p in rf.checkpoints(run_dir)] == ["checkpoint-2"]  # checkpoint-4 never became visible
    assert (run_dir / rf.PARTIAL / "checkpoint-4").is_dir()
    (run_dir / "checkpoint-5").mkdir()  # a torn folder as an older version or another tool left it

    resumed = cli("train", recipe, "--run-dir", run_dir, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    log = (run_dir / "train.log").read_text()
    assert "skipping checkpoint-5: incomplete" in log
    starts = [e for e in read_events(run_dir / "events.jsonl")[0] if e["kind"] == "start"]
    assert starts[-1]["resumed_from_step"] == 2
    assert ends(run_dir)[-1]["status"] == "ok"
    assert not (run_dir / rf.PARTIAL).exists()


def test_a_full_disk_mid_checkpoint_is_one_line_and_keeps_the_last_complete_one(make_recipe, tmp_path):
    recipe = make_recipe("lora", **{"train.max_steps": 6, "train.save_every": 2, "train.eval_every": 0})
    run_dir = tmp_path / "run"
    done = cli("train", recipe, "--run-dir", run_dir, env={rf.FAULT_ENV: "checkpoint:enospc:2"})
    assert done.returncode == ExitCode.TRAIN_FAILED
    end_line = done.stdout.splitlines()[-1]
    assert end_line.startswith("end    error") and "the disk is full" in end_line
    assert "checkpoint-2 is the last complete checkpoint" in end_line
    assert [p.name for p in rf.checkpoints(run_dir)] == ["checkpoint-2"]
    assert rf.is_complete_checkpoint(run_dir / "checkpoint-2") and not (run_dir / rf.PARTIAL).exists()


def test_pytorchs_words_for_a_full_disk_are_recognised():
    assert rf.is_disk_full(OSError(28, "No space left on device"))
    assert rf.is_disk_full(RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed "
                                        "writing file data/0: file write failed"))
    assert not rf.is_disk_full(RuntimeError("shape mismatch"))


# ---------------------------------------------------------------- 2. one trainer per folder


def test_the_lock_is_exclusive_and_dies_with_its_holder(tmp_path):
    lock = rf.RunLock(tmp_path).acquire()
    assert rf.lock_holder(tmp_path) == os.getpid()
    with pytest.raises(rf.FolderBusy) as busy:
        rf.RunLock(tmp_path).acquire()
    assert busy.value.pid == os.getpid()
    lock.release()
    assert rf.lock_holder(tmp_path) is None

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom peft_advisor.core import run_folder as rf\n"
                               f"rf.RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert rf.lock_holder(tmp_path) == holder.pid
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert rf.lock_holder(tmp_path) is None  # the kernel let go: a resume is not blocked by a dead trainer


def test_a_second_trainer_on_a_running_folder_is_refused_at_once(make_recipe, tmp_path):
    # far more steps than the second trainer's start-up can outlast (the first is stopped at the end)
    recipe = make_recipe("lora", **{"train.max_steps": 20_000, "train.save_every": 2, "train.eval_every": 0})
    run_dir = tmp_path / "run"
    first = launch.start(recipe, run_dir)
    try:
        launch.wait_started(first)
        wait_for_step(run_dir, 3)
        log_before = (run_dir / "train.log").stat().st_size
        second = cli("train", recipe, "--run-dir", run_dir, "--resume", timeout=60)
        assert second.returncode == ExitCode.EXISTS
        assert one_line(second) == f"peft-advisor: {run_dir}: run folder in use by trainer pid {first.pid}; " \
                                   f"wait for it to end or stop it first"
        assert (run_dir / "train.log").stat().st_size >= log_before  # the second wrote nothing into it
        assert launch.read_run_json(run_dir)["pid"] == first.pid
    finally:
        first.stop()
        first.process.wait(timeout=120)
    starts = [e for e in read_events(run_dir / "events.jsonl")[0] if e["kind"] == "start"]
    assert len(starts) == 1 and len(ends(run_dir)) == 1


def test_two_new_trainers_into_one_folder_one_wins_the_other_says_why(make_recipe, tmp_path):
    recipe = make_recipe("lora", **{"train.max_steps": 2, "train.save_every": 0, "train.eval_every": 0})
    run_dir = tmp_path / "runs" / "x"
    argv = [sys.executable, "-m", "peft_advisor", "train", str(recipe), "--run-dir", str(run_dir)]
    both = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in both]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, ExitCode.EXISTS], results
    code, out, err = next(r for r in results if r[0] == ExitCode.EXISTS)
    assert out == "" and "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith(("run folder appeared meanwhile; not overwriting",
                                                  "run folder exists; pass --resume or another --run-dir"))
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["x"]  # no staging folder left behind
    assert len([e for e in read_events(run_dir / "events.jsonl")[0] if e["kind"] == "start"]) == 1


# ---------------------------------------------------------------- 3. resume of a finished run; 12. changed keys


def test_resume_of_a_finished_run_says_so_and_writes_nothing(make_recipe, tmp_path):
    recipe = make_recipe("lora", **{"train.max_steps": 4, "train.save_every": 2, "train.eval_every": 0})
    run_dir = tmp_path / "run"
    assert cli("train", recipe, "--run-dir", run_dir).returncode == 0
    before = snapshot(run_dir)
    again = cli("train", recipe, "--run-dir", run_dir, "--resume")
    assert again.returncode == 0 and again.stdout == ""
    assert "the run is complete (step 4 of 4); nothing to resume" in one_line(again)
    assert snapshot(run_dir) == before

    more = make_recipe("lora", name="more.toml", **{"train.max_steps": 6, "train.save_every": 2, "train.eval_every": 0})
    longer = cli("train", more, "--run-dir", run_dir, "--resume")
    assert longer.returncode == 0, longer.stderr
    steps = [e["step"] for e in read_events(run_dir / "events.jsonl")[0] if e["kind"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("change, words", [
    ({"method.rank": 8}, "method.rank changed since the run started (4 -> 8)"),
    ({"method.name": "dora"}, "method.name changed since the run started (lora -> dora)"),
])
def test_resume_with_another_method_or_rank_names_the_key(change, words, make_recipe, tmp_path):
    recipe = make_recipe("lora", **{"train.max_steps": 6, "train.save_every": 2, "train.eval_every": 0})
    run_dir = tmp_path / "run"
    assert cli("train", recipe, "--run-dir", run_dir, env={rf.FAULT_ENV: "checkpoint:kill:2"}).returncode
    other = make_recipe("lora", name="other.toml", **{"train.max_steps": 6, "train.save_every": 2, **change})
    before = snapshot(run_dir)
    done = cli("train", other, "--run-dir", run_dir, "--resume")
    assert done.returncode == ExitCode.BAD_RECIPE
    assert words in one_line(done)
    assert snapshot(run_dir) == before


# ---------------------------------------------------------------- 6. folders that cannot be made


@pytest.mark.parametrize("run_dir", ["/proc/peft-advisor-test/run", "/sys/peft-advisor-test"])
def test_a_run_folder_that_cannot_be_created_is_one_line(run_dir, make_recipe):
    done = cli("train", make_recipe(), "--run-dir", run_dir, timeout=60)
    assert done.returncode == ExitCode.USAGE
    assert one_line(done).startswith(f"peft-advisor: {run_dir}: cannot create the run folder: ")


def test_an_empty_run_dir_is_refused_not_replaced_by_output_dir(make_recipe, tmp_path):
    done = cli("train", make_recipe(), "--run-dir", "", timeout=60)
    assert done.returncode == ExitCode.USAGE and "--run-dir is empty" in one_line(done)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- 11. a stop right after the spawn


def test_a_stop_in_the_instant_after_the_spawn_still_stops_the_trainer(make_recipe, tmp_path):
    """The flaky test's race, made certain: SIGTERM reaches `peft-advisor train` right after it
    started the trainer, before it waits for it. It used to raise out of the launcher and leave the
    trainer training on its own."""
    recipe = make_recipe("lora", **{"train.max_steps": 400, "train.save_every": 0, "train.eval_every": 0})
    run_dir = tmp_path / "runs" / "x"
    done = cli("train", recipe, "--run-dir", run_dir, env={rf.FAULT_ENV: "launched:term"}, timeout=120)
    assert done.returncode == ExitCode.INTERRUPTED, done.stderr
    pid = int(done.stderr.split("trainer pid ")[1].split(";")[0])
    assert not launch.trainer_alive(pid)
    assert "interrupted during setup" in done.stderr
    assert list((tmp_path / "runs").iterdir()) == []
