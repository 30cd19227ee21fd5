"""The advice core: one request, one validation, one call, for both front ends."""

from __future__ import annotations

import pytest

from peft_advisor.core.advise import AdviceRequest, advise, card_for, check, estimate_one, needs
from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.estimate import Settings
from peft_advisor.core.hardware import GpuInfo, ProbeResult
from peft_advisor.core.recommend import FIT_MARGIN, fit_of
from peft_advisor.core.units import GIB

CLI = {"vram_gib": "--vram", "gpus": "--gpus", "batch_size": "--batch"}
APP = {"vram_gib": "VRAM GiB", "gpus": "GPUs", "batch_size": "batch"}


def test_one_set_of_defaults():
    req = AdviceRequest()
    assert (req.model, req.seq_len, req.batch_size, req.rank, req.priority, req.strategy) == (
        "llama-3.1-8b", 1024, 4, 16, "quality", "fsdp")


@pytest.mark.parametrize("labels, words", [(CLI, "--gpus 1000000000000000000000 is absurd"),
                                            (APP, "GPUs 1000000000000000000000 is absurd")])
def test_absurd_gpu_counts_are_refused_in_each_front_ends_words(labels, words):
    with pytest.raises(UserError, match=words) as err:
        check(AdviceRequest(vram_gib=24, gpus=10**21), labels)
    assert err.value.code == ExitCode.USAGE


@pytest.mark.parametrize("field, value, words", [
    ("vram_gib", float("nan"), "must be a positive number of GiB"), ("vram_gib", float("inf"), "is absurd"),
    ("adapter_mb", -1.0, "must be a positive number of MB"), ("seq_len", 0, "must be >= 1"),
    ("batch_size", 10**9, "is absurd"), ("priority", "fastest", "choose from"), ("strategy", "zero", "unknown strategy"),
])
def test_every_field_is_checked_once(field, value, words):
    with pytest.raises(UserError, match=words):
        check(AdviceRequest(**{field: value}))


def _probe(*gpus):
    return lambda: ProbeResult(tuple(gpus), "found", True)


def test_a_typed_budget_is_the_card_and_never_probes():
    card = card_for(AdviceRequest(vram_gib=12), probe=lambda: pytest.fail("probed"))
    assert card.budget_bytes == card.total_bytes == 12 * GIB and card.source == "VRAM budget 12"


def test_no_gpu_is_the_probes_message_without_a_cli_hint():
    with pytest.raises(UserError) as err:
        card_for(AdviceRequest(), lambda: ProbeResult())
    assert err.value.code == ExitCode.NO_GPU and "give --vram" not in str(err.value)


def test_probed_card_counts_same_gpus_and_calibration_is_asked_for_its_name():
    h200 = dict(name="NVIDIA H200", total_bytes=140 * GIB, free_bytes=130 * GIB)
    asked = []
    advice = advise(AdviceRequest(model="qwen2.5-0.5b"), _probe(GpuInfo(0, **h200), GpuInfo(1, **h200)),
                    lambda gpu, model: asked.append((gpu, model)))
    assert advice.parallel.gpus == 2 and advice.budget.vram_bytes == 130 * GIB
    assert asked == []  # several GPUs: one GPU's calibration does not apply
    advise(AdviceRequest(model="qwen2.5-0.5b", gpus=1), _probe(GpuInfo(0, **h200)), lambda g, m: asked.append((g, m)))
    assert asked == [("NVIDIA H200", "qwen2.5-0.5b")]


def test_fit_is_ok_only_when_the_whole_band_fits():
    est = estimate_one(AdviceRequest(vram_gib=24), Settings("lora", batch_size=1, grad_ckpt=True)).estimate
    top = est.high_bytes + est.context_bytes
    assert FIT_MARGIN >= 0
    assert fit_of(est, top) == "ok" or FIT_MARGIN > 0
    assert fit_of(est, top - 1) == "tight" and fit_of(est, est.total_bytes - 1) is None


def test_tight_advice_is_marked_and_ranked_after_ok():
    # without the memory-saving techniques, QLoRA on Llama-3.1-8B only just fits 12 GiB
    advice = advise(AdviceRequest(vram_gib=12, techniques=False))
    assert advice.best.method == "qlora" and advice.best.fit == "tight"
    assert advice.best.to_dict()["fit"] == "tight" and any("tight" in r for r in advice.best.reasons)
    # the techniques leave room: the same method fits with its whole range
    assert advise(AdviceRequest(vram_gib=12)).best.fit == "ok"
    roomy = advise(AdviceRequest(vram_gib=24, model="llama-3.2-3b"))
    fits = [r.fit for r in roomy.recommendations]
    assert fits == sorted(fits, key=lambda f: f != "ok")


