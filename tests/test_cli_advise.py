"""`recommend` and `estimate` as a user runs them: real subprocesses, exit codes, JSON on stdout."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from peft_advisor.cli import main
from peft_advisor.core.errors import ExitCode


def cli(*args):
    return subprocess.run([sys.executable, "-m", "peft_advisor", *args], capture_output=True, text=True, timeout=60)


def test_recommend_json_is_data_only():
    proc = cli("recommend", "--vram", "24", "--model", "llama-3.2-3b", "--rank", "64", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["recommendations"][0]["method"] == "rsloRA".lower()
    assert data["budget"]["vram_bytes"] == 24 * 2**30


def test_recommend_table_for_a_12_gib_card():
    proc = cli("recommend", "--vram", "12")
    assert proc.returncode == 0, proc.stderr
    assert "Recommended: QLoRA" in proc.stdout and "Ruled out:" in proc.stdout


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["recommend", "--vram", "-3"], ExitCode.USAGE, "positive"),
        (["recommend", "--vram", "100000"], ExitCode.USAGE, "absurd"),
        (["recommend", "--vram", "12", "--model", "llama-3.2-1bb"], ExitCode.UNKNOWN_MODEL, "did you mean llama-3.2-1b"),
        (["recommend", "--vram", "12", "--priority", "fastest"], ExitCode.USAGE, "choose from"),
        (["recommend", "--vram", "4", "--model", "llama-3.1-70b"], ExitCode.DOES_NOT_FIT, "closest is QLoRA"),
        (["estimate", "--method", "dorra"], ExitCode.UNKNOWN_METHOD, "did you mean dora"),
        (["estimate", "--method", "lora", "--model", "/nonexistent/dir"], ExitCode.UNKNOWN_MODEL, "unknown model"),
        (["estimate", "--method", "lora", "--targets", "qkv"], ExitCode.USAGE, "not in"),
        (["recommend", "--vram", "twelve"], ExitCode.USAGE, "invalid float"),
        (["recommend", "--vram", "24", "--targets", "foo"], ExitCode.USAGE, "'foo' is not in"),
        (["recommend", "--vram", "24", "--targets", ","], ExitCode.USAGE, "no target module given"),
        (["recommend", "--vram", "24", "--gpus", "0"], ExitCode.USAGE, "--gpus must be >= 1"),
        (["estimate", "--method", "lora", "--gpus", "0"], ExitCode.USAGE, "--gpus must be >= 1"),
        # without --vram every flag is checked before the GPUs are probed: the typo is what is named
        (["recommend", "--targets", "foo"], ExitCode.USAGE, "'foo' is not in"),
        (["recommend", "--priority", "fastest"], ExitCode.USAGE, "choose from"),
        (["recommend", "--methods", "lora,dorra"], ExitCode.UNKNOWN_METHOD, "did you mean dora"),
        (["recommend", "--strategy", "zero"], ExitCode.USAGE, "unknown strategy"),
        (["recommend", "--vram", "12", "--bogus"], ExitCode.USAGE, "peft-advisor: recommend: unrecognized arguments: --bogus"),
        (["estimate", "--method", "lora", "--rank", "999999999"], ExitCode.USAGE, "--rank 999999999 is absurd"),
        (["recommend", "--vram", "12", "--batch", "10000000"], ExitCode.USAGE, "--batch 10000000 is absurd"),
        (["recommend", "--vram", "12", "--adapter-mb", "inf"], ExitCode.USAGE, "--adapter-mb inf is absurd"),
        (["recommend", "--vram", "12", "--adapter-mb", "nan"], ExitCode.USAGE, "--adapter-mb must be a positive number"),
        (["estimate"], ExitCode.USAGE, "peft-advisor: estimate: the following arguments are required: --method"),
        (["recommend", "--vram", "24", "--gpus", "1000000000000000000000"], ExitCode.USAGE, "--gpus 1000000000000000000000 is absurd"),
        (["estimate", "--method", "lora", "--vram", "0"], ExitCode.USAGE, "--vram must be a positive number of GiB"),
        (["estimate", "--method", "lora", "--optimizer", "adam8"], ExitCode.USAGE, "unknown optimizer 'adam8'"),
        (["estimate", "--method", "galore", "--optimizer", "adamw_8bit"], ExitCode.USAGE, "galore_8bit"),
        (["estimate", "--method", "lora", "--no-techniques", "--fused-loss"], ExitCode.USAGE, "--no-techniques turns every"),
        (["estimate", "--method", "lora", "--grad-ckpt-layers", "4"], ExitCode.USAGE,
         "--grad-ckpt-layers is 4 but gradient checkpointing is off"),
        (["estimate", "--method", "lora", "--grad-ckpt", "--grad-ckpt-layers", "4", "--vram", "24", "--gpus", "2",
          "--strategy", "fsdp"], ExitCode.USAGE, "--grad-ckpt-layers must be 0 with FSDP on several GPUs"),
        (["estimate", "--method", "lora", "--grad-ckpt", "--grad-ckpt-layers", "-1"], ExitCode.USAGE,
         "grad_ckpt_layers must be a whole number >= 0"),
    ],
)
def test_bad_input_is_one_line_and_a_distinct_exit_code(args, code, words, capsys):
    assert main(args) == code
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err
    assert "peft-advisor: peft-advisor" not in err


def test_unsupported_architecture_config(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    assert main(["estimate", "--method", "lora", "--model", str(tmp_path)]) == ExitCode.UNKNOWN_MODEL
    assert "unsupported architecture 'bert'" in capsys.readouterr().err


def test_estimate_json_has_the_documented_keys():
    proc = cli("estimate", "--model", "llama-3.2-1b", "--method", "dora", "--rank", "8", "--batch", "2",
               "--seq", "512", "--grad-ckpt", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    for key in ("peak_bytes", "context_bytes", "adapter_bytes", "trainable_params", "breakdown"):
        assert key in data
    assert data["settings"]["grad_ckpt"] is True and data["settings"]["rank"] == 8


def test_no_gpu_without_vram_says_give_vram():
    from tests.conftest import HAS_GPU

    if HAS_GPU:
        pytest.skip("this machine has a GPU")
    proc = cli("recommend")
    assert proc.returncode == ExitCode.NO_GPU
    assert proc.stderr.strip() == "peft-advisor: no NVIDIA GPU or driver found: give --vram"


def test_recommend_export_writes_a_valid_recipe_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "r.toml"
    proc = cli("recommend", "--vram", "24", "--model", "llama-3.2-3b", "--export", str(out))
    assert proc.returncode == 0, proc.stderr
    assert cli("validate", str(out)).returncode == 0
    before = out.read_text()
    again = cli("recommend", "--vram", "24", "--model", "llama-3.2-3b", "--export", str(out))
    assert again.returncode == ExitCode.EXISTS and out.read_text() == before


def test_estimate_technique_flags_and_cpu_ram():
    proc = cli("estimate", "--model", "gemma-2-2b", "--method", "lora", "--batch", "1", "--seq", "2048", "--vram", "8",
               "--fused-loss", "--liger", "--offload", "--optimizer", "adamw_8bit", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    s = data["settings"]
    assert (s["fused_loss"], s["liger_kernels"], s["offload_activations"], s["optimizer"]) == (True, True, True, "adamw_8bit")
    assert data["cpu_bytes"] > 0 and data["fit"] == "ok"
    text = cli("estimate", "--model", "gemma-2-2b", "--method", "lora", "--seq", "2048", "--batch", "1", "--offload").stdout
    assert "offloaded activations (pinned)" in text and "activations offloaded to CPU" in text


def test_recommend_no_techniques_is_todays_advice():
    on = json.loads(cli("recommend", "--vram", "12", "--json").stdout)["recommendations"][0]
    assert on["settings"]["fused_loss"] and "cpu_bytes" in on and on["technique_savings"]
    proc = cli("recommend", "--vram", "12", "--no-techniques", "--json")
    assert proc.returncode == 0, proc.stderr
    off = json.loads(proc.stdout)["recommendations"]
    assert not any(r["settings"]["fused_loss"] or r["settings"]["optimizer"] != "adamw" for r in off)
    assert off[0]["fit"] == "tight" and off[0]["cpu_bytes"] == 0


def test_zero3_with_offload_is_advised_per_gpu_with_its_cpu_ram(capsys):
    from peft_advisor.cli import main

    assert main(["estimate", "--model", "llama-3.1-8b", "--method", "full", "--vram", "40", "--gpus", "4",
                 "--strategy", "zero3", "--zero-offload", "optimizer"]) == 0
    out = capsys.readouterr().out
    assert "per GPU process: ZeRO's offloaded optimizer states" in out and out.count("CPU RAM") == 1
    assert main(["recommend", "--vram", "40", "--gpus", "4", "--strategy", "zero2", "--zero-offload",
                 "optimizer+params"]) == 2
    assert capsys.readouterr().err.strip() == ('peft-advisor: --zero-offload = "optimizer+params" needs strategy '
                                               '"zero3" (ZeRO-2 does not partition the weights)')


@pytest.mark.parametrize("args, words", [
    (["--method", "lorafa", "--optimizer", "adamw_8bit"], '--optimizer "adamw_8bit" cannot be used with lorafa'),
    (["--method", "galore", "--optimizer", "paged_adamw_8bit"], '--optimizer "paged_adamw_8bit" cannot be used with galore'),
    (["--method", "lora", "--gpus", "2", "--strategy", "zero2", "--optimizer", "adamw_8bit"],
     "cannot be used with DeepSpeed ZeRO-2"),
    (["--method", "lora", "--gpus", "2", "--strategy", "fsdp", "--fused-loss"], "--fused-loss is not supported with FSDP"),
])
def test_estimate_gives_no_figure_for_a_run_train_would_refuse(args, words, capsys):
    """`estimate` and `train` share one rule (core.techniques.recipe_refusals): one line, exit 2."""
    from peft_advisor.cli import main

    assert main(["estimate", "--model", "llama-3.2-1b", "--vram", "24", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and words in captured.err and len(captured.err.strip().splitlines()) == 1


def test_recommend_export_for_the_demo_model_uses_the_fast_settings(tmp_path, capsys):
    """As the app's and `export`'s: a recipe for the demo model trains in minutes, like the shipped one."""
    from peft_advisor.core import recipe as rc

    out = tmp_path / "demo.toml"
    assert main(["recommend", "--model", "demo", "--vram", "4", "--export", str(out)]) == 0
    r = rc.load(out)
    assert (r.data.max_seq_len, r.train.max_steps, r.data.eval_split) == (128, 40, 32)
    assert r.estimate.peak_bytes > 0
