"""`peft-advisor bench` and local calibration.

Pure parts (planning, folding canned events, rendering, the calibration ratio and its store) run
in milliseconds; the runner is checked against the fake trainer (time budget, a dying candidate,
Ctrl-C) and end to end against the real trainer on the tiny random Llama, as a real subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peft_advisor import calibration_store
from peft_advisor.core import bench
from peft_advisor.core import recipe as rc
from peft_advisor.core.calibration import CalibrationRecord, apply_calibration, calibration_ratio, model_key
from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.estimate import Settings, estimate
from peft_advisor.core.events import read_events
from peft_advisor.core.model_spec import load_model_spec

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
FAKE_TRAINER = FIXTURES / "fake_trainer.py"
DEMO_LORA = ROOT / "recipes" / "demo" / "lora.toml"


def base_recipe(**changes) -> rc.Recipe:
    """The demo model and data, LoRA at 1e-3 (five times its default lr), 80 steps of batch 8."""
    base = {"train.lr": 1e-3, "train.max_steps": 80, "train.micro_batch": 8}
    return rc.updated(rc.Recipe(), {**base, **{k.replace("__", "."): v for k, v in changes.items()}})


def events_of(name: str) -> list[dict]:
    return read_events(FIXTURES / "runs" / name / "events.jsonl")[0]


def ev(kind: str, t: float = 0.0, **fields) -> dict:
    return {"v": 1, "kind": kind, "t": t, **fields}


# ---------------------------------------------------------------- planning


def test_parse_methods_keeps_order_drops_repeats_and_names_the_unknown():
    assert bench.parse_methods(" lora,DoRA ,lora,galore-8bit") == ["lora", "dora", "galore-8bit"]
    assert bench.parse_methods(None) == list(rc.methods())
    with pytest.raises(UserError) as err:
        bench.parse_methods("lora,dorra")
    assert err.value.code == ExitCode.UNKNOWN_METHOD and "did you mean dora" in str(err.value)
    with pytest.raises(UserError):
        bench.parse_methods(" , ")


def test_budget_steps_time_split_and_default():
    recipe = base_recipe()  # max_steps 80
    assert bench.make_budget(recipe, 7, None, 3) == bench.Budget(steps=7)
    assert bench.make_budget(recipe, None, 6.0, 3) == bench.Budget(time_s=120.0)  # 6 min over 3 methods
    assert bench.make_budget(recipe, None, None, 3) == bench.Budget(steps=bench.DEFAULT_STEPS)
    short = rc.updated(recipe, {"train.max_steps": 4})
    assert bench.make_budget(short, None, None, 3).steps == 4
    for steps, minutes in ((3, 1.0), (0, None), (None, 0.0), (None, float("nan")), (None, 1e300)):
        with pytest.raises(UserError):
            bench.make_budget(recipe, steps, minutes, 3)


def test_lr_follows_each_methods_default_scaled_like_the_recipe():
    tuned = base_recipe()  # lora at 1e-3, five times the catalog's default_lr("lora")
    assert bench.candidate_lr(tuned, "lora") == 1e-3
    assert bench.candidate_lr(tuned, "dora") == pytest.approx(5 * rc.default_lr("dora"))
    assert bench.candidate_lr(tuned, "vera") == pytest.approx(5 * rc.default_lr("vera"))
    assert bench.candidate_lr(tuned, "full") == pytest.approx(5 * rc.default_lr("full"))
    plain = rc.updated(tuned, {"train.lr": rc.default_lr("lora")})
    assert {m: bench.candidate_lr(plain, m) for m in rc.methods()} == pytest.approx({m: rc.default_lr(m) for m in rc.methods()})


def test_plan_swaps_only_the_method_and_knows_what_needs_cuda(tmp_path):
    recipe = base_recipe()
    names = ["lora", "qlora", "vera", "galore-8bit"]
    dirs = {n: str(tmp_path / n) for n in names}
    folder = str(tmp_path)
    cpu = {c.name: c for c in bench.plan(recipe, names, False, bench.Budget(steps=5), folder)}
    assert cpu["lora"].runnable and cpu["vera"].runnable
    assert cpu["qlora"].skip_status == "needs-cuda" and "CUDA" in cpu["qlora"].skip_reason
    assert cpu["galore-8bit"].skip_status == "needs-cuda" and cpu["galore-8bit"].method == "galore"
    gpu = {c.name: c for c in bench.plan(recipe, names, True, bench.Budget(steps=5), folder)}
    assert all(c.runnable for c in gpu.values())
    q, v = gpu["qlora"].recipe, gpu["vera"].recipe
    assert q.model.load_in_4bit and not v.model.load_in_4bit and gpu["galore-8bit"].recipe.method.galore_8bit
    for cand in gpu.values():  # same model, data, shapes and seed; equal budget; own folder
        r = cand.recipe
        assert (r.model.id, r.data, r.train.micro_batch, r.train.seed) == (recipe.model.id, recipe.data, 8, 42)
        assert r.train.max_steps == 5 and r.train.eval_every == 0 and r.output.dir == dirs[cand.name]
    timed = bench.plan(recipe, ["dora"], True, bench.Budget(time_s=60.0), folder)[0].recipe
    assert timed.train.max_steps == recipe.train.max_steps  # the clock stops it, the schedule is the recipe's
    # a qlora recipe benched as lora must drop the 4-bit base
    from_qlora = bench.plan(base_recipe(method__name="qlora"), ["lora"], True, bench.Budget(steps=5), folder)
    assert not from_qlora[0].recipe.model.load_in_4bit


def test_a_candidate_the_recipe_rules_out_is_an_error_row(tmp_path):
    recipe = base_recipe(train__grad_accum=2)
    cand = bench.plan(recipe, ["galore-layerwise"], True, bench.Budget(steps=5), str(tmp_path))[0]
    assert cand.skip_status == "error" and "grad_accum" in cand.skip_reason
    row = bench.skipped_row(cand)
    assert row.status == "error" and row.reason == cand.skip_reason


# ---------------------------------------------------------------- folding events into rows


def test_fold_a_finished_run():
    events = events_of("demo-lora")
    row = bench.fold("lora", "lora", events, lr=2e-4)
    steps = [e for e in events if e["kind"] == "step"]
    assert row.status == "ok" and row.reason is None and row.steps == 60 == row.total_steps
    assert row.peak_measured_bytes == max(max(e["mem_peak_bytes"], e["mem_reserved_bytes"]) for e in steps)
    assert row.peak_estimated_bytes == events[0]["estimate_peak_bytes"]
    speeds = sorted(e["tokens_per_s"] for e in steps)
    assert row.tokens_per_s == pytest.approx((speeds[29] + speeds[30]) / 2)  # the median of 60
    assert row.train_loss == pytest.approx(sum(e["loss"] for e in steps[-5:]) / 5)
    assert (row.eval_loss, row.eval_accuracy, row.eval_step) == (0.9206, 0.6, 60)
    assert row.adapter_bytes == 19545000  # from the checkpoint event when the folder gives none
    assert row.estimate_error == pytest.approx((row.peak_estimated_bytes - row.peak_measured_bytes) / row.peak_measured_bytes)
    assert len(row.losses) == 60 and row.losses[0] == (1, steps[0]["loss"])
    assert bench.fold("lora", "lora", events, adapter_bytes=123).adapter_bytes == 123


def test_fold_statuses():
    start = ev("start", 0, method="lora", total_steps=10, device="cuda:0", estimate_peak_bytes=1000)
    steps = [ev("step", i, step=i, loss=2.0 - i / 10, tokens_per_s=100.0 + i, mem_reserved_bytes=900, mem_peak_bytes=950)
             for i in range(1, 5)]
    base = [start, ev("eval", 0.5, step=0, eval_loss=3.0), *steps]
    oom = bench.fold("full", "full", base + [ev("end", 9, status="oom", message="CUDA out of memory", mem_peak_bytes=2000)])
    assert (oom.status, oom.reason, oom.peak_measured_bytes) == ("oom", "CUDA out of memory", 2000)
    assert oom.eval_loss_start == 3.0 and oom.eval_loss is None
    died = bench.fold("dora", "dora", base)
    assert died.status == "error" and "without an end event" in died.reason
    cancelled = base + [ev("end", 9, status="cancelled", message="stopped at step 4")]
    assert bench.fold("lora", "lora", cancelled).status == "cancelled"
    budget = bench.fold("lora", "lora", cancelled, stopped_at_budget=True)
    assert budget.status == "ok" and budget.reason is None and budget.stopped_at_budget
    # a trainer that enforces the limit itself ends ok, short of its steps, and ran its final eval
    limited = [dict(start, time_limit_s=30.0), *base[1:], ev("eval", 8, step=4, eval_loss=1.5), ev("end", 9, status="ok")]
    row = bench.fold("lora", "lora", limited)
    assert row.status == "ok" and row.stopped_at_budget and row.eval_loss == 1.5 and row.eval_step == 4
    assert not bench.fold("lora", "lora", base + [ev("end", 9, status="ok")]).stopped_at_budget


def test_fold_tolerates_nan_losses_and_missing_fields():
    events = [ev("start", 0, total_steps=3), ev("step", 1, step=1, loss=float("nan")), ev("step", 2, step=2, loss=1.0),
              ev("step", 3, step=3), ev("end", 4, status="ok")]
    row = bench.fold("vera", "vera", events)
    assert row.train_loss == 1.0 and row.tokens_per_s is None and row.peak_measured_bytes is None
    text = json.dumps(row.to_dict())
    assert "NaN" not in text and bench.Row.from_dict(json.loads(text)).losses[1] == (2, 1.0)


def _result() -> bench.BenchResult:
    rows = [bench.fold("lora", "lora", events_of("demo-lora"), lr=1e-4),
            bench.fold("dora", "dora", events_of("demo-dora"), lr=1e-4, stopped_at_budget=True),  # ended cancelled
            bench.fold("vera", "vera", events_of("demo-vera"), lr=1e-3)]  # died without an end event
    rows.append(bench.Row(name="qlora", method="qlora", status="needs-cuda", reason="qlora needs an NVIDIA GPU with CUDA"))
    return bench.BenchResult(recipe="r.toml", model="demo", data="demo", budget=bench.Budget(steps=60),
                             gpu="NVIDIA H200", rows=rows)


def test_render_markdown_table_and_notes():
    result = _result()
    text = bench.render_markdown(result)
    table = bench.table(result.rows).splitlines()
    assert table[0].startswith("| method") and len(table) == 2 + len(result.rows)
    assert len({len(line) for line in table}) == 1  # padded: the columns line up in a terminal
    lora = next(line for line in table if line.startswith("| lora"))
    assert "0.9206" in lora and "60.0%" in lora and "19.5 MB" in lora and "2.85 GiB" in lora and "+5.3%" in lora
    assert "needs CUDA" in next(line for line in table if line.startswith("| qlora"))
    assert "\n".join(table) in text and "NVIDIA H200" in text and "60 steps each" in text
    assert "**qlora** needs CUDA: qlora needs an NVIDIA GPU with CUDA" in text
    assert "**vera** error: the trainer exited without an end event" in text
    assert "**dora** stopped at its time budget after 30 steps." in text
    assert "Lowest eval loss after the budget: **lora** (0.9206)" in text and "relative to LoRA" in text


def test_bench_json_round_trips():
    result = _result()
    data = json.loads(json.dumps(result.to_dict()))
    again = bench.BenchResult.from_dict(data)
    assert [r.to_dict() for r in again.rows] == [r.to_dict() for r in result.rows]
    assert again.budget == result.budget and again.gpu == "NVIDIA H200"


# ---------------------------------------------------------------- calibration


def rec(method="lora", measured=110, estimated=100, gpu="NVIDIA H200", model="qwen2.5-0.5b") -> CalibrationRecord:
    return CalibrationRecord(gpu=gpu, model=model, method=method, settings={}, measured_peak_bytes=measured,
                             estimated_peak_bytes=estimated, t=1.0)


def test_calibration_ratio_prefers_the_same_method_then_any_method():
    records = [rec("lora", 110), rec("lora", 130), rec("lora", 120), rec("dora", 90), rec("lora", 300, gpu="RTX 4090"),
               rec("lora", 500), rec("lora", 100, model="llama-3.2-1b")]  # 5.0 is a broken measurement
    assert calibration_ratio(records, "NVIDIA H200", "qwen2.5-0.5b", "lora") == (1.2, 3, True)
    assert calibration_ratio(records, "nvidia h200", "QWEN2.5-0.5B", "dora") == (0.9, 1, True)
    assert calibration_ratio(records, "NVIDIA H200", "qwen2.5-0.5b", "vera") == (pytest.approx(1.15), 4, False)
    assert calibration_ratio(records, "NVIDIA A100", "qwen2.5-0.5b", "lora") is None


def test_apply_calibration_scales_the_peak_and_says_so():
    spec = load_model_spec("qwen2.5-0.5b")
    est = estimate(spec, Settings("lora", batch_size=2, seq_len=512))
    cal = apply_calibration(est, [rec("lora", 110), rec("lora", 120)], "NVIDIA H200", spec.id)
    assert cal.peak_bytes == round(est.peak_bytes * 1.15)
    assert (cal.low_bytes, cal.high_bytes) == (round(est.low_bytes * 1.15), round(est.high_bytes * 1.15))
    assert sum(cal.breakdown.values()) == cal.peak_bytes and cal.breakdown["calibration"] > 0
    assert (cal.context_bytes, cal.adapter_bytes, cal.trainable_params) == (est.context_bytes, est.adapter_bytes, est.trainable_params)
    assert cal.calibrated.startswith("calibrated on 2 local runs (NVIDIA H200, qwen2.5-0.5b)")
    assert cal.to_dict()["calibrated"] == cal.calibrated and est.calibrated is None
    assert apply_calibration(est, [rec()], None, spec.id) is est
    assert apply_calibration(est, [rec(gpu="RTX 4090")], "NVIDIA H200", spec.id) is est


def test_model_key_normalises_folders_and_ids(tmp_path):
    assert model_key("Qwen2.5-0.5B") == "qwen2.5-0.5b"
    assert model_key(str(tmp_path / "m" / "config.json")) == str(tmp_path / "m")
    assert model_key(str(tmp_path / "m") + "/") == str(tmp_path / "m")


def test_store_appends_loads_and_skips_bad_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFT_ADVISOR_CACHE", str(tmp_path / "cache"))
    path = calibration_store.store_path()
    assert path == tmp_path / "cache" / "calibration.jsonl" and calibration_store.load() == []
    calibration_store.append(rec("lora", 110))
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"torn": \n[1, 2]\n{"gpu": "x", "model": "m", "method": "lora", "measured_peak_bytes": "big"}\n')
    calibration_store.append(rec("dora", 120))
    assert [r.method for r in calibration_store.load()] == ["lora", "dora"]
    with pytest.raises(ValueError):
        calibration_store.append(rec(measured=0))
    spec = load_model_spec("Qwen/Qwen2.5-0.5B-Instruct")  # same architecture as the preset: same records
    settings = Settings("lora")
    assert calibration_store.calibrated_estimate(spec, settings, None).calibrated is None
    assert calibration_store.calibrated_estimate(spec, settings, "NVIDIA A100").calibrated is None
    cal = calibration_store.calibrated_estimate(spec, settings, "NVIDIA H200")
    assert cal.calibrated and cal.peak_bytes == round(estimate(spec, settings).peak_bytes * 1.1)
    calibrate = calibration_store.calibrator("NVIDIA H200", spec.id)
    assert calibrate(estimate(spec, settings)) == cal
    assert calibration_store.calibrator(None, spec.id) is None
    assert calibration_store.calibrator("NVIDIA H200", spec.id, path=tmp_path / "none.jsonl") is None


def test_candidate_recipes_find_relative_data_and_model_folders(tmp_path, monkeypatch):
    from peft_advisor.cli.bench_cmd import _absolute_paths

    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "rows.jsonl").write_text("{}\n")
    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path)
    recipe = rc.updated(rc.Recipe(), {"data.path": "rows.jsonl", "model.id": "model"})
    fixed = _absolute_paths(recipe, Path("recipes"))
    assert (fixed.data.path, fixed.model.id) == (str(tmp_path / "recipes" / "rows.jsonl"), str(tmp_path / "model"))
    assert _absolute_paths(rc.Recipe(), Path("recipes")) == rc.Recipe()  # demo stays demo


def test_record_from_a_finished_gpu_run_folder(tmp_path):
    sys.path.insert(0, str(FIXTURES))
    from fake_trainer import write_canned

    store = tmp_path / "calibration.jsonl"
    for status, device in (("ok", "cuda:0"), ("ok", "cpu"), ("none", "cuda:0")):
        run = tmp_path / f"{status}-{device.replace(':', '')}"
        write_canned(run, status, "dora", device=device)
        record = calibration_store.record_from_run_dir(run, "NVIDIA H200", source="train", path=store)
        assert (record is not None) == (status == "ok" and device == "cuda:0")
    (record,) = calibration_store.load(store)
    assert (record.gpu, record.model, record.method) == ("NVIDIA H200", "demo", "dora")
    assert record.measured_peak_bytes == int(3 * 1024**3 * 0.95) and record.estimated_peak_bytes == 3 * 1024**3
    assert record.settings["method"] == "dora" and record.source.startswith("train ")


# ---------------------------------------------------------------- the runner, with the fake trainer


def _fake_argv(extra_for=None):
    """launch.build_argv, but the fake trainer: tests the runner's process handling in seconds."""

    def build_argv(recipe_path, run_dir, resume=False):
        name = Path(recipe_path).stem
        extra = (extra_for or {}).get(name, [])
        return [sys.executable, str(FAKE_TRAINER), str(recipe_path), "--run-dir", str(run_dir),
                "--label", "peft_advisor.train", "--method", name, "--steps", "400", "--interval", "0.01",
                "--eval-every", "0", *extra]

    return build_argv


