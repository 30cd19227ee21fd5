"""The backward of a block that kept its activations (`estimate._backward_transient_bytes`): the
gradient of the down projection's input, and of its adapter's fp32 copy, on top of every saved
activation. It sets the peak once the fused loss removes the whole-vocabulary buffers."""

from __future__ import annotations

from dataclasses import replace

from peft_advisor.core.estimate import BF16, FP32, Settings, components, estimate
from peft_advisor.core.model_spec import load_preset

SMOL = load_preset("smollm2-1.7b")
FUSED = Settings("lora", batch_size=4, seq_len=2048, fused_loss=True, liger_kernels=True)


def _bare(s: Settings) -> int:
    b = estimate(SMOL, s).breakdown
    return sum(v for k, v in b.items() if k != "overhead")


def test_per_token_bytes_follow_what_the_down_projection_holds_in_backward():
    i, tokens = SMOL.intermediate_size, FUSED.tokens
    lora = components(SMOL, FUSED)["backward"]
    assert lora == tokens * (BF16 + FP32 + BF16) * i  # base gradient, the fp32 copy's, its cast back
    # one matmul with the merged weight (SHiRA) or no adapter on down_proj: the base gradient only
    assert components(SMOL, replace(FUSED, method="shira"))["backward"] == tokens * BF16 * i
    assert components(SMOL, replace(FUSED, targets="attention"))["backward"] == tokens * BF16 * i
    # LoKr also holds the gradient of its whole fp32 delta weight
    down = next(t for t in SMOL.linears if t.name == "down_proj")
    assert components(SMOL, replace(FUSED, method="lokr"))["backward"] == lora + FP32 * down.d_in * down.d_out


def test_it_sets_the_peak_only_once_the_loss_is_fused():
    c = components(SMOL, FUSED)
    assert _bare(FUSED) - c["acts"] == c["backward"] + sum(
        estimate(SMOL, FUSED).breakdown[k] for k in ("weights", "trainable", "optimizer"))
    plain = replace(FUSED, fused_loss=False, liger_kernels=False)
    cp = components(SMOL, plain)
    assert cp["logits"] > cp["backward"]  # hidden under the whole vocabulary's buffers
    assert estimate(SMOL, plain).breakdown["logits"] == cp["logits"]


def test_checkpointing_every_block_recomputes_one_with_the_transient_on_top():
    s = replace(FUSED, grad_ckpt=True)
    c = components(SMOL, s)
    assert c["acts_kept"] == c["acts"]  # the last block keeps nothing of its own
    b = estimate(SMOL, s).breakdown
    assert b["activations"] + b["logits"] == c["acts_kept"] + c["recompute"] + c["backward"]
