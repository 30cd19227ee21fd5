"""After training (issue 14): a portable adapter, a real model card, eval results in
trainer_state.json, `peft-advisor merge` and `peft-advisor try`, end to end on the tiny model.

One LoRA run is trained for the module, from a tiny model laid out as the Hugging Face cache
lays out a Hub download (models--ORG--NAME/snapshots/SHA), so the adapter can name its base by
Hub id while everything stays offline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from peft_advisor.cli import main
from peft_advisor.core import recipe as rc
from peft_advisor.core.errors import ExitCode
from peft_advisor.core.events import read_events, summarize
from tests.train.tiny import save_tiny_model, sums, write_jsonl

HUB_ID = "tiny-org/tiny-llama"
ROOT = Path(__file__).resolve().parents[2]


def cli(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peft_advisor", *map(str, args)], capture_output=True, text=True,
                          input=stdin, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("after")
    model = save_tiny_model(tmp / "hub" / "models--tiny-org--tiny-llama" / "snapshots" / "0123abc")
    data = write_jsonl(tmp / "sums.jsonl", sums(64))
    recipe = rc.save(rc.updated(rc.Recipe(), {
        "model.id": str(model), "method.name": "lora", "method.rank": 4, "method.alpha": 8, "data.path": str(data),
        "data.eval_split": 8, "data.max_seq_len": 32, "train.max_steps": 6, "train.micro_batch": 8,
        "train.lr": 1e-2, "train.warmup_ratio": 0.0, "train.eval_every": 3, "train.save_every": 3,
        "output.dir": str(tmp / "run")}), tmp / "recipe.toml")
    done = cli("train", recipe)
    assert done.returncode == 0, done.stderr
    return tmp / "run"


def test_the_adapter_names_its_base_by_hub_id(run_dir):
    config = json.loads((run_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == HUB_ID
    assert json.loads((run_dir / "checkpoint-3" / "adapter_config.json").read_text())["base_model_name_or_path"] == HUB_ID


def test_eval_results_are_in_trainer_state_as_trainer_logs_them(run_dir):
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    evals = [h for h in history if "eval_loss" in h]
    assert [h["step"] for h in evals] == [0, 3, 6]
    assert all(isinstance(h["eval_accuracy"], float) for h in evals)


def test_the_model_card_is_written_from_the_run(run_dir):
    card = (run_dir / "README.md").read_text()
    summary = summarize(read_events(run_dir / "events.jsonl")[0])
    assert card.startswith(f"---\nbase_model: {HUB_ID}\nlibrary_name: peft\n")
    assert "More Information Needed" not in card
    assert f"# run: LoRA adapter of {HUB_ID}" in card
    for line in ("- rank: 4", "- alpha: 8", "- 6 of 6 steps", "- 56 training rows", "- held out for eval: 8 rows",
                 f"- final training loss: {summary.final_loss:.4f}", f"best {summary.best_eval_loss:.4f}",
                 "peft-advisor train recipe.toml --run-dir another-run", f'from_pretrained("{HUB_ID}")'):
        assert line in card, line
    assert "- eval accuracy (exact match of the answer): " in card


# ---------------------------------------------------------------- merge


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(ids).logits.float()


def test_merge_gives_a_plain_model_with_the_adapter_model_logits(run_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from peft_advisor.train.tuned import load_tuned, open_run

    done = cli("merge", run_dir, "-o", tmp_path / "merged")  # the recipe's dtype: bfloat16
    assert done.returncode == 0, done.stderr
    assert main(["merge", str(run_dir), "-o", str(tmp_path / "merged32"), "--dtype", "float32"]) == 0
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    ids = torch.tensor([tok("12+7 is 19, and 30+4 is 34")["input_ids"]])
    reference = _logits(load_tuned(open_run(run_dir), "float32"), ids)
    merged32 = AutoModelForCausalLM.from_pretrained(tmp_path / "merged32")
    torch.testing.assert_close(_logits(merged32, ids), reference, atol=1e-4, rtol=1e-4)
    merged16 = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert merged16.dtype == torch.bfloat16
    torch.testing.assert_close(_logits(merged16, ids), reference, atol=0.05, rtol=0.02)


def _fake_run(run_dir: Path, tmp_path: Path, **changes) -> Path:
    fake = tmp_path / "fake-run"
    shutil.copytree(run_dir, fake)
    recipe = rc.updated(rc.load(fake / "recipe.toml"), changes)
    (fake / "recipe.toml").write_text(rc.dumps(recipe), encoding="utf-8")
    return fake


def test_a_qlora_adapter_merges_only_with_dequantize(run_dir, tmp_path, capsys):
    fake = _fake_run(run_dir, tmp_path, **{"method.name": "qlora", "model.load_in_4bit": True})
    assert main(["merge", str(fake), "-o", str(tmp_path / "m")]) == ExitCode.USAGE
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "trained on a 4-bit base" in err and "--dequantize" in err
    assert not (tmp_path / "m").exists()
    assert main(["merge", str(fake), "-o", str(tmp_path / "m"), "--dequantize", "--dtype", "float32"]) == 0
    assert (tmp_path / "m" / "config.json").is_file()


def test_merge_refusals_are_one_line(run_dir, tmp_path, capsys):
    full = tmp_path / "full-run"
    full.mkdir()
    (full / "recipe.toml").write_text(rc.dumps(rc.updated(rc.Recipe(), {"method.name": "full"})), encoding="utf-8")
    (full / "config.json").write_text("{}", encoding="utf-8")
    (full / "model.safetensors").write_bytes(b"")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine", encoding="utf-8")
    cases = [
        (["merge", str(full), "-o", str(tmp_path / "o")], ExitCode.USAGE, "there is no adapter to merge"),
        (["merge", str(tmp_path / "nope"), "-o", str(tmp_path / "o")], ExitCode.USAGE, "no such run folder"),
        (["merge", str(mine), "-o", str(tmp_path / "o")], ExitCode.USAGE, "not a run folder (no recipe.toml)"),
        (["merge", str(run_dir), "-o", str(mine)], ExitCode.EXISTS, "already exists; pass --force"),
        (["merge", str(run_dir), "-o", str(mine), "--force"], ExitCode.EXISTS, "is not a model folder"),
        (["merge", str(run_dir), "-o", str(run_dir.parent)], ExitCode.USAGE, "is the run folder or holds it"),
    ]
    for argv, code, words in cases:
        assert main(argv) == code, argv
        err = capsys.readouterr().err
        assert err.startswith("peft-advisor: ") and err.count("\n") == 1 and words in err, err
    assert (mine / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_merge_force_replaces_a_model_folder(run_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}", encoding="utf-8")
    (out / "stale.safetensors").write_bytes(b"old")
    assert main(["merge", str(run_dir), "-o", str(out), "--force", "--dtype", "float32"]) == 0
    assert (out / "model.safetensors").is_file() and not (out / "stale.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or old folder left


# ---------------------------------------------------------------- try


def test_try_prints_tuned_and_base_side_by_side(run_dir):
    done = cli("try", run_dir, "12+7", "--max-new-tokens", "6")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("prompt:\n  12+7\n\ntuned (lora, ")
    assert "\n\nbase (" in out
    assert "Loading weights" not in done.stderr and "FutureWarning" not in done.stderr


def test_try_reads_prompts_from_stdin_and_answers_greedily(run_dir):
    from peft_advisor.cli.try_cmd import Pair, render_prompt
    from peft_advisor.train.tuned import base_path, load_plain, open_run

    done = cli("try", run_dir, "--json", "--max-new-tokens", "6", stdin="12+7\n\n30+4\n")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["prompt"] for r in rows] == ["12+7", "30+4"]
    run = open_run(run_dir)
    pair = Pair(run, str(run_dir))
    assert [list(pair.answer(r["prompt"], 6)) for r in rows] == [[r["tuned"], r["base"]] for r in rows]  # greedy
    text, special = render_prompt(pair.tokenizer, run.recipe, "12+7")
    assert text == "<s>user\n12+7</s>\n<s>assistant\n" and not special  # the chat template, as in training
    base = load_plain(base_path(run), run, "float32")
    assert pair._generate(base, text, special, 6) == rows[0]["base"]  # the adapter turned off is the base


def test_try_bad_input_is_one_line(run_dir, capsys):
    assert main(["try", str(run_dir), "12+7", "--max-new-tokens", "0"]) == ExitCode.USAGE
    assert main(["try", str(run_dir), "  "]) == ExitCode.USAGE
    assert main(["try", str(run_dir / "nope"), "hi"]) == ExitCode.USAGE
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and all(line.startswith("peft-advisor: ") for line in lines)


def test_hub_id_for_each_kind_of_model_id(tmp_path):
    from peft_advisor.train.demo import DEMO_HUB_ID
    from peft_advisor.train.model import hub_id_for

    snapshot = tmp_path / "models--Org--Name-1B" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    assert hub_id_for("demo", "/cache/peft-advisor/smollm2-135m-instruct") == DEMO_HUB_ID
    assert hub_id_for("llama-3.2-1b", "meta-llama/Llama-3.2-1B") == "meta-llama/Llama-3.2-1B"  # a preset's
    assert hub_id_for(str(snapshot), str(snapshot)) == "Org/Name-1B"
    assert hub_id_for(str(tmp_path), str(tmp_path)) is None  # a folder of one's own keeps its path


@pytest.mark.slow
def test_merge_and_try_on_the_demo_model(tmp_path):
    """The shipped SmolLM2-135M demo, end to end: two steps of LoRA, a merge whose logits equal
    the adapter model's, and `try` answering with both."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from peft_advisor.train.tuned import load_tuned, open_run

    recipe = rc.updated(rc.load(ROOT / "recipes" / "demo" / "lora.toml"), {
        "train.max_steps": 2, "train.micro_batch": 2, "train.eval_every": 0, "train.save_every": 0,
        "train.baseline_eval_rows": 0, "data.eval_split": 0, "output.dir": str(tmp_path / "run")})
    done = cli("train", rc.save(recipe, tmp_path / "demo.toml"))
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "run"
    assert main(["merge", str(run_dir), "-o", str(tmp_path / "merged"), "--dtype", "float32"]) == 0
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    ids = torch.tensor([tok("Tom has 12 apples and buys 7 more. How many?")["input_ids"]])
    reference = _logits(load_tuned(open_run(run_dir), "float32"), ids)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    torch.testing.assert_close(_logits(merged, ids), reference, atol=1e-4, rtol=1e-4)
    answered = cli("try", run_dir, "What is 12 plus 7?", "--json", "--max-new-tokens", "8")
    assert answered.returncode == 0, answered.stderr
    row = json.loads(answered.stdout)
    assert row["prompt"] == "What is 12 plus 7?" and isinstance(row["tuned"], str) and isinstance(row["base"], str)
