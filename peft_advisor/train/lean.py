"""Hugging Face's Trainer without its per-step walks over the whole model.

A small model's step on a fast GPU is bound by the CPU launching kernels, so any other Python work
in a step adds straight to its time. Per optimizer step, Trainer walks every module or parameter
three times more than a hand-written loop: the FLOP count (`num_parameters`, for the logged
`total_flos`), `model.train()` and `model.zero_grad()`; with LoRA's small modules a 0.5B model has
about two thousand of them. `bench/trainer_profile.py` measures the cost (cProfile, tokens/s per
variant); `bench/trainer_overhead.py` the result against a plain loop.

What stays the same: the FLOP count (the parameter count is taken once; it does not change while
training), every parameter's gradient set to None after each step (frozen ones never have one),
and the train/eval mode of every module (modes change only through the top-level model here:
Trainer's train()/eval() and the exact-match eval).
"""

from __future__ import annotations

from transformers import Trainer


class LeanTrainer(Trainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._non_embedding_params: int | None = None
        lighten(self.model)

    def floating_point_ops(self, inputs) -> int:
        """Trainer's count, 6 x input tokens x non-embedding parameters, with the parameters counted once."""
        ids = inputs.get(getattr(self.model, "main_input_name", "input_ids"))
        if ids is None or not hasattr(self.model, "num_parameters"):
            return 0
        if self._non_embedding_params is None:
            self._non_embedding_params = self.model.num_parameters(exclude_embeddings=True)
        return 6 * ids.numel() * self._non_embedding_params


def lighten(model) -> None:
    """`model.train()` returns at once when the mode is already set; `model.zero_grad()` clears
    only the parameters that can have a gradient. Both are instance attributes of this model alone;
    a wrapper (DDP, FSDP) keeps its own methods."""
    full_train = model.train
    trainable = [p for p in model.parameters() if p.requires_grad]
    last_mode: list[bool] = []  # the mode the last full walk set (a fresh PeftModel says training
    # while the base model it wraps is in eval mode, so `model.training` alone cannot be trusted)

    def train(mode: bool = True):
        if last_mode != [mode]:
            full_train(mode)
            last_mode[:] = [mode]
        return model

    def zero_grad(set_to_none: bool = True) -> None:
        for p in trainable:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()

    model.train = train
    model.zero_grad = zero_grad
