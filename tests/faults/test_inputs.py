"""Hostile or broken input: each is one `peft-advisor: ...` line and its exit code, never a traceback.

Files people share or download (recipes, model folders, run folders) can be nested absurdly deep,
hold absurd numbers or be truncated; each test here failed (a traceback, or a run that should
not start) before the fix it names.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peft_advisor.cli import main
from peft_advisor.core import events as ev
from peft_advisor.core import recipe as rc
from peft_advisor.core.errors import ExitCode, UserError

ROOT = Path(__file__).resolve().parents[2]
PRESET = ROOT / "peft_advisor" / "data" / "models" / "llama-3.2-1b.json"
DEEP = 100_000
"""Far past Python's recursion limit, which json and tomllib parse nesting with."""


def deep_list(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


def one_error_line(capsys) -> str:
    """The single stderr line of a refused command (no traceback, nothing on stdout)."""
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("peft-advisor: "), captured.err
    return lines[0]


def model_folder(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(text, encoding="utf-8")
    return folder


# ---------------------------------------------------------------- deep nesting


@pytest.mark.parametrize("shape", ["array", "inline table"])
def test_validate_a_recipe_nested_too_deep(tmp_path, capsys, shape):
    value = deep_list() if shape == "array" else "{a=" * DEEP + "1" + "}" * DEEP
    path = tmp_path / "deep.toml"
    path.write_text(f"version = 1\nx = {value}\n", encoding="utf-8")
    assert main(["validate", str(path)]) == ExitCode.BAD_RECIPE
    assert one_error_line(capsys) == f"peft-advisor: {path}: invalid TOML: nested too deeply"


def test_recipe_problems_and_set_values_survive_deep_nesting():
    """The TUI's import lists problems; `--set` falls back to a string: neither may raise."""
    assert [str(p) for p in rc.problems(f"x = {deep_list()}\n")] == ["invalid TOML: nested too deeply"]
    with pytest.raises(ValueError, match="nested too deeply"):
        rc.toml_loads(f"x = {deep_list()}")


@pytest.mark.parametrize("where", ["top", "inside"])
def test_estimate_a_model_config_nested_too_deep(tmp_path, capsys, where):
    config = deep_list() if where == "top" else '{"model_type": "llama", "x": ' + deep_list() + "}"
    folder = model_folder(tmp_path, config)
    assert main(["estimate", "--method", "lora", "--model", str(folder)]) == ExitCode.UNKNOWN_MODEL
    line = one_error_line(capsys)
    assert "config.json: cannot read config: nested too deeply" in line


def test_an_event_line_nested_too_deep_is_skipped():
    assert ev.parse_line('{"kind": "step", "x": ' + deep_list() + "}") is None
    assert ev.parse_line(deep_list().encode()) is None


def test_monitor_skips_a_deep_event_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    lines = [ev.to_line(ev.make_event("start", t=1, method="lora", model="demo", total_steps=1)),
             '{"kind": "step", "x": ' + deep_list() + "}\n",
             ev.to_line(ev.make_event("end", t=2, status="ok"))]
    (run / "events.jsonl").write_text("".join(lines), encoding="utf-8")
    assert main(["monitor", "--headless", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("start  lora on demo") and "end    ok" in out


def test_a_calibration_line_nested_too_deep_is_skipped(tmp_path):
    from peft_advisor import calibration_store

    path = tmp_path / "calibration.jsonl"
    path.write_text(deep_list() + "\n", encoding="utf-8")
    assert calibration_store.load(path) == []


def test_the_runs_screen_reads_deep_run_and_bench_files_as_broken(tmp_path):
    from peft_advisor.tui import run_index

    (tmp_path / "recipe.toml").write_text(f"x = {deep_list()}\n", encoding="utf-8")
    assert run_index._recipe_method(tmp_path / "recipe.toml") is None
    (tmp_path / "bench.json").write_text(deep_list(), encoding="utf-8")
    with pytest.raises(ValueError, match="nested too deeply"):
        run_index.load_bench(tmp_path)


def test_a_config_with_a_huge_literal_is_unknown_model(tmp_path, capsys):
    folder = model_folder(tmp_path, '{"model_type": "llama", "hidden_size": 1' + "0" * 5000 + "}")
    assert main(["estimate", "--method", "lora", "--model", str(folder)]) == ExitCode.UNKNOWN_MODEL
    assert "cannot read config" in one_error_line(capsys)


# ---------------------------------------------------------------- absurd model shapes


def preset_config(**changes) -> str:
    config = json.loads(PRESET.read_text(encoding="utf-8"))
    config.update(changes)
    return json.dumps(config)


@pytest.mark.parametrize("key", ["num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size",
                                 "num_attention_heads", "num_key_value_heads", "head_dim"])
def test_absurd_model_dimensions_are_refused_by_a_ceiling(tmp_path, capsys, key):
    folder = model_folder(tmp_path, preset_config(**{key: 10**400}))
    assert main(["estimate", "--method", "lora", "--model", str(folder)]) == ExitCode.UNKNOWN_MODEL
    line = one_error_line(capsys)
    assert f"'{key}' = 1000000000" in line and "(401 digits) is over the ceiling" in line
    assert len(line) < 300


@pytest.mark.parametrize("key", ["head_dim", "num_key_value_heads", "max_position_embeddings"])
def test_an_infinite_optional_dimension_is_refused_not_overflowed(tmp_path, capsys, key):
    folder = model_folder(tmp_path, preset_config(**{key: 1e400}).replace("Infinity", "1e400"))
    assert main(["estimate", "--method", "lora", "--model", str(folder)]) == ExitCode.UNKNOWN_MODEL
    assert f"'{key}' = inf (want a positive integer)" in one_error_line(capsys)


def test_the_largest_real_shapes_stay_under_the_ceilings(tmp_path, capsys):
    """Llama 3.1 405B's shapes (126 layers, hidden 16384, MLP 53248) and Gemma 3's vocabulary."""
    big = preset_config(num_hidden_layers=126, hidden_size=16384, intermediate_size=53248, num_attention_heads=128,
                        num_key_value_heads=8, head_dim=128, vocab_size=262144)
    folder = model_folder(tmp_path, big)
    assert main(["estimate", "--method", "lora", "--model", str(folder)]) == 0
    assert "GiB" in capsys.readouterr().out


# ---------------------------------------------------------------- damaged model folders (the trainer)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tests.train.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def tiny_copy(tiny_model_dir, tmp_path) -> Path:
    """A fresh copy of the tiny model, to damage."""
    import shutil

    return Path(shutil.copytree(tiny_model_dir, tmp_path / "tiny"))


def damage_weights(folder: Path, how: str) -> None:
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00garbage" * 100, "empty": b""}[how])


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_damaged_safetensors_is_unknown_model(tiny_copy, how):
    from peft_advisor.train.model import load_model

    damage_weights(tiny_copy, how)
    recipe = rc.updated(rc.Recipe(), {"model.id": str(tiny_copy)})
    with pytest.raises(UserError, match=r"^model\.id: cannot load .*weights file is damaged or truncated") as info:
        load_model(str(tiny_copy), recipe, False)
    assert info.value.code == ExitCode.UNKNOWN_MODEL and "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json"])
def test_a_model_json_nested_too_deep_is_unknown_model(tiny_copy, name):
    from peft_advisor.train.model import load_tokenizer

    (tiny_copy / name).write_text('{"a": ' + deep_list() + "}", encoding="utf-8")
    with pytest.raises(UserError, match=r"^model\.id: cannot load .*: a JSON file in it is nested too deeply$") as info:
        load_tokenizer(str(tiny_copy), False)
    assert info.value.code == ExitCode.UNKNOWN_MODEL


def test_train_on_damaged_weights_is_one_line(tiny_copy, tmp_path, capsys):
    """Through the real child: its reason reaches the user as one line and UNKNOWN_MODEL, no run folder."""
    from tests.train.tiny import sums, write_jsonl

    damage_weights(tiny_copy, "truncated")
    data = write_jsonl(tmp_path / "sums.jsonl", sums(16))
    recipe = rc.save(rc.updated(rc.Recipe(), {"model.id": str(tiny_copy), "data.path": str(data),
                                              "data.max_seq_len": 32, "train.max_steps": 1,
                                              "output.dir": str(tmp_path / "run")}), tmp_path / "r.toml")
    assert main(["train", str(recipe)]) == ExitCode.UNKNOWN_MODEL
    err = [line for line in capsys.readouterr().err.splitlines() if "trainer pid" not in line]
    assert len(err) == 1 and "weights file is damaged or truncated" in err[0], err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- ceilings on what a run asks for


@pytest.mark.parametrize("line, message", [
    ("gpus = 100000", "distributed.gpus: must be <= 1024, got 100000 (line 3)"),
    ("nnodes = 100000", "distributed.nnodes: must be <= 65536, got 100000 (line 3)"),
    ("gpu_ids = [0, 100000]", "distributed.gpu_ids: GPU indices must be below 1024, got 100000 (line 3)"),
    (f"gpu_ids = {[0] * 5000}", "distributed.gpu_ids: GPU indices must be distinct and >= 0, "
                                "got [0, 0, 0, 0, 0, 0, 0, 0, ...] (5000 ids) (line 3)"),
], ids=["gpus", "nnodes", "gpu_ids", "many gpu_ids"])
def test_validate_refuses_absurd_gpu_and_node_counts(tmp_path, capsys, line, message):
    path = tmp_path / "r.toml"
    path.write_text(f"version = 1\n[distributed]\n{line}\n", encoding="utf-8")
    assert main(["validate", str(path)]) == ExitCode.BAD_RECIPE
    assert one_error_line(capsys) == f"peft-advisor: {path}: {message}"


def test_the_gpu_ceilings_still_allow_big_real_runs():
    big = rc.updated(rc.Recipe(), {"distributed.gpus": 1024, "distributed.nnodes": 65536,
                                   "distributed.master_addr": "10.0.0.1"})
    assert rc.world_size(big.distributed) == 1024 * 65536
    assert rc.updated(rc.Recipe(), {"distributed.gpu_ids": [1023, 0]}).distributed.gpu_ids == (1023, 0)


def test_bench_refuses_absurd_steps_at_once(tmp_path, capsys):
    out = tmp_path / "bench"
    demo = ROOT / "recipes" / "demo" / "lora.toml"
    assert main(["bench", str(demo), "--steps", str(10**20), "--out", str(out)]) == ExitCode.USAGE
    assert one_error_line(capsys) == f"peft-advisor: --steps must be <= 10000000, got {10**20}"
    assert not out.exists()


def test_steps_have_one_ceiling_for_bench_and_recipes():
    from peft_advisor.core import bench

    with pytest.raises(UserError, match=r"^--steps must be <= 10000000, got 10000001$"):
        bench.make_budget(rc.Recipe(), 10_000_001, None, 1)
    assert bench.make_budget(rc.Recipe(), 10_000_000, None, 1).steps == 10_000_000
    with pytest.raises(UserError, match=r"^train\.max_steps: must be <= 10000000, got 20000000$"):
        rc.updated(rc.Recipe(), {"train.max_steps": 20_000_000})


def test_empty_methods_means_all_in_bench_as_in_recommend():
    """`--methods "$LIST"` with an empty LIST: recommend has always taken it as the default (all)."""
    from peft_advisor.core import bench

    assert bench.parse_methods("") == bench.parse_methods(None) == list(rc.methods())
    with pytest.raises(UserError):  # a list of nothing but separators is still a typo, as in recommend
        bench.parse_methods(" , ")


# ---------------------------------------------------------------- trust_remote_code from a shared recipe


def remote_code_recipe(tmp_path: Path) -> Path:
    return rc.save(rc.updated(rc.Recipe(), {"model.trust_remote_code": True, "train.max_steps": 1,
                                            "output.dir": str(tmp_path / "run")}), tmp_path / "shared.toml")


STAND_IN = "stand-in launcher: a trainer would start here"


@pytest.fixture
def no_launch(monkeypatch):
    """launch.start fails as a real one can (a UserError): the command got as far as starting a trainer."""
    from peft_advisor import launch

    def start(*args, **kwargs):
        raise UserError(STAND_IN, ExitCode.TRAIN_FAILED)

    monkeypatch.setattr(launch, "start", start)


def test_validate_warns_about_remote_code(tmp_path, capsys):
    path = remote_code_recipe(tmp_path)
    assert main(["validate", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"ok: {path} (lora, demo)\n"
    assert captured.err == (f"peft-advisor: warning: {path}: model.trust_remote_code = true runs Python code shipped "
                            f"with the model (demo); train needs --trust-remote-code to run it\n")


def test_train_refuses_remote_code_from_the_recipe_alone(tmp_path, capsys, no_launch):
    path = remote_code_recipe(tmp_path)
    assert main(["train", str(path)]) == ExitCode.BAD_RECIPE
    assert one_error_line(capsys) == (f"peft-advisor: {path}: model.trust_remote_code = true would run Python code "
                                      f"shipped with the model (demo); pass --trust-remote-code if you trust it")
    assert main(["train", str(path), "--node-rank", "0"]) == ExitCode.BAD_RECIPE
    capsys.readouterr()
    assert main(["train", str(path), "--trust-remote-code"]) == ExitCode.TRAIN_FAILED
    assert one_error_line(capsys) == f"peft-advisor: {STAND_IN}"


def test_the_flag_alone_turns_nothing_on(tmp_path, capsys, no_launch):
    """--trust-remote-code only consents: a recipe that says false is started as it is."""
    path = rc.save(rc.updated(rc.Recipe(), {"output.dir": str(tmp_path / "run")}), tmp_path / "plain.toml")
    before = path.read_bytes()
    assert main(["train", str(path), "--trust-remote-code"]) == ExitCode.TRAIN_FAILED
    assert one_error_line(capsys) == f"peft-advisor: {STAND_IN}"
    assert path.read_bytes() == before


def test_bench_refuses_remote_code_from_the_recipe_alone(tmp_path, capsys, no_launch):
    path, out = remote_code_recipe(tmp_path), tmp_path / "bench"
    args = ["bench", str(path), "--methods", "lora", "--steps", "1", "--out", str(out)]
    assert main(args) == ExitCode.BAD_RECIPE
    assert "pass --trust-remote-code if you trust it" in one_error_line(capsys)
    assert not out.exists()
    assert main([*args, "--trust-remote-code"]) == ExitCode.TRAIN_FAILED  # the candidate's row, not a refusal
    row = json.loads((out / "bench.json").read_text(encoding="utf-8"))["rows"][0]
    assert (row["name"], row["reason"]) == ("lora", STAND_IN)


# ---------------------------------------------------------------- --force replaces recipes only


@pytest.mark.parametrize("name, content", [
    ("model.gguf", b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 4),
    ("pyproject.toml", b'[project]\nname = "mine"\n[tool.ruff]\nline-length = 120\n'),
    ("notes.toml", b"# my notes, all comments\n"),
    ("broken.toml", b"[model\nid = 'x'\n"),
    ("huge.toml", b"version = 1\n" + b"#" * (2 << 20)),
], ids=["binary", "other TOML", "comments only", "not TOML", "too big"])
def test_export_force_refuses_to_replace_what_is_not_a_recipe(tmp_path, capsys, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["export", "--no-estimate", "--force", "-o", str(path)]) == ExitCode.EXISTS
    line = one_error_line(capsys)
    assert line.startswith(f"peft-advisor: {path}: exists and is not a recipe (")
    assert line.endswith("); --force replaces only recipes: remove it or choose another file")
    assert path.read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == [name]


@pytest.mark.parametrize("content", [
    "", "version = 1\n", '[model]\nid = "mine"\n', '[train]\nlr = "fast"\n', "[trian]\nlr = 1\n[model]\n",
], ids=["empty", "version only", "a recipe", "an invalid recipe", "a recipe with a typo"])
def test_export_force_replaces_a_recipe_even_a_broken_one(tmp_path, content):
    path = tmp_path / "r.toml"
    path.write_text(content, encoding="utf-8")
    from peft_advisor.core.advise import DEMO_FAST

    assert main(["export", "--no-estimate", "--force", "-o", str(path)]) == 0
    assert rc.load(path) == rc.updated(rc.Recipe(), {"output.dir": "runs/demo-lora", **DEMO_FAST})
