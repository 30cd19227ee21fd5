"""Recipes: strict parsing with one-line messages, commented round-tripping TOML, atomic saves."""

from __future__ import annotations

import os
from dataclasses import fields, replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from peft_advisor.core import recipe as rc
from peft_advisor.core.errors import ExitCode, UserError

MINE = '[model]\nid = "mine"  # a recipe someone wrote (--force replaces only recipes)\n'


def _error(text: str) -> UserError:
    with pytest.raises(UserError) as info:
        rc.loads(text)
    assert info.value.code == ExitCode.BAD_RECIPE
    return info.value


# ---------------------------------------------------------------- round trip


def test_defaults_round_trip():
    r = rc.Recipe()
    assert rc.loads(rc.dumps(r)) == r


def test_tricky_values_round_trip():
    r = rc.Recipe(
        model=rc.ModelSection(id='C:\\models\\my "best" model\tv2 é ✓', dtype="float16"),
        method=rc.MethodSection(name="dora", rank=7, alpha=3, dropout=0.05, targets=("q_proj", "v_proj")),
        data=rc.DataSection(path="data/x.jsonl", prompt_template="Q: {instruction}\n\x01A:", eval_split=37),
        train=rc.TrainSection(lr=1e-5, warmup_ratio=0.1 + 0.2, weight_decay=1e20, epochs=2.5, max_steps=0),
        budget=rc.BudgetSection(vram_gib=23.99, adapter_mb=12.5, gpu="NVIDIA GeForce RTX 4090"),
        estimate=rc.EstimateSection(peak_bytes=19213238272, adapter_bytes=13002342, trainable_params=4_718_592),
    )
    text = rc.dumps(r)
    assert rc.loads(text) == r
    assert rc.toml_loads(text)["train"]["lr"] == 1e-5


@pytest.mark.parametrize("x, text", [(2e-4, "0.0002"), (1e-5, "1e-5"), (1.0, "1.0"), (1e20, "1e20"), (0.1, "0.1")])
def test_floats_are_written_readably(x, text):
    assert rc.fmt_float(x) == text
    assert rc.toml_loads(f"x = {text}")["x"] == x


def test_dumps_comments_every_key():
    text = rc.dumps(rc.Recipe())
    assert "rank = 16  # higher" not in text  # aligned, not a fixed two spaces
    for line in text.splitlines():
        if "=" in line and not line.startswith("#") and not line.startswith("version"):
            assert "  # " in line, line
    assert "# LoRA-family rank; higher: better fit, more memory, larger adapter" in text


def test_every_field_has_a_docstring():
    for section_field in fields(rc.Recipe):
        if section_field.name == "version":
            continue
        cls = type(getattr(rc.Recipe(), section_field.name))
        _, notes = rc._notes(cls)
        assert set(notes) == {f.name for f in fields(cls)}, cls.__name__


def test_header_becomes_comments():
    text = rc.dumps(rc.Recipe(), header="line one\nline two")
    assert text.startswith("# line one\n# line two\n")
    assert rc.loads(text) == rc.Recipe()


def test_to_dict_is_json_able():
    import json

    r = rc.Recipe(method=rc.MethodSection(targets=("q_proj",)))
    assert json.loads(json.dumps(r.to_dict()))["method"]["targets"] == ["q_proj"]


# ---------------------------------------------------------------- one-line errors, exact text

BASE = """\
version = 1
[model]
id = "demo"

[method]
name = "lora"
rnak = 16

[train]
max_steps = 10
micro_batch = 2
lr = "fast"
"""


def test_unknown_key_names_key_suggestion_and_line():
    assert str(_error(BASE)) == "recipe.toml: method.rnak: unknown key; did you mean rank? (line 7)"


def test_wrong_type_names_key_and_line():
    text = BASE.replace("rnak", "rank")
    assert str(_error(text)) == 'recipe.toml: train.lr: expected a number, got "fast" (line 12)'


def test_source_is_the_prefix():
    with pytest.raises(UserError, match=r"^my/recipe\.toml: method\.rnak"):
        rc.loads(BASE, source="my/recipe.toml")


