"""Per-GPU estimates for DDP and FSDP, checked against hand-computed terms."""

from __future__ import annotations

import pytest

from peft_advisor.core import estimate as E
from peft_advisor.core.distributed import Parallel, global_batch, per_gpu_estimate
from peft_advisor.core.errors import UserError
from peft_advisor.core.model_spec import load_preset
from peft_advisor.core.recommend import Budget, recommend
from peft_advisor.core.units import GIB

SPEC = load_preset("llama-3.1-8b")


def test_one_gpu_is_the_single_gpu_estimate():
    s = E.Settings("lora", batch_size=2, seq_len=512)
    assert per_gpu_estimate(SPEC, s, Parallel(1, "fsdp")).peak_bytes == E.estimate(SPEC, s).peak_bytes


def test_ddp_adds_one_bucket_copy_of_the_gradients():
    s = E.Settings("full", batch_size=1, seq_len=512)
    single = E.estimate(SPEC, s)
    ddp = per_gpu_estimate(SPEC, s, Parallel(4, "ddp"))
    # full fine-tuning in bf16: gradients are 2 bytes a parameter; DDP's buckets hold another copy
    assert ddp.breakdown["weights"] - single.breakdown["weights"] == 2 * SPEC.total_params
    assert ddp.peak_bytes > single.peak_bytes + 2 * SPEC.total_params * 0.99


def test_fsdp_shards_weights_states_and_gradients():
    s = E.Settings("full", batch_size=1, seq_len=512)
    c = E.components(SPEC, s)
    fsdp = per_gpu_estimate(SPEC, s, Parallel(8, "fsdp"))
    block = SPEC.layer_params * 2
    root = (SPEC.embedding_params + SPEC.lm_head_params + SPEC.final_norm_params) * 2
    assert fsdp.breakdown["weights"] == c["weights"] // 8 + 2 * block + root
    assert fsdp.breakdown["optimizer"] == c["optimizer"] // 8  # bf16 AdamW: 4 bytes/param over 8
    assert fsdp.peak_bytes < E.estimate(SPEC, s).peak_bytes / 3
    # more GPUs, less per GPU
    assert per_gpu_estimate(SPEC, s, Parallel(4, "fsdp")).peak_bytes > fsdp.peak_bytes


def test_activations_do_not_shard():
    s = E.Settings("lora", batch_size=8, seq_len=2048)
    one, eight = E.estimate(SPEC, s), per_gpu_estimate(SPEC, s, Parallel(8, "fsdp"))
    assert eight.breakdown["activations"] == one.breakdown["activations"]
    assert eight.breakdown["logits"] == one.breakdown["logits"]


def test_global_batch_and_bad_input():
    assert global_batch(E.Settings("lora", batch_size=2, grad_accum=4), Parallel(8, "ddp")) == 64
    with pytest.raises(UserError, match="did you mean fsdp"):
        Parallel(2, "fsd")
    with pytest.raises(UserError):
        Parallel(0, "ddp")


def test_recommend_says_how_many_gpus_would_do():
    advice = recommend(SPEC, Budget(24 * GIB, None, "test", 24 * GIB), seq_len=1024, batch_size=4)
    full = next(r for r in advice.ruled_out if r.method == "full")
    assert "fits on" in full.reason and "GPUs with" in full.reason
    multi = recommend(SPEC, Budget(24 * GIB, None, "test", 24 * GIB), seq_len=1024, batch_size=4,
                      parallel=Parallel(8, "fsdp"))
    assert "full" in {r.method for r in multi.recommendations}


def test_what_the_trainer_refuses_on_several_gpus_is_ruled_out():
    advice = recommend(SPEC, Budget(80 * GIB, None, "test", 80 * GIB), seq_len=512, batch_size=2,
                       parallel=Parallel(2, "fsdp"))
    ruled = {r.method: r.reason for r in advice.ruled_out}
    assert "not supported with FSDP" in ruled["galore"] and "not supported with FSDP" in ruled["loraplus"]
    ddp = recommend(SPEC, Budget(40 * GIB, None, "test", 40 * GIB), seq_len=512, batch_size=2,
                    parallel=Parallel(2, "ddp"), methods=("galore",))
    for rec in ddp.recommendations:
        assert not rec.settings.galore_layerwise  # layer-wise GaLore is single-GPU only


