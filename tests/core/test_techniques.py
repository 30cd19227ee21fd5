"""The memory-saving techniques (issue 15, items 2-3): each estimator term moves the way it should,
the ladder tries the cheap ones first, the reasons say what each saved, and `--no-techniques`
gives the advice without them."""

from __future__ import annotations

from dataclasses import asdict, replace
from types import SimpleNamespace

import pytest

from peft_advisor.core import estimate as E
from peft_advisor.core import recipe as rc
from peft_advisor.core.advise import AdviceRequest, advise, card_for, estimate_one, needs
from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.estimate import Settings, estimate
from peft_advisor.core.model_spec import load_preset
from peft_advisor.core.recommend import (TECHNIQUES, Budget, _ladder, available_techniques, describe_knobs,
                                         recommend)
from peft_advisor.core.units import GIB

LLAMA_1B = load_preset("llama-3.2-1b")
GEMMA_2B = load_preset("gemma-2-2b")


# ---------------------------------------------------------------- the estimator, term by term


def test_fused_loss_chunk_follows_liger():
    # Llama 3.2 1B: ceil(128256 / 2048) = 63; ceil(2048 / 63) = 33 -> next power of two 64
    assert E.fused_loss_chunk_tokens(LLAMA_1B, Settings("lora", seq_len=2048)) == 64
    assert E.fused_loss_chunk_tokens(LLAMA_1B, Settings("lora", seq_len=8, batch_size=1)) == 1
    # never more than the tokens there are
    wide = replace(LLAMA_1B, vocab_size=1000)
    assert E.fused_loss_chunk_tokens(wide, Settings("lora", seq_len=100)) == 100