@pytest.mark.parametrize(
    "table, line, message",
    [
        ("method", "rank = 0", "method.rank: must be >= 1, got 0 (line 3)"),
        ("method", "dropout = 1.0", "method.dropout: must be in [0, 1), got 1.0 (line 3)"),
        ("method", "loraplus_lr_ratio = 0.5", "method.loraplus_lr_ratio: must be >= 1, got 0.5 (line 3)"),
        ("method", 'name = "lorra"', 'method.name: unknown value "lorra"; did you mean lora? (line 3)'),
        ("method", 'targets = "all_linear"', 'method.targets: expected "all-linear", "attention", "mlp" or a list'
         ' of module names, got "all_linear"; did you mean all-linear? (line 3)'),
        ("method", "targets = []", 'method.targets: expected "all-linear", "attention", "mlp" or a list'
         " of module names, got a list (line 3)"),
        ("method", "rank = 8.0", "method.rank: expected an integer, got 8.0 (line 3)"),
        ("method", "rank = true", "method.rank: expected an integer, got true (line 3)"),
        ("model", 'dtype = "fp8"', 'model.dtype: unknown value "fp8"; expected one of bfloat16, float16, float32 (line 3)'),
        ("model", 'trust_remote_code = "yes"', 'model.trust_remote_code: expected true or false, got "yes" (line 3)'),
        ("model", 'id = ""', "model.id: must not be empty (line 3)"),
        ("train", "lr = 0", "train.lr: must be > 0, got 0.0 (line 3)"),
        ("train", "lr = inf", "train.lr: expected a finite number, got inf (line 3)"),
        ("train", "micro_batch = 0", "train.micro_batch: must be >= 1, got 0 (line 3)"),
        ("train", 'lr_scheduler = "cosine_annealing"', 'train.lr_scheduler: unknown value "cosine_annealing"; did you mean cosine? (line 3)'),
        ("data", "eval_split = 0.5", "data.eval_split: expected a fraction in [0, 0.5) or a row count >= 1, got 0.5 (line 3)"),
        ("data", "eval_split = -1", "data.eval_split: expected a fraction in [0, 0.5) or a row count >= 1, got -1 (line 3)"),
        ("data", 'format = "alpaca"', 'data.format: unknown value "alpaca"; expected one of auto, instruction, chat,'
         " sharegpt, prompt_completion, text (line 3)"),
        ("data", 'prompt_template = "{instruction.__class__}"', "data.prompt_template: template fields must be plain"
         " column names like {instruction}, got {instruction.__class__} (line 3)"),
        ("output", 'report_to = "wandbb"', 'output.report_to: unknown value "wandbb"; did you mean wandb? (line 3)'),
    ],
)
def test_out_of_range_is_one_line(table, line, message):
    err = _error(f"version = 1\n[{table}]\n{line}\n")
    assert str(err) == f"recipe.toml: {message}"
    assert "\n" not in str(err)


@pytest.mark.parametrize("value, parsed", [("0", 0.0), ("0.25", 0.25), ("1", 1), ("200", 200)])
def test_eval_split_takes_fraction_or_count(value, parsed):
    r = rc.loads(f"[data]\neval_split = {value}\n")
    assert r.data.eval_split == parsed and type(r.data.eval_split) is type(parsed)


def test_unknown_table_and_top_level_key():
    assert str(_error("version = 1\n\n[trian]\nlr = 1e-4\n")) == (
        "recipe.toml: trian: unknown table; did you mean train? (line 3)"
    )
    assert str(_error('methd = "lora"\n')) == "recipe.toml: methd: unknown key; did you mean method? (line 1)"
    assert str(_error('model = "demo"\n')) == 'recipe.toml: model: expected a table, got "demo" (line 1)'


def test_unsupported_version():
    assert str(_error("version = 2\n")) == (
        "recipe.toml: version: unsupported recipe version 2; this peft-advisor reads version 1 (line 1)"
    )


