"""The estimator's static terms against the real peft model: for each adapter method, the bytes of
every tensor the model holds (parameters, buffers, and the index tensors peft keeps in plain
dicts, as SHiRA does) equal the estimate's weights + trainable terms, and the parameters that
need a gradient equal its trainable count. The tiny Llama is loaded in bfloat16, as the estimate
assumes; peft keeps adapters in float32."""

from __future__ import annotations

import pytest

from peft_advisor.core import estimate as E
from peft_advisor.core import recipe as rc
from peft_advisor.core.model_spec import load_model_spec
from tests.train.test_methods import STUDY_METHODS

ADAPTER_METHODS = ["lora", "dora", "vera", *STUDY_METHODS]


def held_bytes(model) -> int:
    """Bytes of every distinct tensor the model holds: parameters, buffers, and tensors in a
    module's plain dict attributes (peft's SHiRA keeps its indices there, unregistered)."""
    import torch

    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    for module in model.modules():
        for name, value in vars(module).items():
            if not name.startswith("_") and isinstance(value, dict):
                tensors.update({id(v): v for v in value.values() if torch.is_tensor(v)})
    return sum(t.numel() * t.element_size() for t in tensors.values())


@pytest.mark.parametrize("method", ADAPTER_METHODS)
def test_static_bytes_match_the_peft_model(method, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    from peft_advisor.train.methods import build

    recipe = rc.updated(rc.Recipe(), {"model.id": str(tiny_model), "method.name": method, "method.rank": 4,
                                      "method.alpha": 8, "method.vera_rank": 16, "method.oft_block_size": 8,
                                      "method.c3a_block_size": 16})
    model = build(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16), recipe).model
    spec, settings = load_model_spec(str(tiny_model)), rc.settings_from_recipe(recipe)
    terms = E.components(spec, settings)
    rotary = sum(b.numel() * b.element_size() for n, b in model.named_buffers() if "rotary_emb" in n)
    assert held_bytes(model) - rotary == terms["weights"] + terms["trainable"]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == terms["trainable_params"]
