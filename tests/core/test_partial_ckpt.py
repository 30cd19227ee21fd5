"""Partial gradient checkpointing (`train.grad_ckpt_layers`): the estimate, the speed figure and
the advice that fills the card with it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from peft_advisor.core import recipe as rc
from peft_advisor.core.advise import AdviceRequest, advise
from peft_advisor.core.estimate import Settings, checkpointed_layers, estimate
from peft_advisor.core.model_spec import load_preset
from peft_advisor.core.recommend import CKPT_TIME_FACTOR, fit_of, speed_figure

SMOL = load_preset("smollm2-1.7b")


def test_fewer_checkpointed_blocks_hold_more_and_recompute_less():
    full = Settings("lora", batch_size=4, seq_len=2048, grad_ckpt=True)
    peaks = [estimate(SMOL, replace(full, grad_ckpt_layers=k)).peak_bytes for k in (SMOL.num_layers, 18, 12, 6, 1)]
    assert peaks == sorted(peaks) and len(set(peaks)) == len(peaks)
    none = estimate(SMOL, replace(full, grad_ckpt=False)).peak_bytes
    assert peaks[-1] < none
    for k in (0, SMOL.num_layers, SMOL.num_layers + 5):  # 0 or too many: every block
        assert estimate(SMOL, replace(full, grad_ckpt_layers=k)).peak_bytes == estimate(SMOL, full).peak_bytes
        assert checkpointed_layers(SMOL, replace(full, grad_ckpt_layers=k)) == SMOL.num_layers
    assert checkpointed_layers(SMOL, replace(full, grad_ckpt=False, grad_ckpt_layers=3)) == 0
    assert estimate(SMOL, replace(full, grad_ckpt_layers=6)).checkpointed_share == pytest.approx(6 / SMOL.num_layers)


def test_the_speed_figure_scales_the_recompute_by_the_share():
    s = Settings("lora", grad_ckpt=True)
    assert speed_figure("lora", s) == pytest.approx(CKPT_TIME_FACTOR)
    assert speed_figure("lora", s, 0.5) == pytest.approx(1 + (CKPT_TIME_FACTOR - 1) / 2)
    assert speed_figure("lora", replace(s, grad_ckpt=False)) == pytest.approx(1.0)


def test_the_advice_checkpoints_the_fewest_blocks_that_fit_with_room():
    advice = advise(AdviceRequest(model="smollm2-1.7b", vram_gib=12, seq_len=2048, batch_size=4))
    best = advice.best
    k = best.settings.grad_ckpt_layers
    assert best.fit == "ok" and 0 < k < SMOL.num_layers
    assert f"gradient checkpointing on {k} of {SMOL.num_layers} blocks" in best.adjustments
    assert k > 1  # so that k - 1 blocks is a real setting (0 would mean all of them)
    one_fewer = estimate(SMOL, replace(best.settings, grad_ckpt_layers=k - 1), advice.budget.total_vram_bytes)
    assert fit_of(one_fewer, advice.budget.vram_bytes) != "ok"  # the fewest
    full = estimate(SMOL, replace(best.settings, grad_ckpt_layers=0), advice.budget.total_vram_bytes)
    assert best.estimate.total_bytes > full.total_bytes
    assert best.step_time_vs_lora < speed_figure(best.method, full.settings)
    assert f"checkpointing {k} blocks" in " ".join(best.to_dict()["settings_words"])


def test_the_exported_recipe_carries_the_blocks_and_reads_back():
    best = advise(AdviceRequest(model="smollm2-1.7b", vram_gib=12, seq_len=2048, batch_size=4)).best
    recipe = rc.loads(rc.dumps(rc.recipe_from_recommendation("smollm2-1.7b", best.settings, best.estimate)))
    assert recipe.train.grad_ckpt and recipe.train.grad_ckpt_layers == best.settings.grad_ckpt_layers
    assert rc.settings_from_recipe(recipe).grad_ckpt_layers == best.settings.grad_ckpt_layers


def test_not_under_fsdp_on_several_gpus():
    advice = advise(AdviceRequest(model="smollm2-1.7b", vram_gib=12, seq_len=2048, batch_size=4, gpus=2,
                                  strategy="fsdp"))
    assert all(r.settings.grad_ckpt_layers == 0 for r in advice.recommendations)


def test_not_with_offloading():
    """Qwen3-4B at 4 x 4096 on 16 GiB needs its activations offloaded: every block stays checkpointed."""
    best = advise(AdviceRequest(model="qwen3-4b", vram_gib=16, seq_len=4096, batch_size=4)).best
    assert best.settings.offload_activations and best.settings.grad_ckpt and best.settings.grad_ckpt_layers == 0


def test_offloading_keeps_the_last_blocks_whole_on_the_card():
    """With partial checkpointing the last blocks are the uncheckpointed ones: while offloading,
    the two on the card are whole blocks (OFFLOAD_BLOCKS_ON_GPU), the rest go to pinned RAM."""
    from peft_advisor.core import estimate as E

    s = Settings("lora", batch_size=4, seq_len=2048, grad_ckpt=True, grad_ckpt_layers=12, offload_activations=True)
    whole = E._saved_per_block_bytes(SMOL, s, False)
    final = E._saved_activation_bytes(SMOL, s) - sum(E._blocks_saved_bytes(SMOL, s))
    assert E.components(SMOL, s)["acts"] == E.OFFLOAD_BLOCKS_ON_GPU * whole + final
    one_whole = replace(s, grad_ckpt_layers=SMOL.num_layers - 1)
    assert E.components(SMOL, one_whole)["acts"] == whole + E._saved_per_block_bytes(SMOL, s, True) + final