def test_syntax_error_is_one_line_with_line_number():
    err = _error('version = 1\n[model]\nid = "demo\n')
    assert str(err).startswith("recipe.toml: invalid TOML: ")
    assert "(line 3, column" in str(err) and "\n" not in str(err)


def test_lines_of_dotted_quoted_and_inline_keys():
    text = '# c\n\n"method".rank = 0\n'
    assert str(_error(text)) == "recipe.toml: method.rank: must be >= 1, got 0 (line 3)"
    text = 'version = 1\ntrain = { lr = "x" }\n'
    assert str(_error(text)) == 'recipe.toml: train.lr: expected a number, got "x" (line 2)'
    text = '[data]\nprompt_template = """\n[method]\nrank = 0\n"""\n[method]\nrank = 0\n'
    assert str(_error(text)) == "recipe.toml: method.rank: must be >= 1, got 0 (line 7)"


def test_first_problem_in_file_order_and_all_problems_listed():
    text = '[method]\nname = "lorra"\n[train]\nmicro_batch = 0\n[trian]\nx = 1\n'
    found = rc.problems(text)
    assert [p.key for p in found] == ["method.name", "train.micro_batch", "trian"]
    assert [p.line for p in found] == [2, 4, 5]
    assert str(_error(text)).startswith("recipe.toml: method.name:")
    assert rc.problems("[x") and rc.problems("[x")[0].key == ""


def test_missing_keys_take_defaults():
    assert rc.loads("") == rc.Recipe()
    assert rc.loads('[method]\nname = "vera"\n').method == rc.MethodSection(name="vera")


def test_list_targets_become_a_tuple():
    r = rc.loads('[method]\ntargets = ["q_proj", "v_proj"]\n')
    assert r.method.targets == ("q_proj", "v_proj")


# ---------------------------------------------------------------- cross-field rules


def test_qlora_turns_on_4bit():
    assert rc.loads('[method]\nname = "qlora"\n').model.load_in_4bit is True


def test_4bit_only_for_qlora():
    err = _error('[model]\nload_in_4bit = true\n[method]\nname = "lora"\n')
    assert str(err) == 'recipe.toml: model.load_in_4bit: true only for method "qlora" (method.name is "lora") (line 2)'


def test_layerwise_galore_needs_grad_accum_1():
    text = '[method]\nname = "galore"\ngalore_layerwise = true\n[train]\ngrad_accum = 4\n'
    assert str(_error(text)) == (
        "recipe.toml: train.grad_accum: must be 1 with method.galore_layerwise = true, got 4 (line 5)"
    )
    assert rc.loads(text.replace("4", "1")).method.galore_layerwise


def test_epochs_needed_without_max_steps():
    err = _error("[train]\nmax_steps = 0\nepochs = 0\n")
    assert str(err) == "recipe.toml: train.epochs: must be > 0 when train.max_steps = 0 (line 3)"


def test_validate_checks_recipes_built_in_code():
    assert rc.validate(rc.Recipe()) == []
    bad = rc.Recipe(method=rc.MethodSection(rank=0), train=rc.TrainSection(lr_scheduler="nope"))
    assert rc.validate(bad) == [
        "method.rank: must be >= 1, got 0",
        'train.lr_scheduler: unknown value "nope"; expected one of linear, cosine, constant, constant_with_warmup',
    ]


def test_updated_checks_each_change():
    r = rc.updated(rc.Recipe(), {"method.rank": 8, "train.lr": 1e-4, "method.targets": ["q_proj"]})
    assert (r.method.rank, r.train.lr, r.method.targets) == (8, 1e-4, ("q_proj",))
    with pytest.raises(UserError, match=r"^method\.rank: must be >= 1, got 0$"):
        rc.updated(r, {"method.rank": 0})
    with pytest.raises(UserError, match=r"^trian\.lr: unknown key; did you mean train\?$"):
        rc.updated(r, {"trian.lr": 1.0})
    assert rc.updated(r, {"method.name": "qlora"}).model.load_in_4bit
    assert rc.updated(r, {"version": 1}) == r
    with pytest.raises(UserError, match=r"^version: unsupported recipe version 2"):
        rc.updated(r, {"version": 2})
    with pytest.raises(UserError, match=r"^model: a table, not a key; set one of its keys, e.g. model\.id$"):
        rc.updated(r, {"model": 1})


