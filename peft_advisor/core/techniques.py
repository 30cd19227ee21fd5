"""The memory-saving techniques of a recipe's [train] table: what each needs and when it is refused.

Pure (no torch, no textual), so the CLI refuses a recipe before any child starts, the trainer
refuses it again with the same words (it may run elsewhere, or the machine may have changed), and
the estimator reads the same facts (the loss chunk). The trainer's side is `train/techniques.py`
and `train/fused_loss.py`.

- `fused_loss`: the causal-LM loss without the whole vocabulary's logits: Liger's fused linear
  cross-entropy on CUDA when liger-kernel is installed, else a chunked loss in plain PyTorch
  (`loss_chunk_tokens` tokens' logits at a time).
- `liger_kernels`: Liger's RMSNorm, SwiGLU and RoPE kernels patched into the model (CUDA only).
- `offload_activations`: the tensors saved for backward go to pinned CPU memory (a no-op on the CPU).
- `optimizer`: AdamW, or bitsandbytes' 8-bit / paged AdamW (CUDA only).
"""

from __future__ import annotations

import importlib.util

OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw_8bit", "paged_adamw")
BNB_OPTIMIZERS = OPTIMIZERS[1:]
LIGER_PIN = "liger-kernel==0.8.5"  # as pyproject's `fast` extra
LIGER_INSTALL = f"pip install 'peft-advisor[fast]' (or pip install {LIGER_PIN})"
BNB_INSTALL = "pip install bitsandbytes"
STRATEGY_NAMES = {"ddp": "DDP", "fsdp": "FSDP", "zero2": "ZeRO-2", "zero3": "ZeRO-3"}

# The chunked loss holds one chunk's logits at a time: its token count is chosen so that a chunk has
# about this many logits (256 MiB in fp32), whatever the vocabulary. The estimator counts one such
# chunk (logits, fp32 copy, log-softmax and their gradients) where Liger might not run.
LOSS_CHUNK_LOGITS = 2**26
# Targets that would put an adapter on the output head (or on the input embedding that it is
# tied to): the fused loss multiplies the hidden states by the head's plain weight.
HEAD_TARGETS = ("lm_head", "embed_tokens", "embed_out", "wte")  # the trainer also checks the model itself