def test_fused_loss_removes_the_whole_vocabulary_logits():
    """With liger_kernels on, Liger's loss runs: one chunk. Without, the machine decides (Liger where
    installed, else the chunked PyTorch loss): the larger of the two is counted."""
    s = Settings("lora", seq_len=2048, batch_size=1)
    plain = E.components(LLAMA_1B, s)
    liger = E.components(LLAMA_1B, replace(s, fused_loss=True, liger_kernels=True))
    either = E.components(LLAMA_1B, replace(s, fused_loss=True))
    T, V, H = s.tokens, LLAMA_1B.vocab_size, LLAMA_1B.hidden_size
    assert plain["logits"] == 12 * T * V
    assert liger["logits"] == 64 * V * 2 + T * H * 2 + T * 4  # one bf16 chunk, bf16 grad of the hidden states, losses
    chunk = (2**26 // V) * V  # 523 tokens of 128k logits: bf16 logits and grad, fp32 copy, log-softmax, grad
    assert either["logits"] == chunk * (2 * 2 + 12) + T * H * 2
    assert plain["logits"] - either["logits"] > 0.6 * 12 * T * V  # a quarter of the tokens a chunk
    assert {k: v for k, v in either.items() if k != "logits"} == {k: v for k, v in plain.items() if k != "logits"}
    # full fine-tuning: both also hold the output projection's gradient
    full = E.components(LLAMA_1B, replace(s, method="full", fused_loss=True))
    assert full["logits"] == either["logits"] + V * H * 2
    assert estimate(LLAMA_1B, replace(s, fused_loss=True)).peak_bytes < estimate(LLAMA_1B, s).peak_bytes


def test_liger_kernels_shrink_norms_and_the_mlp():
    s = Settings("lora", seq_len=1024)
    h, i = LLAMA_1B.hidden_size, LLAMA_1B.intermediate_size
    saved = E._act_bytes_per_token_layer(LLAMA_1B, s) - E._act_bytes_per_token_layer(LLAMA_1B, replace(s, liger_kernels=True))
    # two norms keep bf16 input + fp32 rstd instead of an fp32 copy; SwiGLU keeps gate and up only
    assert saved == 2 * (4 * h - (2 * h + 4)) + 2 * i
    assert estimate(LLAMA_1B, replace(s, liger_kernels=True)).peak_bytes < estimate(LLAMA_1B, s).peak_bytes


def test_eight_bit_states_are_a_quarter_and_paged_keeps_the_bytes():
    s = Settings("lora", seq_len=1024)
    adamw = E.components(LLAMA_1B, s)["optimizer"]
    eight = E.components(LLAMA_1B, replace(s, optimizer="adamw_8bit"))["optimizer"]
    assert 0.25 <= eight / adamw < 0.26  # 1 byte a moment plus an fp32 absmax per 256
    assert E.components(LLAMA_1B, replace(s, optimizer="paged_adamw"))["optimizer"] == adamw
    assert E.components(LLAMA_1B, replace(s, optimizer="paged_adamw_8bit"))["optimizer"] == eight
    full = E.components(LLAMA_1B, Settings("full"))["optimizer"]  # bf16 states: 8-bit halves them
    assert E.components(LLAMA_1B, Settings("full", optimizer="adamw_8bit"))["optimizer"] < 0.51 * full


@pytest.mark.parametrize("ckpt", [False, True])
def test_offloaded_activations_leave_the_card_for_cpu_ram(ckpt):
    s = Settings("lora", seq_len=2048, grad_ckpt=ckpt)
    on = replace(s, offload_activations=True)
    plain, off = E.components(LLAMA_1B, s), E.components(LLAMA_1B, on)
    block = E._saved_per_block_bytes(LLAMA_1B, s, ckpt)
    blocks = (LLAMA_1B.num_layers - E.OFFLOAD_BLOCKS_ON_GPU) * block
    assert off["acts"] + blocks == plain["acts"] and plain["cpu"] == 0
    T, H, V = s.tokens, LLAMA_1B.hidden_size, LLAMA_1B.vocab_size
    final_and_loss = T * E._norm_saved_bytes(s, H) + T * H * 2 + T * V * 4  # + the fp32 log-softmax
    assert off["cpu"] == blocks + final_and_loss
    fused = E.components(LLAMA_1B, replace(on, fused_loss=True))["cpu"]
    assert fused == blocks + T * E._norm_saved_bytes(s, H) + T * H * 2
    est = estimate(LLAMA_1B, on)
    assert est.cpu_bytes == off["cpu"] and est.to_dict()["cpu_bytes"] == off["cpu"]
    assert estimate(LLAMA_1B, s).cpu_bytes == 0


@pytest.mark.parametrize("method", ["lora", "qlora", "dora", "full", "vera"])
def test_every_technique_on_keeps_the_breakdown_summing_to_the_peak(method):
    s = Settings(method, seq_len=1024, batch_size=2, fused_loss=True, liger_kernels=True, offload_activations=True,
                 optimizer="paged_adamw_8bit")
    est = estimate(LLAMA_1B, s)
    assert sum(est.breakdown.values()) == est.peak_bytes
    assert est.peak_bytes < estimate(LLAMA_1B, Settings(method, seq_len=1024, batch_size=2)).peak_bytes


@pytest.mark.parametrize("kw, words", [
    (dict(optimizer="adam8"), "unknown optimizer 'adam8'"),
    (dict(fused_loss="yes"), "fused_loss must be true or false"),
])
def test_bad_technique_settings_are_one_line(kw, words):
    with pytest.raises(UserError) as err:
        Settings(**{"method": "lora", **kw})
    assert words in str(err.value) and err.value.code == ExitCode.USAGE


# ---------------------------------------------------------------- the ladder


def test_ladder_tries_the_cheap_techniques_before_checkpointing():
    s = Settings("lora", batch_size=4)
    steps = [adj[-1] for _, adj in _ladder(s, techniques=TECHNIQUES) if adj]
    assert steps[:6] == ["fused loss on", "Liger kernels on", "8-bit AdamW", "gradient checkpointing on",
                         "activations offloaded to CPU on", "micro-batch 2 × 2 accumulation steps"]
    plain = [adj[-1] for _, adj in _ladder(s) if adj]
    assert plain[0] == "gradient checkpointing on" and not any("fused" in a or "Liger" in a for a in plain)
    galore = [a for _, adj in _ladder(Settings("galore"), techniques=TECHNIQUES) for a in adj]
    assert "8-bit AdamW" not in galore  # GaLore has its own 8-bit form


def test_techniques_only_on_a_cuda_card_and_liger_only_where_it_patches():
    assert available_techniques(LLAMA_1B, cuda=True) == TECHNIQUES
    assert available_techniques(LLAMA_1B, cuda=False) == ()
    assert available_techniques(LLAMA_1B, cuda=True, enabled=False) == ()
    other = replace(LLAMA_1B, model_type="olmo")
    assert "liger_kernels" not in available_techniques(other, cuda=True)
    assert card_for(AdviceRequest(vram_gib=8), None).cuda
    assert not card_for(AdviceRequest(), None, required=False).cuda


def gemma_on_8_gib(techniques):
    return recommend(GEMMA_2B, Budget(8 * GIB, None, "test", 8 * GIB), seq_len=2048, batch_size=1,
                     methods=("lora",), techniques=techniques)


def test_gemma2_2b_lora_on_8_gib_fits_with_the_fused_loss_and_says_so():
    # measured on an H100: 13.3 GiB peak at 1 x 2048 with checkpointing; 5.9 GiB of it the loss
    assert not gemma_on_8_gib(()).recommendations  # today: nothing fits
    advice = gemma_on_8_gib(TECHNIQUES)
    rec = advice.best
    assert rec.method == "lora" and rec.settings.fused_loss and rec.fit == "ok"
    assert rec.adjustments[0] == "fused loss on"
    saved = dict(rec.savings)
    assert saved["fused loss"] > 5 * GIB  # 12 bytes x 2048 tokens x 256k vocabulary, and more
    line = next(r for r in rec.reasons if r.startswith("techniques:"))
    assert "fused loss: −" in line and "GiB" in line and "without them ruled out" in line
    assert rec.to_dict()["technique_savings"]["fused loss"] == saved["fused loss"]


def test_a_method_that_needed_checkpointing_fits_without_it_and_the_reason_says_so():
    budget = Budget(26 * GIB, None, "test", 26 * GIB)
    plain = recommend(LLAMA_1B, budget, seq_len=2048, batch_size=4, methods=("lora",))
    assert plain.best.settings.grad_ckpt
    rec = recommend(LLAMA_1B, budget, seq_len=2048, batch_size=4, methods=("lora",), techniques=TECHNIQUES).best
    assert not rec.settings.grad_ckpt and rec.settings.fused_loss
    assert any("without them it would need gradient checkpointing on" in r for r in rec.reasons)


@pytest.mark.parametrize("model", ["llama-3.2-1b", "qwen2.5-1.5b", "llama-3.2-3b"])
def test_on_12_gib_the_techniques_buy_a_larger_micro_batch(model):
    """Issue 15's advice-side target on a 12 GiB card, 1B-3B, 4 x 2048 tokens: with the techniques
    the top method trains the whole batch at once where without them it needed accumulation (the
    GPU side, that none of it runs out of memory, is bench/fits.py's)."""
    req = dict(vram_gib=12, model=model, seq_len=2048, batch_size=4)
    on, off = advise(AdviceRequest(**req)).best, advise(AdviceRequest(techniques=False, **req)).best
    assert off.settings.batch_size < 4 and on.settings.batch_size == 4 and on.fit == "ok"
    assert on.settings.batch_size * on.settings.grad_accum == off.settings.batch_size * off.settings.grad_accum == 4


def test_no_techniques_gives_the_advice_without_them():
    req = dict(vram_gib=12, model="llama-3.2-3b", seq_len=2048)
    off = advise(AdviceRequest(techniques=False, **req))
    spec = load_preset("llama-3.2-3b")
    today = recommend(spec, Budget(12 * GIB, None, "--vram 12", 12 * GIB), seq_len=2048, batch_size=4)
    assert [r.to_dict() for r in off.recommendations] == [r.to_dict() for r in today.recommendations]
    assert not any(r.savings or r.settings.fused_loss for r in off.recommendations)
    on = advise(AdviceRequest(**req))
    assert any(r.settings.fused_loss for r in on.recommendations)
    assert needs(AdviceRequest(model="llama-3.2-3b", techniques=False))["lora"][0] > needs(AdviceRequest(model="llama-3.2-3b"))["lora"][0]


def test_estimate_one_without_techniques_turns_them_off():
    s = Settings("lora", fused_loss=True, offload_activations=True)
    assert estimate_one(AdviceRequest(vram_gib=24), s).estimate.settings.fused_loss
    off = estimate_one(AdviceRequest(vram_gib=24, techniques=False), s).estimate
    assert not off.settings.fused_loss and off.cpu_bytes == 0


def test_offloaded_activations_must_fit_the_free_ram():
    req = AdviceRequest(vram_gib=9, methods=("qlora",))
    roomy = advise(req, ram=lambda: 256 * GIB)
    assert roomy.best.settings.offload_activations
    assert any(r.startswith("CPU RAM:") and "free" in r for r in roomy.best.reasons)
    short = advise(req, ram=lambda: 1)
    assert not short.recommendations
    assert "of CPU RAM for offloaded activations (pinned)" in short.ruled_out[0].reason
    assert advise(req, ram=lambda: None).best.settings.offload_activations  # RAM unknown: not checked
    # each GPU's process pins its own activations: the free RAM is shared by the run's GPUs
    assert advise(AdviceRequest(vram_gib=24, gpus=2), ram=lambda: 64 * GIB).budget.ram_bytes == 32 * GIB
    assert advise(AdviceRequest(vram_gib=24, techniques=False), ram=lambda: 64 * GIB).budget.ram_bytes is None


def test_settings_words_name_the_techniques():
    s = Settings("lora", fused_loss=True, liger_kernels=True, optimizer="paged_adamw_8bit", offload_activations=True)
    assert describe_knobs(s)[1:] == ["fused loss", "Liger kernels", "paged 8-bit AdamW", "activations offloaded to CPU"]
    assert describe_knobs(Settings("lora")) == ["micro-batch 1"]


def test_recommend_json_carries_the_techniques_and_cpu_bytes():
    d = advise(AdviceRequest(vram_gib=12)).to_dict()
    best = d["recommendations"][0]
    for key in ("fused_loss", "liger_kernels", "offload_activations", "optimizer"):
        assert key in best["settings"]
    assert "cpu_bytes" in best and best["settings"]["fused_loss"] is True


# ---------------------------------------------------------------- recipes


def test_settings_from_recipe_reads_the_technique_keys():
    recipe = rc.recipe_from_recommendation("llama-3.2-1b", Settings("lora"))
    train = SimpleNamespace(**{**asdict(recipe.train), "fused_loss": True, "liger_kernels": True,
                               "offload_activations": True, "optimizer": "adamw_8bit"})
    s = rc.settings_from_recipe(SimpleNamespace(method=recipe.method, data=recipe.data, train=train))
    assert (s.fused_loss, s.liger_kernels, s.offload_activations, s.optimizer) == (True, True, True, "adamw_8bit")
    plain = rc.settings_from_recipe(recipe)  # a recipe from before the keys: all off
    assert (plain.fused_loss, plain.liger_kernels, plain.offload_activations, plain.optimizer) == (False, False, False, "adamw")


def test_recipe_round_trip_keeps_the_technique_keys():
    s = Settings("lora", seq_len=1024, fused_loss=True, liger_kernels=True, offload_activations=True,
                 optimizer="paged_adamw_8bit")
    recipe = rc.recipe_from_recommendation("llama-3.2-1b", s)
    assert recipe.train.fused_loss and recipe.train.optimizer == "paged_adamw_8bit"
    back = rc.settings_from_recipe(rc.loads(rc.dumps(recipe)))
    assert (back.fused_loss, back.liger_kernels, back.offload_activations, back.optimizer) == \
        (True, True, True, "paged_adamw_8bit")


def test_exported_recipes_carry_the_advice_techniques_or_none(tmp_path, capsys):
    from peft_advisor.cli import main

    on, off = tmp_path / "on.toml", tmp_path / "off.toml"
    assert main(["recommend", "--vram", "12", "--export", str(on)]) == 0
    assert main(["recommend", "--vram", "12", "--no-techniques", "--export", str(off)]) == 0
    assert rc.load(on).train.fused_loss and not rc.load(off).train.fused_loss
    assert rc.settings_from_recipe(rc.load(on)).fused_loss
    capsys.readouterr()
    assert main(["export", "--model", "llama-3.2-1b", "--set", "train.fused_loss=true", "--no-techniques"]) == 0
    assert not rc.loads(capsys.readouterr().out).train.fused_loss