# ---------------------------------------------------------------- safety


def test_reading_never_enables_remote_code():
    for text in ("", '[method]\nname = "qlora"\n', '[model]\nid = "some/hub-model"\n'):
        assert rc.loads(text).model.trust_remote_code is False
    assert rc.loads("[model]\ntrust_remote_code = true\n").model.trust_remote_code is True


def test_reader_has_no_code_paths():
    """Recipes refer to methods by id; the module never evaluates or imports what a file says."""
    source = Path(rc.__file__).read_text(encoding="utf-8")
    for word in ("eval(", "exec(", "import_module", "__import__", "pickle", "subprocess"):
        assert word not in source, word


# ---------------------------------------------------------------- files


def test_save_and_load(tmp_path):
    r = rc.updated(rc.Recipe(), {"method.name": "vera"})
    path = rc.save(r, tmp_path / "sub" / "r.toml")
    assert rc.load(path) == r
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert [p.name for p in path.parent.iterdir()] == ["r.toml"]


def test_save_refuses_to_overwrite(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(MINE, encoding="utf-8")
    with pytest.raises(UserError) as info:
        rc.save(rc.Recipe(), path)
    assert info.value.code == ExitCode.EXISTS
    assert path.read_text(encoding="utf-8") == MINE
    rc.save(rc.Recipe(), path, force=True)
    assert rc.load(path) == rc.Recipe()


def test_save_wants_a_file_name(tmp_path):
    for path, words in ((tmp_path, "is a folder"), ("", "no recipe file name given")):
        for force in (False, True):
            with pytest.raises(UserError, match=words) as info:
                rc.save(rc.Recipe(), path, force=force)
            assert info.value.code == ExitCode.USAGE
    assert list(tmp_path.iterdir()) == []


def test_an_empty_file_is_not_a_recipe(tmp_path):
    """A string with no keys is all defaults (for code); an empty file is refused."""
    for text in ("", "\n# only a comment\n"):
        (tmp_path / "r.toml").write_text(text, encoding="utf-8")
        with pytest.raises(UserError, match=r"r\.toml: empty recipe \(no keys\)") as info:
            rc.load(tmp_path / "r.toml")
        assert info.value.code == ExitCode.BAD_RECIPE


def test_a_byte_order_mark_is_read_past(tmp_path):
    (tmp_path / "r.toml").write_bytes(b"\xef\xbb\xbf" + b'[method]\nname = "vera"\n')  # as Windows editors save
    assert rc.load(tmp_path / "r.toml").method.name == "vera"


def test_shapes_have_sanity_ceilings():
    with pytest.raises(UserError, match=r"^method\.rank: must be <= 65536, got 99999999999999999$"):
        rc.updated(rc.Recipe(), {"method.rank": 99999999999999999})
    with pytest.raises(UserError, match=r"^data\.max_seq_len: must be <= 1048576"):
        rc.updated(rc.Recipe(), {"data.max_seq_len": 10**11})
    assert rc.updated(rc.Recipe(), {"method.rank": 65536, "train.micro_batch": 65536}).method.rank == 65536
    with pytest.raises(UserError, match=r"^train\.max_steps: too large for a recipe \(64-bit integers\)"):
        rc.updated(rc.Recipe(), {"train.max_steps": 10**23})
    with pytest.raises(UserError, match=r"^train\.seed: must be <= 4294967295"):  # numpy's seed range
        rc.updated(rc.Recipe(), {"train.seed": 2**32})


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "r.toml"
    path.write_text(MINE, encoding="utf-8")

    def crash(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(UserError, match="No space left on device"):
        rc.save(rc.Recipe(), path, force=True)
    assert path.read_text(encoding="utf-8") == MINE
    assert [p.name for p in tmp_path.iterdir()] == ["r.toml"]


def test_load_errors(tmp_path):
    with pytest.raises(UserError, match="no such recipe file") as info:
        rc.load(tmp_path / "missing.toml")
    assert info.value.code == ExitCode.BAD_RECIPE
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(UserError, match="not UTF-8"):
        rc.load(bad)
    bad.write_text("[train]\nlr = -1\n", encoding="utf-8")
    with pytest.raises(UserError, match=rf"^{bad}: train\.lr: must be > 0, got -1\.0 \(line 2\)$"):
        rc.load(bad)


# ---------------------------------------------------------------- from the estimator


def _settings(**kw):
    base = dict(
        method="lora", rank=16, targets="all-linear", batch_size=2, seq_len=1024, grad_ckpt=True,
        grad_accum=4, galore_rank=128, galore_layerwise=False, galore_8bit=False, vera_rank=256,
        vera_save_projection=True,
    )
    return SimpleNamespace(**{**base, **kw})


def test_recipe_from_recommendation():
    est = SimpleNamespace(peak_bytes=9_000_000_000, adapter_bytes=80_000_000, trainable_params=40_000_000)
    r = rc.recipe_from_recommendation(
        "meta-llama/Llama-3.1-8B-Instruct", _settings(method="qlora", rank=32), est,
        vram_gib=12, gpu="NVIDIA GeForce RTX 4070",
    )
    assert r.model.load_in_4bit and r.method.name == "qlora" and r.method.alpha == 64
    assert (r.train.micro_batch, r.train.grad_accum, r.train.grad_ckpt, r.data.max_seq_len) == (2, 4, True, 1024)
    assert r.train.lr == rc.default_lr("qlora")
    assert r.estimate == rc.EstimateSection(9_000_000_000, 80_000_000, 40_000_000)
    assert r.budget.vram_gib == 12.0 and r.output.dir == "runs/llama-3.1-8b-instruct-qlora"
    assert rc.loads(rc.dumps(r)) == r
    assert rc.Recipe.from_settings("demo", _settings(targets=("q_proj",))).method.targets == ("q_proj",)


def test_recipe_from_bad_settings_is_a_user_error():
    with pytest.raises(UserError, match="method.name"):
        rc.recipe_from_recommendation("demo", _settings(method="nope"))


def test_settings_from_recipe_round_trip():
    estimate = pytest.importorskip("peft_advisor.core.estimate")
    r = rc.updated(rc.Recipe(), {"method.name": "galore", "method.galore_rank": 64, "train.micro_batch": 3})
    s = rc.settings_from_recipe(r)
    assert isinstance(s, estimate.Settings)
    assert (s.method, s.galore_rank, s.batch_size, s.seq_len) == ("galore", 64, 3, 512)
    back = rc.recipe_from_recommendation("demo", s, output_dir=r.output.dir, lr=r.train.lr, max_steps=200)
    assert back.method.galore_rank == 64 and back.train.micro_batch == 3


def test_methods_match_the_estimator():
    estimate = pytest.importorskip("peft_advisor.core.estimate")
    assert rc.methods() == tuple(estimate.METHODS)
    assert all(rc.default_lr(m) > 0 for m in estimate.METHODS)


def test_replace_keeps_frozen_sections():
    r = rc.Recipe()
    with pytest.raises(Exception):
        r.method.rank = 3  # type: ignore[misc]
    assert replace(r, method=replace(r.method, rank=3)).method.rank == 3


@pytest.mark.parametrize("key, value", [
    ("method.alpha", 10**9), ("train.epochs", 1e9), ("train.eval_every", 10**9), ("train.save_every", 10**9),
    ("train.log_every", 10**9), ("budget.vram_gib", 1e6), ("budget.adapter_mb", 1e12),
])
def test_counts_and_budgets_have_ceilings(key, value):
    """A digit too many in any count or budget is one line naming the key, not a run of a billion epochs."""
    with pytest.raises(UserError, match=rf"^{key.replace('.', '[.]')}: must be <= "):
        rc.updated(rc.Recipe(), {key: value})