def test_the_effective_batch_is_kept_or_said():
    advice = advise(AdviceRequest(vram_gib=24, priority="speed"))
    for rec in advice.recommendations:
        s = rec.settings
        words = rec.to_dict()["settings_words"]
        assert s.batch_size * s.grad_accum == 4 or any("effective batch" in w for w in words), rec.method


def test_speed_is_one_figure_in_the_reason_and_the_ranking():
    advice = advise(AdviceRequest(vram_gib=24, priority="speed"))
    best = advice.best
    figure = best.to_dict()["step_time_vs_lora"]
    assert f"{figure:.2f}×" in best.reasons[0]
    assert any(r.startswith(f"speed: {figure:.2f}×") for r in best.reasons)
    figures = [r.to_dict()["step_time_vs_lora"] for r in advice.recommendations if r.fit == "ok"]
    assert figures == sorted(figures)


def test_a_rank_lowered_below_the_evidence_says_so_and_loses_its_claim():
    advice = advise(AdviceRequest(vram_gib=24, model="qwen2.5-7b", adapter_mb=50))
    rs = next(r for r in advice.recommendations if r.method == "rslora")
    assert rs.settings.rank < 64
    assert any("measured at rank 64" in r and "does not carry over" in r for r in rs.reasons)
    assert not advice.best.reasons[0].endswith("(quality 4/5 relative to LoRA = 3)")


def test_estimate_says_which_card_its_context_is_for():
    s = Settings("qlora", batch_size=1, grad_ckpt=True)
    typed = estimate_one(AdviceRequest(vram_gib=12), s)
    none = estimate_one(AdviceRequest(), s)
    assert typed.estimate.context_bytes < none.estimate.context_bytes
    assert "12 GiB card" in typed.card_note and "140 GiB card" in none.card_note
    assert typed.fit in ("ok", "tight") and none.fit == ""


def test_estimate_refuses_a_named_gpu_it_cannot_find():
    """Without a GPU, `estimate` falls back to the reference card, unless a GPU was named: then
    the person meant a card, and silently using another is wrong."""
    s = Settings("lora")
    absent = lambda: ProbeResult(ok=False, gpus=[], message="no NVIDIA GPU or driver found")  # noqa: E731
    assert estimate_one(AdviceRequest(), s, absent).card.total_bytes is None
    with pytest.raises(UserError, match="no NVIDIA GPU") as err:
        estimate_one(AdviceRequest(gpu_index=3), s, absent)
    assert err.value.code == ExitCode.NO_GPU


def test_estimate_checks_offloaded_activations_against_free_ram():
    s = Settings("lora", batch_size=32, seq_len=4096, grad_ckpt=True, offload_activations=True, fused_loss=True)
    short = estimate_one(AdviceRequest(vram_gib=80), s, ram=lambda: 8 * GIB)
    assert short.estimate.cpu_bytes > 8 * GIB and short.ram_fits is False
    assert estimate_one(AdviceRequest(vram_gib=80), s, ram=lambda: 512 * GIB).ram_fits is True
    assert estimate_one(AdviceRequest(vram_gib=80), Settings("lora"), ram=lambda: 8 * GIB).ram_fits is None  # nothing offloaded


def test_needs_before_a_budget():
    need = needs(AdviceRequest(model="llama-3.1-8b"))
    assert set(need) >= {"lora", "qlora", "full"}
    assert need["qlora"][0] < need["lora"][0] < need["full"][0]


def test_checkpointing_as_many_blocks_as_the_model_has_is_said_as_all_of_them():
    """The estimate and the trainer take N >= the model's blocks as all of them; the words must too
    (Qwen3-0.6B has 28)."""
    s = Settings("lora", batch_size=1, grad_ckpt=True, grad_ckpt_layers=40)
    over = estimate_one(AdviceRequest(model="qwen3-0.6b", vram_gib=24), s)
    every = estimate_one(AdviceRequest(model="qwen3-0.6b", vram_gib=24), Settings("lora", batch_size=1, grad_ckpt=True))
    assert over.words == every.words
    assert "checkpointing" in over.words and "40 blocks" not in " ".join(over.words)
    assert over.estimate.peak_bytes == every.estimate.peak_bytes
    some = estimate_one(AdviceRequest(model="qwen3-0.6b", vram_gib=24),
                        Settings("lora", batch_size=1, grad_ckpt=True, grad_ckpt_layers=20))
    assert "checkpointing 20 blocks" in some.words


def test_which_rows_of_the_data_needs_the_data():
    for field in ("data_columns", "data_config", "data_split"):
        with pytest.raises(UserError, match="give the data too") as err:
            check(AdviceRequest(**{field: "instruction=question" if field == "data_columns" else "x"}))
        assert err.value.code == ExitCode.USAGE
