"""The [train] techniques in the child: the device checks, Liger's kernels, the optimizer's class.

What each technique needs, and the one-line refusals, are `core.techniques`'s (the CLI asks the same
before the child starts); the fused loss itself is `train/fused_loss.py`, activation offloading a
context in `LeanTrainer.compute_loss`.
"""

from __future__ import annotations

from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.techniques import LIGER_INSTALL, environment_refusal

# Trainer's `optim` names for the recipe's bitsandbytes optimizers (transformers OptimizerNames).
TRAINER_OPTIM = {"adamw_8bit": "adamw_bnb_8bit", "paged_adamw_8bit": "paged_adamw_8bit",
                 "paged_adamw": "paged_adamw_32bit"}


def check_device(recipe, cuda: bool) -> None:
    """Refuse what this machine cannot run: NO_GPU without CUDA (the only refusal there), else
    BAD_RECIPE for a package that is not installed."""
    t = recipe.train
    found = environment_refusal(t.liger_kernels, t.optimizer, cuda)
    if found:
        raise UserError(f"{found[0]}: {found[1]}", ExitCode.BAD_RECIPE if cuda else ExitCode.NO_GPU)


def apply_liger_kernels(model, supported: dict | None = None) -> str:
    """Patch Liger's RMSNorm, SwiGLU and RoPE kernels into this model instance (before any adapter
    wraps its layers); the loss stays the model's or `fused_loss`'s. Returns the model type.
    `supported` (model type -> Liger's patch function) is Liger's own table unless a test gives one."""
    model_type = getattr(model.config, "model_type", None)
    if supported is None:
        try:
            from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN as supported
        except ImportError as err:
            raise UserError(f"train.liger_kernels: liger-kernel cannot be imported ({err}); {LIGER_INSTALL}",
                            ExitCode.BAD_RECIPE) from None
    if model_type not in supported:
        raise UserError(f"train.liger_kernels: Liger has no kernels for this architecture ({model_type}); "
                        "set liger_kernels = false", ExitCode.BAD_RECIPE)
    import inspect

    patch = supported[model_type]
    wanted = {"rope": True, "rms_norm": True, "swiglu": True, "cross_entropy": False,
              "fused_linear_cross_entropy": False}
    accepted = inspect.signature(patch).parameters
    patch(model=model, **{k: v for k, v in wanted.items() if k in accepted})
    return model_type


def optimizer_class(name: str):
    """The optimizer class for the recipe's `train.optimizer` (torch's AdamW or bitsandbytes')."""
    import torch

    if name == "adamw":
        return torch.optim.AdamW
    import bitsandbytes as bnb

    return {"adamw_8bit": bnb.optim.AdamW8bit, "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
            "paged_adamw": bnb.optim.PagedAdamW}[name]


def optimizer_kwargs(name: str, cuda: bool) -> dict:
    """Extra keyword arguments: torch's fused AdamW on CUDA, as Trainer's default adamw_torch_fused."""
    return {"fused": cuda} if name == "adamw" else {}


OFFLOAD_MIN_BYTES = 2**20
"""Saved tensors smaller than this stay on the device (norms' rstd, masks, indices): copying them
costs a transfer each and frees next to nothing."""


def offload_saved_tensors(model, pin_memory: bool, min_bytes: int = OFFLOAD_MIN_BYTES):
    """`torch.autograd.graph.save_on_cpu`, except for what is not an activation: a frozen base
    weight that a matmul saves for backward (as a view of the parameter: `W.t()`), and small tensors.
    Plain `save_on_cpu` copies every frozen weight to pinned RAM on every micro-batch and back in
    backward (the whole model's size in CPU RAM and PCIe traffic); the estimate counts activations
    only (`core.estimate._offloaded_bytes`). What is a weight: `is_activation`."""
    import torch

    kept = weight_storages(model)

    def pack(tensor):
        if tensor.device.type == "cpu" or not is_activation(tensor, kept, min_bytes):
            return (None, tensor)
        packed = torch.empty(tensor.size(), dtype=tensor.dtype, layout=tensor.layout,
                             pin_memory=pin_memory and not tensor.is_sparse)
        packed.copy_(tensor)
        return (tensor.device, packed)

    def unpack(packed):
        device, tensor = packed
        return tensor if device is None else tensor.to(device, non_blocking=pin_memory)

    return torch.autograd.graph.saved_tensors_hooks(pack, unpack)


def weight_storages(model) -> set[int]:
    """The storage addresses of the model's parameters and buffers (a saved `W.t()` shares W's);
    a sharded parameter (FSDP2's DTensor) by its local shard."""
    found = (_storage_ptr(t) for t in (*model.parameters(), *model.buffers()))
    return {ptr for ptr in found if ptr is not None}


def _storage_ptr(tensor) -> int | None:
    """The address of a tensor's storage, or None where it has no plain one (sparse, nested)."""
    try:
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor  # a DTensor's own shard
        return local.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None


def is_activation(tensor, kept: set[int], min_bytes: int = OFFLOAD_MIN_BYTES) -> bool:
    """Worth offloading: not a weight, and at least `min_bytes`. A weight is a Parameter or a view
    of one (`W.t()`: FSDP's gathered weights and DeepSpeed ZeRO-3's are Parameters while the forward
    runs, in storage other than the shards `kept` was read from), or anything in `kept`'s storage."""
    import torch

    if isinstance(tensor, torch.nn.Parameter) or isinstance(tensor._base, torch.nn.Parameter):
        return False
    try:
        if tensor.numel() * tensor.element_size() < min_bytes:
            return False
    except (RuntimeError, NotImplementedError):  # a nested tensor has no single size
        return True
    return _storage_ptr(tensor) not in kept


def limit_checkpointing(model, layers: int) -> tuple[int, int]:
    """Keep gradient checkpointing on the first `layers` decoder blocks only (`train.grad_ckpt_layers`):
    the later ones keep their activations, so backward frees them before it recomputes a
    checkpointed block (the estimator's `checkpointed_layers`). transformers reads each block's own
    `gradient_checkpointing` flag, set on all of them by `gradient_checkpointing_enable`. Only the
    language decoder's blocks count: a multimodal model (Gemma 3) lists its vision encoder's layers
    first. Returns (checkpointed, decoder blocks that had it)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    blocks = [m for m in decoder_blocks(model) if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing]
    for block in blocks[layers:]:
        block.gradient_checkpointing = False
    return min(layers, len(blocks)), len(blocks)


def decoder_blocks(model) -> list:
    """The language decoder's blocks in order (`get_decoder().layers` of `fused_loss.causal_lm`)."""
    from peft_advisor.train.fused_loss import causal_lm

    lm = causal_lm(model)
    decoder = lm.get_decoder() if hasattr(lm, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise UserError(f"train.grad_ckpt_layers: cannot find the decoder blocks of {type(lm).__name__}; "
                        "set grad_ckpt_layers = 0 (checkpoint every block)", ExitCode.BAD_RECIPE)
    return list(layers)


def partial_checkpointing_callback(layers: int, start_fields: dict):
    """A TrainerCallback, listed before the events callback, that limits checkpointing once Trainer
    has turned it on (at the start of `train()`) and records `checkpointed_layers` ("k of n") in
    the start event."""
    from transformers import TrainerCallback

    class PartialCheckpointing(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            done, total = limit_checkpointing(model, layers)
            start_fields["checkpointed_layers"] = f"{done} of {total}"

    return PartialCheckpointing()
