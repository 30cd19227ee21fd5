"""Gemma 2's attention runs eagerly in transformers (SDPA cannot soft-cap its scores), so each
block keeps whole score matrices for backward: bytes per token that grow with the row length.
The estimator counts them (`estimate._eager_attention_bytes`); the other architectures' SDPA
keeps none. tests/train/test_saved_audit.py checks the counts against autograd itself."""

from __future__ import annotations

from dataclasses import replace

from peft_advisor.core.estimate import BF16, FP32, Settings, _act_bytes_per_token_layer, estimate
from peft_advisor.core.model_spec import from_hf_config, load_preset, preset_config

GEMMA2 = load_preset("gemma-2-2b")
LORA = Settings("lora", batch_size=2, seq_len=2048)


def per_key(spec, s: Settings) -> int:
    """Bytes per token per key position: the slope of one block's per-token bytes in the row length."""
    return _act_bytes_per_token_layer(spec, replace(s, seq_len=s.seq_len + 1)) - _act_bytes_per_token_layer(spec, s)


def test_only_gemma_2_runs_eager_attention():
    assert GEMMA2.eager_attention and GEMMA2.attn_softcap
    for preset in ("gemma-3-1b", "qwen3-0.6b", "llama-3.2-1b", "phi-3.5-mini", "mistral-7b"):
        spec = load_preset(preset)
        assert not spec.eager_attention and per_key(spec, LORA) == 0, preset


def test_each_head_keeps_softmax_fp32_output_probabilities_and_tanh_per_key():
    heads = GEMMA2.num_heads
    assert per_key(GEMMA2, LORA) == heads * (FP32 + BF16 + BF16)
    # QLoRA computes in fp32: probabilities and softmax's output are one tensor
    assert per_key(GEMMA2, replace(LORA, method="qlora")) == heads * (FP32 + FP32)
    raw = {**preset_config("gemma-2-2b"), "attn_logit_softcapping": None}
    assert per_key(from_hf_config(raw), LORA) == heads * (FP32 + BF16)


def test_the_score_matrices_dominate_gemma_2_at_long_rows():
    """Two rows of 4096 tokens without checkpointing: 26 blocks x 8 heads x 8 bytes x 4096 keys x
    8192 tokens = 52 GiB of scores alone, where an SDPA model of the same shape would hold none."""
    s = replace(LORA, seq_len=4096, fused_loss=True, liger_kernels=True)
    scores = GEMMA2.num_layers * GEMMA2.num_heads * 8 * 4096 * s.tokens
    sdpa = replace(GEMMA2, eager_attention=False)
    assert estimate(GEMMA2, s).peak_bytes - estimate(sdpa, s).peak_bytes >= scores

