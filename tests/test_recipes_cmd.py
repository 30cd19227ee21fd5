"""`peft-advisor export` and `peft-advisor validate`, through the real dispatcher."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from peft_advisor.cli import main
from peft_advisor.cli.recipes_cmd import write_recipe
from peft_advisor.core import recipe as rc
from peft_advisor.core.errors import ExitCode
from tests.conftest import HAS_GPU

DEMO_LORA = Path(__file__).resolve().parent.parent / "recipes" / "demo" / "lora.toml"
MINE = '[model]\nid = "mine"  # a recipe someone wrote (--force replaces only recipes)\n'


def test_export_from_flags(tmp_path, capsys):
    out = tmp_path / "r.toml"
    code = main([
        "export", "--model", "Qwen/Qwen2.5-7B-Instruct", "--method", "dora", "--rank", "8",
        "--targets", "q_proj,v_proj", "--batch", "2", "--seq", "1024", "--grad-ckpt", "--steps", "300",
        "--data", "data/train.jsonl", "--set", "train.lr_scheduler=linear", "--set", "data.eval_split=20",
        "--no-estimate", "-o", str(out),
    ])
    assert code == 0
    r = rc.load(out)
    assert (r.model.id, r.method.name, r.method.rank, r.method.alpha) == ("Qwen/Qwen2.5-7B-Instruct", "dora", 8, 16)
    assert r.method.targets == ("q_proj", "v_proj")
    assert (r.train.micro_batch, r.data.max_seq_len, r.train.grad_ckpt, r.train.max_steps) == (2, 1024, True, 300)
    assert (r.train.lr, r.train.lr_scheduler, r.data.eval_split) == (rc.default_lr("dora"), "linear", 20)
    assert r.output.dir == "runs/qwen2.5-7b-instruct-dora"
    assert capsys.readouterr().out == ""  # stdout is data only; the note went to stderr


def test_export_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "r.toml"
    out.write_text(MINE, encoding="utf-8")
    assert main(["export", "--no-estimate", "-o", str(out)]) == ExitCode.EXISTS
    assert out.read_text(encoding="utf-8") == MINE
    assert "already exists" in capsys.readouterr().err
    assert main(["export", "--no-estimate", "--force", "-o", str(out)]) == 0
    assert rc.load(out).method.name == "lora"


def test_export_to_stdout(capsys):
    assert main(["export", "--method", "qlora", "--no-estimate"]) == 0
    r = rc.loads(capsys.readouterr().out)
    assert r.method.name == "qlora" and r.model.load_in_4bit


def test_export_bad_values(capsys):
    assert main(["export", "--method", "lorra"]) == ExitCode.UNKNOWN_METHOD
    assert "did you mean lora?" in capsys.readouterr().err
    assert main(["export", "--rank", "0", "--no-estimate"]) == ExitCode.BAD_RECIPE
    assert capsys.readouterr().err.strip() == "peft-advisor: method.rank: must be >= 1, got 0"
    assert main(["export", "--set", "method.rnak=3", "--no-estimate"]) == ExitCode.BAD_RECIPE
    assert "did you mean rank?" in capsys.readouterr().err


def test_export_for_the_demo_model_uses_the_shipped_demo_recipes_fast_settings(capsys):
    """`export` as the app and `recommend --export` do: the demo trains in minutes; typed flags win."""
    from peft_advisor.core.advise import DEMO_FAST

    shipped = rc.load(DEMO_LORA)
    assert main(["export", "--no-estimate"]) == 0
    r = rc.loads(capsys.readouterr().out)
    for key in DEMO_FAST:
        section, name = key.split(".")
        assert getattr(getattr(r, section), name) == getattr(getattr(shipped, section), name), key
    assert main(["export", "--no-estimate", "--seq", "256", "--steps", "7"]) == 0
    r = rc.loads(capsys.readouterr().out)
    assert (r.data.max_seq_len, r.train.max_steps, r.data.eval_split) == (256, 7, shipped.data.eval_split)


def test_export_and_validate_warn_when_the_estimate_is_over_the_budget(tmp_path, capsys):
    out = tmp_path / "r.toml"
    assert main(["export", "--model", "llama-3.1-8b", "--method", "rslora", "--vram", "24", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: the recipe: its estimate" in err and "is over the 24.00 GiB budget" in err
    assert "recommend --model llama-3.1-8b --vram 24 --methods rslora --seq 512 --batch 4 --rank 16 --export FILE" in err
    assert main(["validate", str(out)]) == 0
    assert f"warning: {out}: its estimate" in capsys.readouterr().err
    assert main(["export", "--model", "llama-3.1-8b", "--method", "qlora", "--vram", "24", "--grad-ckpt", "--batch", "1",
                 "-o", str(tmp_path / "ok.toml")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_export_records_a_gpu_by_name_not_by_index(capsys):
    assert main(["export", "--gpu", "0", "--no-estimate"]) == ExitCode.USAGE
    assert "is a GPU index; a recipe records the GPU's name" in capsys.readouterr().err
    assert main(["export", "--gpu-name", "RTX 4090", "--no-estimate"]) == 0
    assert rc.loads(capsys.readouterr().out).budget.gpu == "RTX 4090"


def test_validate_ok_and_bad(tmp_path, capsys):
    assert main(["validate", str(DEMO_LORA)]) == 0
    assert capsys.readouterr().out == f"ok: {DEMO_LORA} (lora, demo)\n"
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\nlr = "fast"\n', encoding="utf-8")
    assert main(["validate", str(bad)]) == ExitCode.BAD_RECIPE
    err = capsys.readouterr().err
    assert err == f'peft-advisor: {bad}: train.lr: expected a number, got "fast" (line 2)\n'
    assert main(["validate", str(DEMO_LORA), str(bad)]) == ExitCode.BAD_RECIPE
    captured = capsys.readouterr()
    assert captured.out.startswith("ok: ") and "train.lr" in captured.err


def test_write_recipe(tmp_path):
    path = write_recipe(rc.Recipe(), tmp_path / "a" / "r.toml", header="advised for an RTX 4070")
    assert path.read_text(encoding="utf-8").startswith("# advised for an RTX 4070\n")
    assert rc.load(path) == rc.Recipe()


# ---------------------------------------------------------------- validate: CUDA on this machine

DEMO = DEMO_LORA.parent


def _probe_says(monkeypatch, found: bool) -> list[int]:
    from peft_advisor.core.hardware import ProbeResult

    calls = []
    monkeypatch.setattr("peft_advisor.probe.probe", lambda: calls.append(1) or ProbeResult(ok=found))
    return calls


def test_validate_warns_when_the_recipe_needs_cuda_and_there_is_none(monkeypatch, capsys):
    calls = _probe_says(monkeypatch, False)
    assert main(["validate", str(DEMO / "qlora.toml"), str(DEMO / "lora.toml")]) == ExitCode.OK
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"ok: {DEMO / 'qlora.toml'} (qlora, demo)", f"ok: {DEMO / 'lora.toml'} (lora, demo)"]
    assert err.splitlines() == [f"peft-advisor: warning: {DEMO / 'qlora.toml'}: method qlora needs an NVIDIA GPU "
                                "with CUDA (bitsandbytes), and this machine has none: train will refuse it here"]
    assert calls == [1]  # probed once, and only for the recipe that needs it


def test_validate_says_nothing_more_when_cuda_is_there(monkeypatch, capsys):
    _probe_says(monkeypatch, True)
    assert main(["validate", str(DEMO / "qlora.toml")]) == ExitCode.OK
    assert capsys.readouterr().err == ""


def test_validate_warns_for_a_cuda_switch(monkeypatch, tmp_path, capsys):
    calls = _probe_says(monkeypatch, False)
    path = rc.save(rc.updated(rc.load(DEMO / "galore.toml"), {"method.galore_8bit": True}), tmp_path / "g.toml")
    assert main(["validate", str(DEMO / "galore.toml")]) == ExitCode.OK
    assert capsys.readouterr().err == "" and calls == []  # plain GaLore runs on the CPU: no probe at all
    assert main(["validate", str(path)]) == ExitCode.OK
    assert "with galore_8bit = true needs an NVIDIA GPU with CUDA" in capsys.readouterr().err


@pytest.mark.skipif(HAS_GPU, reason="this machine has CUDA: no warning to see")
def test_validate_cuda_warning_through_the_console():
    proc = subprocess.run([sys.executable, "-m", "peft_advisor", "validate", str(DEMO / "qlora.toml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.startswith("ok: ")
    assert proc.stderr.startswith("peft-advisor: warning: ") and "needs an NVIDIA GPU with CUDA" in proc.stderr
