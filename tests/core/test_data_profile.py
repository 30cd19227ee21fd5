"""The data profile's numbers (pure) and the estimator's evaluation term."""

from __future__ import annotations

from dataclasses import replace

from peft_advisor.core.data_profile import EVAL_GENERATE_BATCH, DataProfile, new_tokens_for
from peft_advisor.core.estimate import Settings, estimate
from peft_advisor.core.model_spec import load_model_spec

PROF = DataProfile("x.jsonl", "text", tuple(sorted([10] * 90 + [50] * 9 + [400])), "test")


def test_cut_share_and_the_length_that_keeps_99_percent():
    assert PROF.cut_share(1024) == 0
    assert PROF.cut_share(49) == 0.10  # the nine 50s and the 400
    assert PROF.cut_share(50) == 0.01
    assert PROF.keep_len() == 50  # 99 of 100 rows are at most 50 tokens
    assert PROF.keep_len(1.0) == 400


def test_the_estimate_uses_the_longest_row_after_truncation_or_max_seq_len_when_packed():
    assert PROF.seq_len_for(1024) == 400
    assert PROF.seq_len_for(128) == 128
    assert PROF.seq_len_for(128, packing=True) == 128
    assert PROF.seq_len_for(4096, packing=True) == PROF.total_tokens  # the whole set is one short row


def test_histogram_covers_every_row_from_shortest_to_longest():
    buckets = PROF.histogram(8)
    assert buckets[0][0] == 10 and buckets[-1][1] == 400
    assert sum(n for _, _, n in buckets) == PROF.rows


def test_words_say_what_was_used_instead_of_max_seq_len():
    words = PROF.words(1024)
    assert "estimated at 400 tokens per row instead of 1024" in words and "counted with test" in words
    assert PROF.to_dict(1024)["estimate_seq_len"] == 400


def test_generation_length_is_prompt_plus_new_tokens():
    assert DataProfile("x", "instruction", (5,), "t").generate_len() == 0
    gen = DataProfile("x", "instruction", (5,), "t", generate_prompt_tokens=100, generate_new_tokens=new_tokens_for(3))
    assert gen.generate_len() == 111
    assert new_tokens_for(500) == 64


def test_no_evaluation_asked_leaves_the_estimate_as_it_was():
    spec = load_model_spec("llama-3.2-1b")
    plain = estimate(spec, Settings("lora", seq_len=512))
    assert set(plain.breakdown) == {"weights", "trainable", "gradients", "optimizer", "activations", "logits", "overhead"}


def test_an_eval_pass_at_the_training_shape_stays_below_the_training_step():
    spec = load_model_spec("llama-3.2-1b")
    plain = estimate(spec, Settings("lora", batch_size=4, seq_len=512))
    with_eval = estimate(spec, Settings("lora", batch_size=4, seq_len=512, eval_seq_len=512))
    assert with_eval.peak_bytes == plain.peak_bytes and "evaluation" not in with_eval.breakdown


def test_with_the_fused_loss_the_eval_pass_stays_below_the_training_step():
    """The trainer evaluates through the loss it trains with (LeanTrainer.compute_loss): with the
    fused loss on, evaluation at the training shape builds one chunk of logits, not the whole
    vocabulary's (Gemma 2's 256k entries would otherwise double the estimate)."""
    spec = load_model_spec("gemma-2-2b")
    s = Settings("lora", batch_size=1, seq_len=2048, grad_ckpt=True, fused_loss=True, liger_kernels=True)
    plain = estimate(spec, s)
    with_eval = estimate(spec, replace(s, eval_seq_len=2048))
    assert with_eval.peak_bytes == plain.peak_bytes and "evaluation" not in with_eval.breakdown


def test_exact_match_generation_can_set_the_peak():
    """Micro-batch 1 of short rows, but 16 long prompts generated at once: the KV cache and the
    prefill outweigh the training step, and the breakdown says so."""
    spec = load_model_spec("llama-3.1-8b")
    s = Settings("qlora", batch_size=1, seq_len=256, grad_ckpt=True)
    plain = estimate(spec, s)
    gen = estimate(spec, Settings("qlora", batch_size=1, seq_len=256, grad_ckpt=True, eval_seq_len=256, generate_len=2048))
    assert gen.peak_bytes > plain.peak_bytes
    assert gen.breakdown["evaluation"] > 0 and gen.breakdown["gradients"] == 0
    assert sum(gen.breakdown.values()) == gen.peak_bytes
    kv = 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * 4 * EVAL_GENERATE_BATCH * 2048
    assert gen.breakdown["evaluation"] > kv
