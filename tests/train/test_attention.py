"""Gemma 2 is loaded with eager attention whatever transformers would pick: SDPA cannot soft-cap its
scores (earlier transformers 5.x ran it there without the cap), and the estimate counts the eager
path's score matrices (core.estimate._eager_attention_bytes)."""

from __future__ import annotations


def write_config(folder, config) -> str:
    config.save_pretrained(folder)
    return str(folder)


def test_gemma2_loads_eager_and_llama_keeps_the_default(tmp_path):
    from transformers import Gemma2Config, LlamaConfig

    from peft_advisor.train.model import attention_kwargs

    gemma = write_config(tmp_path / "gemma2", Gemma2Config(vocab_size=300, hidden_size=64, intermediate_size=128,
                                                           num_hidden_layers=2, num_attention_heads=4,
                                                           num_key_value_heads=2, head_dim=16))
    llama = write_config(tmp_path / "llama", LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128,
                                                         num_hidden_layers=2, num_attention_heads=4))
    assert attention_kwargs(gemma, False) == {"attn_implementation": "eager"}
    assert attention_kwargs(llama, False) == {}


def test_the_trainer_and_the_estimate_agree_on_which_attention_is_eager():
    from peft_advisor.core.model_spec import attention_implementation, from_hf_config

    gemma = from_hf_config({"model_type": "gemma2", "hidden_size": 64, "intermediate_size": 128,
                            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                            "head_dim": 16, "vocab_size": 300}, "tiny")
    assert gemma.eager_attention and attention_implementation(gemma.model_type) == "eager"
    assert attention_implementation("llama") is None
