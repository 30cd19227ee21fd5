"""Hugging Face's Trainer without its per-step walks over the whole model.

A small model's step on a fast GPU is bound by the CPU launching kernels, so any other Python work
in a step adds straight to its time. Per optimizer step, Trainer walks every module or parameter
three times more than a hand-written loop: the FLOP count (`num_parameters`, for the logged
`total_flos`), `model.train()` and `model.zero_grad()`; with LoRA's small modules a 0.5B model has
about two thousand of them. Gradient clipping gets `model.parameters()`, another walk, and accelerate
then checks every parameter's gradient for a sharded type; here it clips the trainable parameters,
listed once. Trainer's count of tokens seen reads the GPU after every step; here it
is summed on the device and read when the step is logged. And the forward runs without a KV cache,
as a hand-written loop would. `bench/trainer_profile.py` measures the cost (cProfile, tokens/s per
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
        self._tokens_pending = 0  # input tokens trained on since the last log, on the device
        self._trainable = lighten(self.model)

    def compute_loss(self, model, inputs, *args, **kwargs):
        """Counts the training tokens, and runs the forward without a KV cache: with the config's
        `use_cache` (on in most models) every forward copies each layer's keys and values into a
        cache that nobody reads."""
        if model.training:
            mask = inputs.get("attention_mask")
            self._tokens_pending = self._tokens_pending + (mask.sum() if mask is not None else inputs["input_ids"].numel())
        return super().compute_loss(model, {**inputs, "use_cache": False}, *args, **kwargs)

    def log(self, logs, *args, **kwargs):
        """`state.num_input_tokens_seen` is brought up to date when there is something to log (every
        rank logs at the same steps), not with a GPU sync after every step as Trainer's own count."""
        self._flush_tokens()
        return super().log(logs, *args, **kwargs)

    def evaluate(self, *args, **kwargs):
        self._flush_tokens()
        return super().evaluate(*args, **kwargs)

    def _flush_tokens(self) -> None:
        import torch

        pending, self._tokens_pending = self._tokens_pending, 0
        total = torch.as_tensor(pending, device=self.args.device, dtype=torch.int64)
        if self.args.world_size > 1:
            total = self.accelerator.reduce(total, reduction="sum")
        self.state.num_input_tokens_seen += int(total.item())

    def _clip_grad_norm(self, model):
        """What accelerate does on one GPU or under DDP (unscale fp16 gradients, then clip), over the
        trainable parameters only: frozen ones have no gradient, which clipping skips anyway.
        Sharded training (FSDP, DeepSpeed) keeps Trainer's own path."""
        from accelerate.utils import DistributedType

        if self.accelerator.distributed_type not in (DistributedType.NO, DistributedType.MULTI_GPU):
            return super()._clip_grad_norm(model)
        import torch

        self.accelerator.unscale_gradients()
        return torch.nn.utils.clip_grad_norm_(self._trainable, self.args.max_grad_norm)

    def floating_point_ops(self, inputs) -> int:
        """Trainer's count, 6 x input tokens x non-embedding parameters, with the parameters counted once."""
        ids = inputs.get(getattr(self.model, "main_input_name", "input_ids"))
        if ids is None or not hasattr(self.model, "num_parameters"):
            return 0
        if self._non_embedding_params is None:
            self._non_embedding_params = self.model.num_parameters(exclude_embeddings=True)
        return 6 * ids.numel() * self._non_embedding_params


def lighten(model) -> list:
    """`model.train()` returns at once when the mode is already set; `model.zero_grad()` clears
    only the parameters that can have a gradient. Both are instance attributes of this model alone;
    a wrapper (DDP, FSDP) keeps its own methods. Returns the trainable parameters."""
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
    return trainable
