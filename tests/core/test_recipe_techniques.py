"""The [train] techniques in recipes: written and read back, checked, and carried to and from the
estimator's Settings where it has the same fields (core.techniques; the trainer's side is
tests/train/test_techniques.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from peft_advisor.core import recipe as rc
from peft_advisor.core.errors import UserError

ON = {"train.fused_loss": True, "train.liger_kernels": True, "train.offload_activations": True,
      "train.optimizer": "paged_adamw_8bit"}


def test_defaults_are_off_and_a_recipe_with_them_round_trips():
    t = rc.Recipe().train
    assert (t.fused_loss, t.liger_kernels, t.offload_activations, t.optimizer) == (False, False, False, "adamw")
    recipe = rc.updated(rc.Recipe(), ON)
    assert rc.loads(rc.dumps(recipe)) == recipe


@pytest.mark.parametrize("key, value, needle", [
    ("train.optimizer", "adam_8bit", 'unknown value "adam_8bit"; did you mean adamw_8bit?'),
    ("train.fused_loss", "yes", 'expected true or false, got "yes"'),
])
def test_bad_values_are_one_line(key, value, needle):
    with pytest.raises(UserError, match=needle):
        rc.updated(rc.Recipe(), {key: value})


def test_a_file_with_a_bad_combination_names_the_key_and_line():
    text = rc.dumps(rc.updated(rc.Recipe(), {"method.name": "galore"})).replace('optimizer = "adamw"',
                                                                                 'optimizer = "adamw_8bit"')
    line = next(n for n, row in enumerate(text.splitlines(), 1) if row.startswith("optimizer ="))
    with pytest.raises(UserError, match=rf"train.optimizer: .*its own optimizer.*\(line {line}\)"):
        rc.loads(text)


def settings(**extra):
    base = dict(method="lora", rank=8, targets="all-linear", vera_rank=256, vera_save_projection=True, galore_rank=128,
                galore_layerwise=False, galore_8bit=False, seq_len=256, batch_size=2, grad_accum=1, grad_ckpt=False)
    return SimpleNamespace(**base, **extra)


def test_a_recommendation_with_techniques_makes_a_recipe_with_them():
    recipe = rc.recipe_from_recommendation("demo", settings(fused_loss=True, optimizer="adamw_8bit"))
    assert recipe.train.fused_loss and recipe.train.optimizer == "adamw_8bit" and not recipe.train.liger_kernels
    plain = rc.recipe_from_recommendation("demo", settings()).train  # an estimator without the fields: all off
    assert (plain.fused_loss, plain.liger_kernels, plain.offload_activations, plain.optimizer) == (
        False, False, False, "adamw")


def test_settings_get_the_techniques_they_have_fields_for():
    """Every [train] technique is a field of the estimator's Settings, carried over as the recipe says."""
    made = rc.settings_from_recipe(rc.updated(rc.Recipe(), ON))
    for key in rc.TECHNIQUE_KEYS:
        assert getattr(made, key) == getattr(rc.updated(rc.Recipe(), ON).train, key), key


@pytest.mark.parametrize("change", [{"train.optimizer": "adamw_8bit"}, {"method.oft_block_size": 64}])
def test_resume_refuses_a_changed_optimizer_or_block_size(change, tmp_path):
    """A checkpoint's optimizer states are AdamW's exp_avg or bitsandbytes' state1, never both, and a
    block size shapes the adapter: either change is one line before the model loads, not a KeyError after."""
    from peft_advisor.core.run_folder import RECIPE, check_resumable

    before = rc.updated(rc.Recipe(), {"method.name": "oft"})
    rc.save(before, tmp_path / RECIPE)
    key = next(iter(change))
    with pytest.raises(UserError, match=rf"{key} changed since the run started"):
        check_resumable(tmp_path, rc.updated(before, change))
    check_resumable(tmp_path, before)  # the same recipe resumes
