"""The estimator's backward transient against what a block's backward really holds (bench/backward_audit.py:
fake tensors, so no compute), on a tiny random Gemma 2: past a few hundred tokens per row its eager
attention's backward, a whole score matrix of gradients, is the widest moment of the block, and the
estimate must cover it without inflating it."""

from __future__ import annotations

import pytest

from bench.backward_audit import block_growth
from bench.saved_audit import BATCH


def tiny_gemma2_lora():
    import torch
    from transformers import AutoModelForCausalLM, Gemma2Config

    from peft_advisor.core import recipe as rc
    from peft_advisor.train.methods import BUILDERS

    config = Gemma2Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=2048)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    recipe = rc.updated(rc.Recipe(), {"model.id": "tiny", "method.name": "lora", "method.rank": 16})
    return BUILDERS["lora"](model, recipe).model, config


@pytest.mark.parametrize("seq_len", [256, 1024])
def test_eager_attention_backward_is_counted(seq_len):
    from peft_advisor.core.estimate import Settings, _backward_transient_bytes, _eager_backward_bytes
    from peft_advisor.core.model_spec import from_hf_config

    model, config = tiny_gemma2_lora()
    measured = block_growth(model, seq_len)["growth_bytes"]
    spec = from_hf_config(config.to_dict(), "tiny-gemma2")
    s = Settings(method="lora", rank=16, batch_size=BATCH, seq_len=seq_len)
    assert _backward_transient_bytes(spec, s) == _eager_backward_bytes(spec, s)  # attention is the widest
    cpu_part = _backward_transient_bytes(spec, s, gpu_extra=0)
    assert 1.0 <= cpu_part / measured < 1.08  # what the CPU's kernels hold; a GPU holds more per score
    assert _backward_transient_bytes(spec, s) > cpu_part


def test_sdpa_architectures_have_no_attention_backward_term():
    from peft_advisor.core.estimate import Settings, _eager_backward_bytes
    from peft_advisor.core.model_spec import load_preset

    assert _eager_backward_bytes(load_preset("llama-3.2-1b"), Settings(method="lora", seq_len=8192)) == 0


@pytest.mark.parametrize("grad_ckpt", [False, True])
def test_a_whole_step_matches_the_estimate_on_an_untuned_architecture(grad_ckpt):
    """SmolLM2-360M (never in the calibration sets), its own 49k vocabulary, three blocks: the most
    bytes alive over one step, counted with fake tensors, against the estimator's activations, loss
    buffers and gradients (bench/results/cpu_step_audit.md has nine architectures)."""
    from bench.backward_audit import estimated_step, step_audit

    row = step_audit("smollm2-360m", "lora", 1024, grad_ckpt)
    ratio = estimated_step("smollm2-360m", "lora", 1024, grad_ckpt) / row["step_peak_bytes"]
    assert 0.97 < ratio < 1.03, ratio


def test_doras_gate_and_up_backward_is_covered():
    """DoRA's widest backward moment is at a gate/up projection's output (its magnitude scaling's
    fp32 gradients), 10-12 bytes per output feature per token on the CPU, more than LoRA's at the
    down projection: the estimate must not fall below it."""
    from bench.backward_audit import audit, estimated_growth

    row = audit("qwen3-0.6b", "dora", 1024)
    ratio = estimated_growth("qwen3-0.6b", "dora", 1024) / row["growth_bytes"]
    assert 1.0 <= ratio < 1.3, ratio