def test_export_for_several_gpus_fills_the_distributed_table(tmp_path):
    from peft_advisor.cli import main
    from peft_advisor.core import recipe as rc

    out = tmp_path / "r.toml"
    assert main(["recommend", "--vram", "40", "--model", "llama-3.1-8b", "--gpus", "2", "--strategy", "fsdp",
                 "--export", str(out)]) == 0
    recipe = rc.load(out)
    assert recipe.distributed.gpus == 2 and recipe.distributed.strategy == "fsdp"


# ---------------------------------------------------------------- DeepSpeed ZeRO


def test_zero2_partitions_only_what_trains():
    """LoRA on 8B: the frozen bf16 weights stay whole on every GPU; master, Adam states and the
    gradient partition are the adapters' alone, over the GPU count (DeepSpeed's planner would
    charge 16 bytes for each of the 8 B parameters)."""
    s = E.Settings("lora", batch_size=1, seq_len=512)
    c = E.components(SPEC, s)
    t = c["trainable_params"]
    z2 = per_gpu_estimate(SPEC, s, Parallel(4, "zero2"))
    bucket = min(SPEC.hidden_size ** 2, t) * 2
    assert z2.breakdown["weights"] == c["weights"] + bucket
    assert z2.breakdown["trainable"] == 2 * t  # DeepSpeed's bf16 mode casts the adapters too
    assert z2.breakdown["optimizer"] == 4 * t // 4 + 8 * t // 4
    assert z2.cpu_bytes == 0
    assert z2.peak_bytes < c["weights"] + 16 * SPEC.total_params // 4  # far below DeepSpeed's all-trainable count


def test_zero3_partitions_the_weights_and_gathers_one_block():
    s = E.Settings("full", batch_size=1, seq_len=512)
    c = E.components(SPEC, s)
    z3 = per_gpu_estimate(SPEC, s, Parallel(8, "zero3"))
    gathered = SPEC.layer_params * 2 + int(0.9 * SPEC.hidden_size ** 2) * 2 + max(SPEC.embedding_params, SPEC.lm_head_params) * 2
    assert z3.breakdown["weights"] == c["weights"] // 8 + gathered + SPEC.hidden_size ** 2 * 2
    assert z3.breakdown["trainable"] == 0  # full: the weights are what trains
    assert z3.peak_bytes < per_gpu_estimate(SPEC, s, Parallel(8, "zero2")).peak_bytes
    assert per_gpu_estimate(SPEC, s, Parallel(4, "zero3")).peak_bytes > z3.peak_bytes


def test_offload_moves_states_then_weights_to_cpu_ram():
    s = E.Settings("full", batch_size=1, seq_len=512)
    t = E.components(SPEC, s)["trainable_params"]
    on_gpu = per_gpu_estimate(SPEC, s, Parallel(4, "zero3"))
    opt = per_gpu_estimate(SPEC, s, Parallel(4, "zero3", "optimizer"))
    both = per_gpu_estimate(SPEC, s, Parallel(4, "zero3", "optimizer+params"))
    assert opt.breakdown["optimizer"] == 0 and opt.cpu_bytes == (4 + 8 + 2) * t // 4
    assert on_gpu.peak_bytes - opt.peak_bytes >= (4 + 8) * t // 4
    assert both.cpu_bytes > opt.cpu_bytes and both.peak_bytes < opt.peak_bytes


def test_offload_needs_zero_and_params_need_zero3():
    for strategy, offload in [("ddp", "optimizer"), ("fsdp", "optimizer"), ("zero2", "optimizer+params"), ("zero3", "disk")]:
        with pytest.raises(UserError):
            Parallel(2, strategy, offload)
    assert Parallel(2, "zero3", "optimizer+params").label == "ZeRO-3 + optimizer+params offload"


def test_more_gpus_hint_names_the_least_communicating_strategy():
    from peft_advisor.core.distributed import cheapest_first

    labels = [p.label for p in cheapest_first(4)]
    assert labels[:4] == ["DDP", "FSDP", "ZeRO-2", "ZeRO-3"] and labels[-1].endswith("offload")
    s = E.Settings("full", batch_size=1, seq_len=512)
    fits = [p for p in cheapest_first(8) if per_gpu_estimate(SPEC, s, p).total_bytes <= 40 * GIB]
    assert fits and fits[0].strategy == "fsdp"  # DDP holds a whole copy; FSDP is the first that fits
