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
