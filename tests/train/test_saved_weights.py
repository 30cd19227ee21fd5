"""The premise of the estimator's DELTA_WEIGHT_BYTES term, checked on the installed peft: LoKr and
LoHa keep each adapted layer's whole fp32 delta weight for backward, SHiRA a copy of the merged
weight in the model's dtype; LoRA keeps no weight-sized tensor of its own."""

from __future__ import annotations

import pytest

from tests.train.test_techniques import batch, tiny_llama


def weight_sized_saved(model, dtype) -> int:
    """Storages of the 2-D tensors autograd saved in one step that have an adapted layer's weight
    shape (either way round: a matmul may keep W.t()) and are no parameter or buffer (the frozen
    weights a matmul saves are the parameters themselves); returns their bytes."""
    import torch

    from peft_advisor.train.techniques import _storage_ptr, weight_storages

    params = weight_storages(model)
    shapes = {tuple(m.base_layer.weight.shape) for m in model.modules() if hasattr(m, "base_layer")
              and hasattr(m.base_layer, "weight")}
    shapes |= {(b, a) for a, b in shapes}
    saved = {}

    def pack(tensor):
        if (tensor.layout == torch.strided and tensor.dim() == 2 and tuple(tensor.shape) in shapes
                and tensor.dtype == dtype and _storage_ptr(tensor) not in params):
            saved[_storage_ptr(tensor)] = tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**batch(model.config.vocab_size)).loss.backward()
    return sum(saved.values())


@pytest.mark.parametrize("method", ["lokr", "loha", "shira", "lora"])
def test_which_methods_keep_a_whole_weight_per_layer(method, tiny_model):
    """Built by the trainer's own builder, rank 4 on all linear layers, one step on the CPU."""
    import torch

    from peft_advisor.core import recipe as rc
    from peft_advisor.core.estimate import DELTA_WEIGHT_BYTES
    from peft_advisor.train.methods import BUILDERS

    recipe = rc.updated(rc.Recipe(), {"model.id": str(tiny_model), "method.name": method, "method.rank": 4})
    model = BUILDERS[method](tiny_llama(tiny_model), recipe).model
    adapted = [m for m in model.modules() if hasattr(m, "base_layer") and hasattr(m.base_layer, "weight")]
    dtype = torch.float32 if DELTA_WEIGHT_BYTES.get(method, 4) == 4 else model.dtype
    saved = weight_sized_saved(model, dtype)
    weights = sum(m.base_layer.weight.numel() for m in adapted) * torch.tensor([], dtype=dtype).element_size()
    if method in DELTA_WEIGHT_BYTES:  # most of them (a few of the tiny model's share storage)
        assert saved >= weights / 2 > 0
    else:
        assert saved == 0
