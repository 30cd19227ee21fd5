"""One small builder per method id: what each method changes about the model, optimizer and args.

A builder takes the loaded base model and the recipe and returns a `Built`: the model to train,
optimizers to hand to `Trainer(optimizers=...)` (LoRA+), extra `TrainingArguments` (GaLore's
optimizer) and whether the run saves a whole model rather than an adapter. What has to happen at
load time (QLoRA's 4-bit weights) is in `quantization_config`; what needs a GPU is refused by
`check_device` before any work is done.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from peft_advisor.core.errors import ExitCode, UserError


@dataclass
class Built:
    model: object
    optimizers: tuple = (None, None)
    args: dict = field(default_factory=dict)  # extra TrainingArguments
    full_model: bool = False  # saves model.safetensors (full, galore) instead of an adapter


def check_device(recipe, cuda: bool) -> None:
    """What needs CUDA (the catalog's `needs_cuda` and `cuda_switches`: QLoRA, GaLore 8-bit) is
    refused before loading anything."""
    from peft_advisor.core.catalog import cuda_reason, method_info

    m = recipe.method
    reason = None if cuda else cuda_reason(m.name, {f: getattr(m, f, False) for f in method_info(m.name).cuda_switches})
    if reason:
        switch = next((f for f in method_info(m.name).cuda_switches if getattr(m, f, False)), None)
        hint = f" (set method.{switch} = false to run it on the CPU)" if switch else ""
        raise UserError(f"{reason}; none found{hint}", ExitCode.NO_GPU)


def sharded_qlora(recipe, world: int) -> bool:
    """QLoRA under FSDP on several GPUs: the 4-bit weights must be stored in a float dtype to shard."""
    return recipe.method.name == "qlora" and recipe.distributed.strategy == "fsdp" and world > 1


def quantization_config(recipe, world: int = 1):
    """QLoRA's base weights: NF4 with double quantisation, computing in bf16 (fp16 if asked).

    Under FSDP the packed 4-bit weights are stored as bfloat16 (`bnb_4bit_quant_storage`, as peft's
    and bitsandbytes' FSDP-QLoRA guides do), the dtype of the rest of the model, so FSDP shards them
    like any other weight."""
    if recipe.method.name != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch.float16 if recipe.model.dtype == "float16" else torch.bfloat16
    storage = {"bnb_4bit_quant_storage": torch.bfloat16} if sharded_qlora(recipe, world) else {}
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
        **storage,
    )


# ---------------------------------------------------------------- targets


def _group(qualified_name: str) -> str | None:
    lowered = qualified_name.lower()
    if "attn" in lowered or "attention" in lowered:
        return "attention"
    if "mlp" in lowered or "feed_forward" in lowered or "ffn" in lowered:
        return "mlp"
    return None


def target_modules(model, targets) -> list[str]:
    """Leaf names of the linear layers that `targets` selects (the output head is never one).

    Resolved here once, so LoRA, VeRA and GaLore adapt the same layers the estimator counted.
    """
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    found: dict[str, str | None] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head and name:
            found.setdefault(name.rsplit(".", 1)[-1], _group(name))
    if isinstance(targets, str):
        chosen = [leaf for leaf, group in found.items() if targets == "all-linear" or group == targets]
    else:
        chosen = [leaf for leaf in targets if leaf in found]
        unknown = [leaf for leaf in targets if leaf not in found]
        if unknown:
            raise UserError(
                f"method.targets: no linear layer named {', '.join(unknown)} in this model; "
                f"it has {', '.join(found)}",
                ExitCode.BAD_RECIPE,
            )
    if not chosen:
        raise UserError(f"method.targets = {targets!r} selects no linear layer in this model", ExitCode.BAD_RECIPE)
    return chosen


# ---------------------------------------------------------------- builders


def _lora_config(model, recipe, **flags):
    from peft import LoraConfig

    m = recipe.method
    return LoraConfig(
        r=m.rank,
        lora_alpha=m.alpha,
        lora_dropout=m.dropout,
        target_modules=target_modules(model, m.targets),
        task_type="CAUSAL_LM",
        **flags,
    )


def _peft(model, config):
    from peft import get_peft_model

    return get_peft_model(model, config)


def build_full(model, recipe) -> Built:
    for param in model.parameters():
        param.requires_grad_(True)
    return Built(model, full_model=True)


def build_lora(model, recipe) -> Built:
    return Built(_peft(model, _lora_config(model, recipe)))


def build_rslora(model, recipe) -> Built:
    return Built(_peft(model, _lora_config(model, recipe, use_rslora=True)))


def build_dora(model, recipe) -> Built:
    return Built(_peft(model, _lora_config(model, recipe, use_dora=True)))


def build_loraplus(model, recipe) -> Built:
    """LoRA whose B matrices learn `loraplus_lr_ratio` times faster: an optimizer, not a config."""
    import torch
    from peft.optimizers import create_loraplus_optimizer

    from peft_advisor.train.techniques import optimizer_class, optimizer_kwargs

    peft_model = _peft(model, _lora_config(model, recipe))
    t = recipe.train
    optimizer = create_loraplus_optimizer(  # two learning-rate groups, whichever AdamW train.optimizer names
        peft_model,
        optimizer_class(t.optimizer),
        lr=t.lr,
        loraplus_lr_ratio=recipe.method.loraplus_lr_ratio,
        weight_decay=t.weight_decay,
        **optimizer_kwargs(t.optimizer, torch.cuda.is_available()),
    )
    return Built(peft_model, optimizers=(optimizer, None))


def build_vera(model, recipe) -> Built:
    from peft import VeraConfig

    m = recipe.method
    config = VeraConfig(
        r=m.vera_rank,
        target_modules=target_modules(model, m.targets),
        vera_dropout=m.dropout,
        d_initial=m.vera_d_initial,
        save_projection=m.vera_save_projection,
        projection_prng_key=recipe.train.seed,
        task_type="CAUSAL_LM",
    )
    return Built(_peft(model, config))


def build_galore(model, recipe) -> Built:
    """Full-parameter training with GaLore's low-rank gradient projection (Trainer's `galore_*` optims)."""
    import torch
    from galore_torch.galore_projector import GaLoreProjector

    # Checkpoints hold each matrix's projector; allow exactly that class through torch.load's
    # weights_only unpickler, so --resume restores it instead of failing.
    torch.serialization.add_safe_globals([GaLoreProjector])
    m = recipe.method
    if m.galore_layerwise and recipe.train.save_every:
        print(
            "peft-advisor: note: layer-wise GaLore keeps its optimizer and lr-schedule state outside the "
            "checkpoints (a transformers limitation); --resume restores the weights and restarts that state",
            file=sys.stderr,
        )
    optim = "galore_adamw_8bit" if m.galore_8bit else "galore_adamw"
    if m.galore_layerwise:
        optim += "_layerwise"
    for param in model.parameters():
        param.requires_grad_(True)
    args = {
        "optim": optim,
        "optim_target_modules": target_modules(model, m.targets),
        "optim_args": f"rank={m.galore_rank}, update_proj_gap={m.galore_update_proj_gap}, scale={m.galore_scale}, proj_type=std",
    }
    return Built(model, args=args, full_model=True)


def build_qlora(model, recipe, world: int = 1) -> Built:
    """LoRA on the 4-bit base loaded with `quantization_config(recipe)`.

    Under FSDP, peft's `prepare_model_for_kbit_training` is skipped: it upcasts norms and
    embeddings to fp32, and FSDP needs one dtype per block (TRL skips it there too)."""
    from peft import prepare_model_for_kbit_training

    if sharded_qlora(recipe, world):
        if recipe.train.grad_ckpt:
            model.enable_input_require_grads()
    else:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=recipe.train.grad_ckpt)
    return Built(_peft(model, _lora_config(model, recipe)))


# ---------------------------------------------------------------- the other peft adapters (issue 17)
# Each is one peft config with the recipe's keys; they train with the Trainer's own AdamW. The
# keys mirror the study's configs (STUDY.md §1.3) so a recipe can reproduce its run.


def _targets(model, recipe) -> list[str]:
    return target_modules(model, recipe.method.targets)


def build_oft(model, recipe) -> Built:
    from peft import OFTConfig

    m = recipe.method
    config = OFTConfig(r=0, oft_block_size=m.oft_block_size, use_cayley_neumann=True, module_dropout=m.dropout,
                       target_modules=_targets(model, recipe), task_type="CAUSAL_LM")
    return Built(_peft(model, config))


def build_lokr(model, recipe) -> Built:
    from peft import LoKrConfig

    m = recipe.method
    config = LoKrConfig(r=m.rank, alpha=m.alpha, decompose_factor=m.lokr_factor, module_dropout=m.dropout,
                        target_modules=_targets(model, recipe), task_type="CAUSAL_LM")
    return Built(_peft(model, config))


def build_loha(model, recipe) -> Built:
    from peft import LoHaConfig

    m = recipe.method
    config = LoHaConfig(r=m.rank, alpha=m.alpha, module_dropout=m.dropout, target_modules=_targets(model, recipe),
                        task_type="CAUSAL_LM")
    return Built(_peft(model, config))


def build_ia3(model, recipe) -> Built:
    """IA3 scales the input of feed-forward layers and the output of the others; the MLP group is
    the feed-forward one (as the study's all-layer run and the estimator count it)."""
    from peft import IA3Config

    chosen = _targets(model, recipe)
    groups = {name.rsplit(".", 1)[-1]: _group(name) for name, _ in model.named_modules() if name}
    mlp = [leaf for leaf in chosen if groups.get(leaf) == "mlp"]
    config = IA3Config(target_modules=chosen, feedforward_modules=mlp, task_type="CAUSAL_LM")
    return Built(_peft(model, config))


def build_miss(model, recipe) -> Built:
    from peft import MissConfig

    m = recipe.method
    config = MissConfig(r=m.rank, miss_dropout=m.dropout, target_modules=_targets(model, recipe), task_type="CAUSAL_LM")
    return Built(_peft(model, config))


def build_c3a(model, recipe) -> Built:
    from peft import C3AConfig

    m = recipe.method
    config = C3AConfig(block_size=m.c3a_block_size, target_modules=_targets(model, recipe), task_type="CAUSAL_LM")
    return Built(_peft(model, config))


def build_shira(model, recipe) -> Built:
    from peft import ShiraConfig

    m = recipe.method
    config = ShiraConfig(r=m.rank, mask_type="random", random_seed=recipe.train.seed,
                         target_modules=_targets(model, recipe), task_type="CAUSAL_LM")
    return Built(_peft(model, config))


def build_lorafa(model, recipe) -> Built:
    """LoRA whose A stays frozen; peft's LoRA-FA optimizer projects B's gradient (as LoRA+, an
    optimizer handed to the Trainer)."""
    from peft.optimizers import create_lorafa_optimizer

    m, t = recipe.method, recipe.train
    peft_model = _peft(model, _lora_config(model, recipe))
    optimizer = create_lorafa_optimizer(peft_model, r=m.rank, lora_alpha=m.alpha, lr=t.lr, weight_decay=t.weight_decay)
    return Built(peft_model, optimizers=(optimizer, None))


def build_pissa(model, recipe) -> Built:
    """LoRA started from the principal singular vectors (not in the study)."""
    return Built(_peft(model, _lora_config(model, recipe, init_lora_weights="pissa")))


def build_olora(model, recipe) -> Built:
    """LoRA started from a QR decomposition (not in the study)."""
    return Built(_peft(model, _lora_config(model, recipe, init_lora_weights="olora")))


BUILDERS = {  # one per catalog id (tests/core/test_catalog.py checks the two name the same methods)
    "full": build_full,
    "lora": build_lora,
    "rslora": build_rslora,
    "dora": build_dora,
    "loraplus": build_loraplus,
    "vera": build_vera,
    "galore": build_galore,
    "qlora": build_qlora,
    "oft": build_oft,
    "lokr": build_lokr,
    "loha": build_loha,
    "ia3": build_ia3,
    "miss": build_miss,
    "c3a": build_c3a,
    "shira": build_shira,
    "lorafa": build_lorafa,
    "pissa": build_pissa,
    "olora": build_olora,
}


def build(model, recipe, ranks=None) -> Built:
    world = ranks.world if ranks is not None else 1
    if recipe.method.name == "qlora":
        built = build_qlora(model, recipe, world)
    else:
        built = BUILDERS[recipe.method.name](model, recipe)
    return with_optimizer(built, recipe)


def with_optimizer(built: Built, recipe) -> Built:
    """`train.optimizer` for the methods Trainer builds the optimizer of: its `optim` name for
    bitsandbytes' 8-bit or paged AdamW (Trainer keeps embeddings' states in 32 bits, as bitsandbytes
    advises). LoRA+ passes the class to its own builder; GaLore and LoRA-FA, which have their own
    optimizers, are refused by the recipe checks."""
    from peft_advisor.train.techniques import TRAINER_OPTIM

    name = recipe.train.optimizer
    if name == "adamw" or built.optimizers[0] is not None:
        return built
    built.args["optim"] = TRAINER_OPTIM[name]
    return built
