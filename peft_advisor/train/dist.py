"""The trainer's view of a multi-process run started by torchrun or `accelerate launch`.

The launcher (never this package) starts one process per GPU and sets RANK, WORLD_SIZE and
LOCAL_RANK; the process group itself is created by accelerate's `PartialState`, the same object
`TrainingArguments` uses, only earlier, so setup can order the ranks (rank 0 prepares the data
cache and creates the run folder first). Everything here is a no-op in a single-process run.

Only rank 0 writes events, run.json and the recipe copy; the helpers below are the few
collectives the events need: a barrier, "did any rank ask to stop", and gathering each rank's
memory figures for the step events.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

DS_CONFIG = "ds_config.json"


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    local_rank: int = 0
    world: int = 1
    local_world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @classmethod
    def from_env(cls) -> Ranks:
        env = os.environ
        world = int(env.get("WORLD_SIZE", "1"))
        return cls(int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0")), world,
                   int(env.get("LOCAL_WORLD_SIZE", str(world))))


def check_gpus(ranks: Ranks, recipe, cuda: bool) -> None:
    """More processes on this node than GPUs: one clear line instead of a CUDA error in each rank."""
    from peft_advisor.core.errors import ExitCode, UserError

    if not ranks.distributed:
        return
    check_deepspeed(recipe)
    if not cuda and recipe.distributed.strategy == "fsdp":  # accelerate would silently fall back to DDP
        raise UserError('distributed.strategy = "fsdp" needs CUDA GPUs (accelerate shards only on GPUs); '
                        'use "ddp" to run several CPU processes', ExitCode.NO_GPU)
    if not cuda and recipe.distributed.zero_offload != "none":
        raise UserError("distributed.zero_offload moves GPU memory to CPU RAM; without CUDA GPUs everything is "
                        'in RAM already: set it to "none"', ExitCode.NO_GPU)
    if not cuda and recipe.distributed.backend == "nccl":
        raise UserError('distributed.backend = "nccl" needs CUDA GPUs; use "auto" or "gloo" on the CPU', ExitCode.NO_GPU)
    if not cuda:
        return
    import torch

    count = torch.cuda.device_count()
    if ranks.local_world > count:
        raise UserError(f"distributed.gpus: {ranks.local_world} processes on this node but it has {count} "
                        "visible GPU(s)", ExitCode.NO_GPU)


def notes(recipe, ranks: Ranks, cuda: bool, run_dir=None) -> list[str]:
    """What the user should know about this multi-process run (printed once, by rank 0)."""
    if not ranks.distributed:
        return []
    d, out = recipe.distributed, []
    where = "GPUs" if cuda else "CPU processes (no CUDA)"
    out.append(f"distributed: {ranks.world} {where}, {d.strategy} over {backend(recipe, cuda)}; "
               f"global batch {recipe.train.micro_batch * recipe.train.grad_accum * ranks.world}")
    if d.strategy == "fsdp" and recipe.method.name == "qlora":
        out.append("distributed: note: QLoRA with FSDP stores the 4-bit weights in bfloat16 "
                   "(bnb_4bit_quant_storage) so FSDP can shard them, as peft and bitsandbytes document; it runs "
                   "on FSDP1, keeps norms and embeddings in bf16 (no fp32 upcast), and each GPU loads the "
                   "whole 4-bit model before it is sharded")
    if is_zero(recipe) and run_dir is not None:
        out.append("distributed: DeepSpeed config " + str(Path(run_dir) / DS_CONFIG) + "; the same run with accelerate "
                   "alone (on each node, its --machine_rank): " + accelerate_command(recipe, run_dir))
    return out


def backend(recipe, cuda: bool) -> str:
    """`auto` is nccl on CUDA and gloo on the CPU."""
    chosen = recipe.distributed.backend
    return ("nccl" if cuda else "gloo") if chosen == "auto" else chosen


def init(ranks: Ranks, recipe, cuda: bool) -> None:
    """Join the process group the launcher set up (env://), through accelerate as the Trainer would."""
    if not ranks.distributed:
        return
    from accelerate import PartialState

    if cuda:
        import torch

        torch.cuda.set_device(ranks.local_rank)
    if is_zero(recipe):  # DeepSpeed's own comm layer must know the group (ZeRO-3's zero.Init asks it the world size)
        if not cuda:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed

        deepspeed.init_distributed(dist_backend=backend(recipe, cuda))
    PartialState(cpu=not cuda, backend=backend(recipe, cuda))


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        import torch.distributed as dist

        dist.barrier()


@contextlib.contextmanager
def main_first(ranks: Ranks):
    """Rank 0 runs the block first (fills the datasets cache), then the others."""
    if not ranks.main:
        barrier(ranks)
    yield
    if ranks.main:
        barrier(ranks)


def any_rank(ranks: Ranks, *flags: bool) -> tuple[bool, ...]:
    """Each flag True on every rank when it is True on any: every rank stops at the same step."""
    if not ranks.distributed:
        return tuple(bool(f) for f in flags)
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([1 if f else 0 for f in flags], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in value.tolist())


def gather(ranks: Ranks, obj) -> list:
    """Every rank's `obj`, in rank order (on every rank)."""
    if not ranks.distributed:
        return [obj]
    import torch.distributed as dist

    out = [None] * ranks.world
    dist.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------- FSDP


def fsdp2_available() -> bool:
    """FSDP2 needs torch's `fully_shard` (2.6+) and an accelerate whose FSDP plugin has `fsdp_version`."""
    import dataclasses

    try:
        from accelerate.utils import FullyShardedDataParallelPlugin
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return False
    return "fsdp_version" in {f.name for f in dataclasses.fields(FullyShardedDataParallelPlugin)}


def fsdp_version(recipe) -> int:
    """The recipe's, else FSDP2 where installed; QLoRA always FSDP1, the path peft and bitsandbytes
    document (FSDP2 gathers Params4bit into plain tensors and loses their quantization state)."""
    from peft_advisor.core.catalog import method_info

    wanted = recipe.distributed.fsdp_version or method_info(recipe.method.name).fsdp_version
    if wanted:
        return wanted
    return 2 if fsdp2_available() else 1


def wrap_classes(model) -> list[str]:
    """The decoder block class(es) FSDP shards one by one: the model's `_no_split_modules`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = getattr(base, "_no_split_modules", None) or []
    present = {type(m).__name__ for m in base.modules()}
    return sorted(n for n in names if n in present)


def training_args(recipe, ranks: Ranks, cuda: bool, wrap: list[str], ds_config_path=None) -> dict:
    """Extra TrainingArguments for a multi-process run: the backend, FSDP full shard per block
    (`wrap`: the block class names, from `wrap_classes` on the base model), or DeepSpeed's config
    file (`ds_config_path`, the run folder's ds_config.json)."""
    if not ranks.distributed:
        return {}
    d = recipe.distributed
    args = {"ddp_backend": backend(recipe, cuda), "ddp_find_unused_parameters": False}
    if is_zero(recipe):  # the Trainer checks its precision flags against the config's
        bf16, fp16 = zero_precision(recipe, cuda)
        return {**args, "deepspeed": str(ds_config_path), "bf16": bf16, "fp16": fp16} if ds_config_path else args
    if d.strategy != "fsdp":
        return args
    from transformers import TrainingArguments

    version = fsdp_version(recipe)
    config = {
        "version": version,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "state_dict_type": "FULL_STATE_DICT",  # the saved adapter/model is one ordinary file
        "activation_checkpointing": recipe.train.grad_ckpt,  # FSDP's own, not the Trainer's (one all-gather less)
    }
    if wrap:
        config["transformer_layer_cls_to_wrap"] = list(wrap)
    # transformers 5.x takes fsdp=True with everything in fsdp_config; older ones the option string.
    modern = hasattr(TrainingArguments, "_apply_legacy_fsdp_to_config")
    if version == 2:
        config["reshard_after_forward"] = True  # FULL_SHARD
    else:  # QLoRA: flat parameters of one dtype, LoRA layers wrapped apart by the Trainer (peft's policy)
        config["use_orig_params"] = recipe.method.name != "qlora"
    args.update(fsdp=True if modern else "full_shard auto_wrap", fsdp_config=config)
    if recipe.train.grad_ckpt:
        args["gradient_checkpointing"] = False
    return args


# ---------------------------------------------------------------- DeepSpeed ZeRO


def is_zero(recipe) -> bool:
    return recipe.distributed.strategy in ("zero2", "zero3")


def check_deepspeed(recipe) -> None:
    """ZeRO needs the optional deepspeed package: one line naming the install command if it is missing."""
    from peft_advisor.core.distributed import deepspeed_missing
    from peft_advisor.core.errors import ExitCode, UserError

    missing = deepspeed_missing(recipe.distributed.strategy)
    if missing:
        raise UserError(missing, ExitCode.BAD_RECIPE)


def zero_precision(recipe, cuda: bool) -> tuple[bool, bool]:
    """(bf16, fp16) of DeepSpeed's mode: the model's dtype on GPUs (a bf16 model is trained in DeepSpeed's
    bf16 mode, with its fp32 master copy, not autocast), or what mixed_precision asks; fp32 on the CPU."""
    d = recipe.distributed
    bf16 = cuda and (d.mixed_precision == "bf16" or (d.mixed_precision == "no" and recipe.model.dtype == "bfloat16"))
    fp16 = cuda and not bf16 and (d.mixed_precision == "fp16" or recipe.model.dtype == "float16")
    return bf16, fp16


def ds_config(recipe, cuda: bool, hidden_size: int) -> dict:
    """The DeepSpeed config the run uses, every value explicit (no "auto"), so `accelerate launch
    --deepspeed_config_file` alone repeats it. The optimizer and schedule stay the Trainer's (AdamW
    and the recipe's schedule, handed to DeepSpeed as a client optimizer); the bucket sizes are the
    estimator's (`core.distributed.zero_buckets`). Precision: DeepSpeed's bf16/fp16 mode on GPUs (it
    casts the module and keeps an fp32 master copy), fp32 on the CPU."""
    from peft_advisor.core.distributed import zero_buckets

    d, t = recipe.distributed, recipe.train
    stage = 3 if d.strategy == "zero3" else 2
    bf16, fp16 = zero_precision(recipe, cuda)
    buckets = zero_buckets(hidden_size)
    zero = {"stage": stage, "overlap_comm": cuda, "contiguous_gradients": True,
            "reduce_bucket_size": buckets["reduce_bucket_size"]}
    if stage == 3:
        zero.update(stage3_prefetch_bucket_size=buckets["stage3_prefetch_bucket_size"],
                    stage3_param_persistence_threshold=buckets["stage3_param_persistence_threshold"],
                    stage3_gather_16bit_weights_on_model_save=True)  # the saved adapter/model is whole
    if d.zero_offload != "none":
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": cuda}
    if d.zero_offload == "optimizer+params":
        zero["offload_param"] = {"device": "cpu", "pin_memory": cuda}
    from peft_advisor.core.recipe import world_size

    return {
        "train_micro_batch_size_per_gpu": t.micro_batch,
        "gradient_accumulation_steps": t.grad_accum,
        "train_batch_size": t.micro_batch * t.grad_accum * world_size(d),
        "gradient_clipping": t.max_grad_norm,
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": fp16},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,  # the events stream reports progress
        "wall_clock_breakdown": False,
    }


def accelerate_command(recipe, run_dir) -> str:
    """`accelerate launch` with the run folder's DeepSpeed config and recipe copy: the same run
    without peft-advisor's launcher (into a new folder)."""
    from peft_advisor.core.recipe import processes_per_node
    from peft_advisor.core.run_folder import RECIPE

    d, run_dir = recipe.distributed, Path(run_dir)
    argv = ["accelerate", "launch", "--use_deepspeed", "--deepspeed_config_file", str(run_dir / DS_CONFIG),
            "--num_processes", str(processes_per_node(d) * d.nnodes), "--num_machines", str(d.nnodes),
            "--machine_rank", str(d.node_rank), "--main_process_ip", d.master_addr,
            "--main_process_port", str(d.master_port or 29500), "-m", "peft_advisor.train",
            str(run_dir / RECIPE), "--run-dir", str(run_dir.with_name(run_dir.name + "-again"))]
    return shlex.join(argv)
