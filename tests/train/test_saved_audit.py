"""The estimator's per-block activation term against what autograd really saves, on the CPU
(bench/saved_audit.py's measurement): a tiny random Llama (SDPA: bytes per token only) and a tiny
random Gemma 2 (eager attention: score matrices that grow with the row length), with methods
built by the trainer's own builders, in bf16. The adapters' bytes per token are exact up to the
per-row RoPE tables, which the estimator leaves out (a few bytes per token here, well under 1 % at
real sizes). Full fine-tuning's linear-input terms were calibrated on GPU peaks, not on saved
tensors, and do not scale down to these toy shapes: only its score matrices are checked here
(bench/results/cpu_saved_audit.md has it at real sizes)."""

from __future__ import annotations

import pytest

from bench.saved_audit import estimated_per_token, measure


def tiny_gemma2():
    import torch
    from transformers import AutoModelForCausalLM, Gemma2Config

    config = Gemma2Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)


def tiny_llama_bf16(folder):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)


CASES = [("llama", m) for m in ("lora", "dora", "full", "ia3", "miss", "lorafa", "shira")] + [
    ("gemma2", m) for m in ("lora", "full", "shira")]  # eager: o_proj's input is a copy of its own


@pytest.mark.parametrize(("arch", "method"), CASES)
def test_estimated_bytes_per_token_equal_autograds(arch, method, tiny_model):
    from peft_advisor.core import recipe as rc
    from peft_advisor.core.model_spec import from_hf_config
    from peft_advisor.train.methods import BUILDERS

    model = tiny_llama_bf16(tiny_model) if arch == "llama" else tiny_gemma2()
    assert (model.config._attn_implementation == "eager") == (arch == "gemma2")  # the premise
    spec = from_hf_config(model.config.to_dict())
    recipe = rc.updated(rc.Recipe(), {"model.id": str(tiny_model), "method.name": method, "method.rank": 4})
    _, (_, per_token, per_key) = measure(BUILDERS[method](model, recipe).model)
    est_per_token, est_per_key = estimated_per_token(spec, method, 4)
    assert per_key == pytest.approx(est_per_key, abs=0.01)
    if method == "full":
        return
    rope_tables = 2 * spec.head_dim * 2  # cos and sin per position, bf16, not in the estimate
    # SHiRA's o_proj keeps its input: on the CPU that is SDPA's own output, on the H100 runs a copy
    # (counted); eager attention copies it everywhere
    cuda_copy = 2 * spec.num_heads * spec.head_dim if method == "shira" and not spec.eager_attention else 0
    assert est_per_token - cuda_copy <= per_token <= est_per_token - cuda_copy + rope_tables