def loss_chunk_tokens(vocab_size: int) -> int:
    """Tokens per chunk of the chunked loss for a vocabulary of `vocab_size` (at least 1)."""
    return max(1, LOSS_CHUNK_LOGITS // max(1, int(vocab_size)))


def installed(package: str) -> bool:
    """Is `package` importable here (found without importing it: liger imports triton)?"""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def recipe_refusals(method: str, targets, optimizer: str, fused_loss: bool, strategy: str, world: int,
                    qlora: bool) -> list[tuple[str, str]]:
    """Combinations that cannot run wherever the recipe runs, as (key, one-line reason)."""
    out = []
    if fused_loss and not isinstance(targets, str):
        on_head = [t for t in targets if t in HEAD_TARGETS]
        if on_head:
            out.append(("train.fused_loss", f"cannot run with an adapter on {on_head[0]} (method.targets): the fused "
                        "loss reads the output head's own weight; drop it from the targets or set fused_loss = false"))
    if fused_loss and strategy in ("fsdp", "zero3") and world > 1:
        out.append(("train.fused_loss", f"is not supported with {STRATEGY_NAMES[strategy]} (the output head is sharded "
                    'outside its forward); use distributed.strategy = "ddp" or fused_loss = false'))
    if optimizer == "adamw":
        return out
    if strategy in ("zero2", "zero3") and world > 1:
        out.append(("train.optimizer", f'"{optimizer}" cannot be used with DeepSpeed {STRATEGY_NAMES[strategy]}, which keeps '
                    'its own fp32 optimizer partitions; set optimizer = "adamw"'))
    if method == "galore":
        out.append(("train.optimizer", f'"{optimizer}" cannot be used with galore, which has its own optimizer; '
                    'set optimizer = "adamw" (method.galore_8bit = true gives GaLore 8-bit states)'))
    elif method == "lorafa":
        out.append(("train.optimizer", f'"{optimizer}" cannot be used with lorafa, which has its own optimizer; '
                    'set optimizer = "adamw"'))
    if optimizer.startswith("paged") and qlora and strategy == "fsdp" and world > 1:
        out.append(("train.optimizer", f'"{optimizer}" cannot be used with QLoRA under FSDP (paged states and '
                    'sharded 4-bit checkpoints do not mix); use "adamw_8bit" or "adamw"'))
    return out


def checkpointing_refusal(grad_ckpt: bool, grad_ckpt_layers: int, strategy: str, world: int) -> tuple[str, str] | None:
    """Partial checkpointing (`train.grad_ckpt_layers`) where it cannot run, as (key, one-line reason)."""
    if not grad_ckpt_layers:
        return None
    if not grad_ckpt:
        return ("train.grad_ckpt_layers", f"is {grad_ckpt_layers} but gradient checkpointing is off; turn grad_ckpt "
                "on (this says how many blocks it covers) or set it to 0")
    if strategy == "fsdp" and world > 1:
        return ("train.grad_ckpt_layers", "must be 0 with FSDP on several GPUs (FSDP's own checkpointing covers every "
                'block); set it to 0 or use distributed.strategy = "ddp"')
    return None


def environment_refusal(liger_kernels: bool, optimizer: str, cuda: bool,
                        is_installed=None) -> tuple[str, str] | None:
    """What this machine cannot run, as (key, one-line reason), or None. The fused loss is never
    refused here: without CUDA or liger-kernel it runs chunked in PyTorch; offloading activations
    is a no-op on the CPU. `is_installed` defaults to `installed`, looked up at call time."""
    is_installed = is_installed or installed
    if liger_kernels and not cuda:
        return ("train.liger_kernels", "needs an NVIDIA GPU with CUDA (Liger's kernels are Triton GPU kernels); "
                "none found: set liger_kernels = false to run on the CPU")
    if liger_kernels and not is_installed("liger_kernel"):
        return ("train.liger_kernels", f"needs liger-kernel, which is not installed: {LIGER_INSTALL}")
    if optimizer in BNB_OPTIMIZERS and not cuda:
        return ("train.optimizer", f'"{optimizer}" needs an NVIDIA GPU with CUDA (bitsandbytes optimizers are CUDA '
                'kernels); none found: set optimizer = "adamw" to run on the CPU')
    if optimizer in BNB_OPTIMIZERS and not is_installed("bitsandbytes"):
        return ("train.optimizer", f'"{optimizer}" needs bitsandbytes, which is not installed: {BNB_INSTALL}')
    return None


def needs_cuda(liger_kernels: bool, optimizer: str) -> bool:
    """Does any technique of the recipe need CUDA (so a front end asks whether there is one)?"""
    return liger_kernels or optimizer in BNB_OPTIMIZERS


def method_needs_bnb(method) -> bool:
    """QLoRA's 4-bit weights and GaLore's 8-bit states are bitsandbytes kernels (a recipe's [method])."""
    return method.name == "qlora" or (method.name == "galore" and bool(getattr(method, "galore_8bit", False)))


def refusal_for(recipe, cuda_here) -> str | None:
    """The one line that refuses this recipe's techniques on this machine, or None; `cuda_here()`
    is asked only when a technique or the method needs CUDA (probing takes time). A method that
    needs bitsandbytes on a GPU machine without it is said here too (without a GPU, the method's own
    CUDA refusal comes first, `catalog.cuda_reason`)."""
    t, m = recipe.train, recipe.method
    needs_bnb = method_needs_bnb(m)
    cuda = cuda_here() if needs_cuda(t.liger_kernels, t.optimizer) or needs_bnb else False
    found = environment_refusal(t.liger_kernels, t.optimizer, cuda)
    if found is None and needs_bnb and cuda and not installed("bitsandbytes"):
        what = "4-bit weights" if m.name == "qlora" else "8-bit GaLore states (method.galore_8bit)"
        found = ("method.name", f"{m.name}'s {what} need bitsandbytes, which is not installed: {BNB_INSTALL}")
    return f"{found[0]}: {found[1]}" if found else None
