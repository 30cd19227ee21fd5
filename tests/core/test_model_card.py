"""The model card a run folder gets (core/model_card.py), from the recorded fixture runs: pure,
no training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from peft_advisor.core import recipe as rc
from peft_advisor.core.model_card import write_model_card

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runs"


def test_an_adapter_card_from_the_recipe_and_events(tmp_path):
    run = shutil.copytree(FIXTURES / "demo-lora", tmp_path / "demo-lora")
    (run / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}))
    card = write_model_card(run).read_text(encoding="utf-8")
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    assert "(the recipe's model.id: `demo`)" in card and "Q4_1 GGUF" in card
    assert "- the shipped arithmetic demo set" in card
    for line in ("- 60 of 60 steps", "- final training loss: 0.8206", "best 0.9206", "60.0 % at step 60",
                 "- peak GPU memory: 2.85 GiB; estimate 3.00 GiB", "- wall time: 2 min 04 s"):
        assert line in card, line


def test_a_full_fine_tune_card_has_no_adapter_to_load(tmp_path):
    run = shutil.copytree(FIXTURES / "demo-lora", tmp_path / "full")
    recipe = rc.updated(rc.load(run / "recipe.toml"), {"method.name": "full"})
    (run / "recipe.toml").write_text(rc.dumps(recipe), encoding="utf-8")
    card = write_model_card(run, "HuggingFaceTB/SmolLM2-135M-Instruct").read_text(encoding="utf-8")
    assert "library_name: transformers" in card and "Full FT fine-tune of" in card
    assert "PeftModel" not in card and "- rank:" not in card


def _card_with_checkpointing(tmp_path, name: str, layers: int, applied: str | None) -> str:
    run = shutil.copytree(FIXTURES / "demo-lora", tmp_path / name)
    recipe = rc.updated(rc.load(run / "recipe.toml"), {"train.grad_ckpt": True, "train.grad_ckpt_layers": layers})
    (run / "recipe.toml").write_text(rc.dumps(recipe), encoding="utf-8")
    if applied:
        events = run / "events.jsonl"
        start, rest = events.read_text(encoding="utf-8").split("\n", 1)  # the fixture's first line is its start
        events.write_text(json.dumps({**json.loads(start), "checkpointed_layers": applied}) + "\n" + rest, encoding="utf-8")
    return write_model_card(run).read_text(encoding="utf-8")


def test_the_card_says_what_checkpointing_the_trainer_applied(tmp_path):
    # A recipe may name more blocks than the model has: the trainer then checkpoints all of them.
    assert "- gradient checkpointing on every block" in _card_with_checkpointing(tmp_path, "all", 40, "30 of 30")
    assert "- gradient checkpointing on the first 22 of 30 blocks" in _card_with_checkpointing(tmp_path, "some", 22,
                                                                                                 "22 of 30")
    # A run from before the start event recorded it: the recipe's words.
    assert "- gradient checkpointing on the first 22 blocks" in _card_with_checkpointing(tmp_path, "old", 22, None)
