"""The estimator's DELTA_WEIGHT_BYTES term: one whole weight per adapted layer, in every block whose
activations are kept, and in the one block being recomputed under checkpointing."""

from __future__ import annotations

from dataclasses import replace

from peft_advisor.core import estimate as E
from peft_advisor.core.model_spec import load_preset

QWEN = load_preset("qwen2.5-0.5b")


def weights(spec, s) -> int:
    return sum(t.d_in * t.d_out for t in E._targets(spec, s))


def test_lokr_and_loha_keep_an_fp32_weight_per_adapted_layer_and_shira_a_bf16_one():
    for method, per in (("lokr", 4), ("loha", 4), ("shira", 2)):
        s = E.Settings(method, batch_size=4, seq_len=512)
        kept = E._blocks_saved_bytes(QWEN, s)[1]
        assert kept == QWEN.num_layers * (s.tokens * E._act_bytes_per_token_layer(QWEN, s) + per * weights(QWEN, s))
    assert E._delta_weight_bytes_per_block(QWEN, E.Settings("lora")) == 0


def test_checkpointed_blocks_recompute_one_weight_set_at_a_time():
    s = E.Settings("lokr", batch_size=4, seq_len=512, grad_ckpt=True)
    c = E.components(QWEN, s)
    plain = E.components(QWEN, replace(s, method="lora"))
    assert c["recompute"] - 4 * weights(QWEN, s) == s.tokens * (E._act_bytes_per_token_layer(QWEN, s)
                                                                 + 2 * 4 * QWEN.hidden_size)
    assert c["acts"] == plain["acts"]  # checkpointed blocks keep only their inputs


def test_shira_saves_its_inputs_in_bf16_once_per_shared_input():
    """LoRA: an fp32 copy of each target's input and its rank-sized intermediate; SHiRA: the bf16
    input as it comes, once for q/k/v and once for gate/up; LoKr: the fp32 copies only."""
    shira, lora, lokr = (E.Settings(m, batch_size=1, seq_len=1) for m in ("shira", "lora", "lokr"))
    targets = E._targets(QWEN, lora)
    distinct = {E._input_of(t): t.d_in for t in targets}
    assert sum(distinct.values()) < sum(t.d_in for t in targets)  # q/k/v and gate/up share theirs
    base = E._act_bytes_per_token_layer(QWEN, lora) - 4 * sum(t.d_in for t in targets) - 4 * lora.rank * len(targets)
    assert E._act_bytes_per_token_layer(QWEN, shira) == base + 2 * sum(distinct.values())
    assert E._act_bytes_per_token_layer(QWEN, lokr) == base + 4 * sum(t.d_in for t in targets)