def test_time_budget_stops_each_candidate_and_a_dying_one_does_not_stop_the_rest(tmp_path, monkeypatch, capsys):
    from peft_advisor import launch
    from peft_advisor.cli import main

    monkeypatch.setattr(launch, "build_argv", _fake_argv({"dora": ["--die-at", "3"]}))
    monkeypatch.setenv("PEFT_ADVISOR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "bench"
    code = main(["bench", str(DEMO_LORA), "--methods", "lora,dora,vera", "--time-budget", "0.03", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = {r["name"]: r for r in json.loads((out / "bench.json").read_text())["rows"]}
    for name in ("lora", "vera"):  # 0.6 s each: stopped by the bench long before 400 steps
        assert rows[name]["status"] == "ok" and rows[name]["stopped_at_budget"], rows[name]
        assert 0 < rows[name]["steps"] < 400
    assert rows["dora"]["status"] == "error" and "exit code 3" in rows["dora"]["reason"]
    assert "fake trainer died" in rows["dora"]["reason"]
    assert "| lora" in captured.out and "time budget reached" in captured.err
    assert (out / "bench.md").read_text().count("stopped at its time budget") == 2
    assert (out / "recipes" / "vera.toml").is_file()
    # the same folder again: refused, then replaced with --force
    again = ["bench", str(DEMO_LORA), "--methods", "lora", "--steps", "2", "--out", str(out)]
    assert main(again) == ExitCode.EXISTS
    assert main([*again, "--force"]) == 0
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["lora"]


def test_a_folder_of_other_things_is_not_a_bench_folder(tmp_path, capsys):
    from peft_advisor.cli import main

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    for extra in ([], ["--force"]):
        assert main(["bench", str(DEMO_LORA), "--methods", "lora", "--out", str(out), *extra]) == ExitCode.EXISTS
    assert "holds 'notes.txt', not a bench's" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep"


BENCH_WITH_FAKE = """
import sys
sys.path.insert(0, {tests!r})
from test_bench import _fake_argv
from peft_advisor import launch
launch.build_argv = _fake_argv()
from peft_advisor.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_stops_the_current_child_skips_the_rest_and_writes_the_files(tmp_path):
    out = tmp_path / "bench"
    argv = [sys.executable, "-c", BENCH_WITH_FAKE.format(tests=str(ROOT / "tests")), "bench", str(DEMO_LORA),
            "--methods", "lora,dora", "--steps", "20000", "--out", str(out)]  # stopped long before the end
    env = {**os.environ, "PEFT_ADVISOR_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    events = out / "lora" / "events.jsonl"
    deadline = time.monotonic() + 30
    while not (events.is_file() and events.read_text().count('"step"') >= 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == ExitCode.INTERRUPTED, stderr
    rows = {r["name"]: r for r in json.loads((out / "bench.json").read_text())["rows"]}
    assert rows["lora"]["status"] == "cancelled" and 3 <= rows["lora"]["steps"] < 20000
    assert rows["dora"]["status"] == "not-run"
    assert "| lora" in stdout and "interrupted" in (out / "bench.json").read_text()
    assert "Interrupted" in (out / "bench.md").read_text()


# ---------------------------------------------------------------- end to end on the real trainer


def _tiny_recipe(tmp_path: Path) -> Path:
    from tests.train.tiny import save_tiny_model, sums, write_jsonl

    model = save_tiny_model(tmp_path / "tiny")
    data = write_jsonl(tmp_path / "sums.jsonl", sums(48))
    recipe = rc.updated(rc.Recipe(), {
        "model.id": str(model), "method.rank": 4, "method.alpha": 8, "method.vera_rank": 16, "method.galore_rank": 8,
        "data.path": str(data), "data.eval_split": 8, "data.max_seq_len": 32, "train.max_steps": 100,
        "train.micro_batch": 4, "train.lr": 1e-3, "train.warmup_ratio": 0.0, "output.dir": str(tmp_path / "unused"),
    })
    return rc.save(recipe, tmp_path / "recipe.toml")


@pytest.mark.slow
def test_bench_end_to_end_on_the_tiny_model(tmp_path):
    recipe = _tiny_recipe(tmp_path)
    out = tmp_path / "bench"
    env = {**os.environ, "PEFT_ADVISOR_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "peft_advisor", "bench", str(recipe), "--methods", "lora,vera",
                           "--steps", "3", "--out", str(out)], capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / "bench.json").read_text())
    assert data["budget"] == {"steps": 3, "time_s": None} and not data["interrupted"]
    rows = {r["name"]: r for r in data["rows"]}
    assert list(rows) == ["lora", "vera"]
    for name, lr in (("lora", 1e-3), ("vera", 5e-3)):
        row = rows[name]
        assert row["status"] == "ok" and row["steps"] == 3 and row["device"] == "cpu", row
        assert row["lr"] == pytest.approx(lr) and len(row["losses"]) == 3
        assert row["train_loss"] > 0 and row["tokens_per_s"] > 0 and row["eval_step"] == 3
        assert row["eval_loss"] > 0 and row["eval_loss_start"] > 0 and row["eval_accuracy"] is not None
        assert row["adapter_bytes"] == (out / name / "adapter_model.safetensors").stat().st_size
        assert row["peak_measured_bytes"] is None and row["peak_estimated_bytes"] > 0  # no GPU memory on a CPU
    assert rows["vera"]["trainable_params"] < rows["lora"]["trainable_params"]
    table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert len(table) == 4 and table[2].startswith("| lora") and table[3].startswith("| vera")
    assert "\n".join(table) in (out / "bench.md").read_text()
    assert "[1/2] lora: step 3" in proc.stderr and "[2/2] vera: ok" in proc.stderr
    assert not (tmp_path / "cache" / "calibration.jsonl").exists()  # nothing measured on a CPU


# ---------------------------------------------------------------- on the GPU machine


def _random_real_model(folder: Path, preset: str) -> Path:
    """A preset's architecture with random weights (memory and speed do not depend on the values)
    and the tiny byte tokenizer (its ids fit any vocabulary): no download."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from peft_advisor.core.model_spec import _preset_dir
    from tests.train.tiny import byte_tokenizer

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(_preset_dir().joinpath(f"{preset}.json").read_text(encoding="utf-8"))
    config = AutoConfig.from_pretrained(folder)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


@pytest.mark.gpu
def test_bench_on_a_gpu_with_a_real_architecture(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from tests.train.tiny import sums, write_jsonl

    model = _random_real_model(tmp_path / "qwen2.5-0.5b", "qwen2.5-0.5b")
    data = write_jsonl(tmp_path / "sums.jsonl", sums(200))
    recipe = rc.save(rc.updated(rc.Recipe(), {
        "model.id": str(model), "data.path": str(data), "data.eval_split": 16, "data.max_seq_len": 64,
        "data.packing": True,  # rows of max_seq_len, as the estimate assumes (short rows peak lower)
        "train.max_steps": 100, "train.micro_batch": 8, "output.dir": str(tmp_path / "unused"),
    }), tmp_path / "recipe.toml")
    out, cache = tmp_path / "bench", tmp_path / "cache"
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PEFT_ADVISOR_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": pythonpath}
    proc = subprocess.run([sys.executable, "-m", "peft_advisor", "bench", str(recipe), "--methods", "lora,dora,qlora",
                           "--steps", "6", "--out", str(out)], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "bench.json").read_text())
    assert data["gpu"]
    for row in data["rows"]:
        assert row["status"] == "ok" and row["device"] == "cuda:0", row
        assert row["peak_measured_bytes"] > 0 and row["peak_estimated_bytes"] > 0 and row["tokens_per_s"] > 0
        assert abs(row["estimate_error"]) < 0.25, row  # the estimator is tuned to a few percent on the H200
    records = calibration_store.load(cache / "calibration.jsonl")
    assert sorted(r.method for r in records) == ["dora", "lora", "qlora"]
    cal = calibration_store.calibrated_estimate(load_model_spec(str(model)), Settings("lora", batch_size=8, seq_len=64),
                                                data["gpu"], path=cache / "calibration.jsonl")
    assert cal.calibrated and "1 local run" in cal.calibrated


def test_bench_and_calibration_core_stay_pure():
    from tests.test_import_hygiene import leaked

    assert leaked("import peft_advisor.core.bench, peft_advisor.core.calibration, peft_advisor.calibration_store") == []


@pytest.mark.slow
def test_data_peak_dry_run_advises_from_the_long_tail(tmp_path):
    """bench/data_peak.py --dry-run on the CPU: the seeded dataset is the same every time, the
    advice counts its longest row (inside max_seq_len 4096, truncated at 1024), and the recipe it
    would train is one whole epoch with no held-out rows."""
    from bench.data_peak import write_long_tail
    from peft_advisor.core import recipe as rc

    a, b = write_long_tail(tmp_path / "a.jsonl", 200, 3000), write_long_tail(tmp_path / "b.jsonl", 200, 3000)
    assert a.read_bytes() == b.read_bytes()
    lengths = sorted(len(json.loads(line)["output"]) for line in a.read_text().splitlines())
    assert lengths[len(lengths) // 2] < 600 and lengths[-1] > 1800  # a long tail

    out = tmp_path / "rows.jsonl"
    proc = subprocess.run([sys.executable, "bench/data_peak.py", "--dry-run", "--presets", "qwen2.5-0.5b", "--seqs",
                           "4096,1024", "--rows", "200", "--work", str(tmp_path / "work"), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    inside, cut = (json.loads(line) for line in out.read_text().splitlines())
    assert inside["estimate_seq_len"] == inside["longest_tokens"] < 4096 and inside["cut_share"] == 0
    assert cut["estimate_seq_len"] == 1024 and cut["cut_share"] > 0 and inside["recipe_valid"] and cut["recipe_valid"]
    assert not inside["peak_is_evaluation"] and inside["estimate_peak_bytes"] > cut["estimate_peak_bytes"]
    recipe = rc.load(tmp_path / "work" / "qwen2.5-0.5b-4096-lora.toml")
    assert (recipe.train.max_steps, recipe.train.epochs, recipe.data.eval_split) == (0, 1.0, 0)
    assert recipe.data.path == str(tmp_path / "work" / "long-tail-200-3000-0.jsonl") and recipe.data.max_seq_len == 4096
