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
