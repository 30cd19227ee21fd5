"""Loading the base model and tokenizer a recipe names, and the estimate for it.

`model.id` may be "demo" (the embedded SmolLM2, converted once into the user cache), a local
folder, a preset id (loaded by its Hub id) or a Hub id in the local cache. A model that cannot be
loaded is one `UserError(UNKNOWN_MODEL)` line, raised before the run folder exists.
"""

from __future__ import annotations

import sys

from peft_advisor.core import recipe as recipes
from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.sources import local_model


def resolve_model(model_id: str) -> str:
    """The folder or Hub id to load: the converted demo, a local folder, a preset's Hub id."""
    from peft_advisor.core.model_spec import load_preset, preset_ids

    if model_id == "demo":
        from peft_advisor.train.demo import ensure_demo_model

        return str(ensure_demo_model())
    folder = local_model(model_id)  # a folder wins over a preset of the same name
    if folder is not None:
        return str(folder)
    if model_id.lower() in preset_ids():
        hf_id = load_preset(model_id.lower()).hf_id
        if not hf_id:
            raise UserError(f"model.id: preset {model_id} names no Hub model to load", ExitCode.UNKNOWN_MODEL)
        return hf_id
    return model_id


def hub_id_for(model_id: str, path: str) -> str | None:
    """The Hub id of the base model a recipe names, or None when it has none (a folder of one's
    own). The demo and the presets have one; so does a folder inside the Hugging Face cache
    (`models--ORG--NAME/snapshots/SHA`). An adapter that names a local cache path as its base
    loads on no other machine; one that names the Hub id loads anywhere."""
    from pathlib import Path

    if model_id == "demo":
        from peft_advisor.train.demo import DEMO_HUB_ID

        return DEMO_HUB_ID
    folder = Path(path)
    if not folder.is_dir():
        return path  # resolve_model gave a Hub id: a preset's, or the recipe's own
    parts = folder.resolve().parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3].removeprefix("models--").replace("--", "/", 1)
    return None


def name_base_model(model, hub_id: str | None) -> None:
    """Make the adapters peft saves (checkpoints and the final one) name the base by `hub_id`."""
    if hub_id:
        for config in getattr(model, "peft_config", {}).values():
            config.base_model_name_or_path = hub_id


def _load_errors() -> tuple[type[BaseException], ...]:
    """What a missing, damaged or hostile model folder raises while loading, beyond transformers'
    own (OSError, ValueError, KeyError): safetensors' SafetensorError (a truncated or garbage
    header), torch.load's UnpicklingError and EOFError (a garbage or empty .bin), and
    RecursionError (a JSON file nested past Python's stack). Anything else stays a bug's traceback."""
    import pickle

    from safetensors import SafetensorError

    return OSError, ValueError, KeyError, RecursionError, SafetensorError, pickle.UnpicklingError, EOFError


def _load_error(path: str, err: BaseException) -> UserError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, RecursionError):
        first = "a JSON file in it is nested too deeply"
    elif not isinstance(err, (OSError, ValueError, KeyError)):  # the weights themselves
        first = f"its weights file is damaged or truncated ({first})"
    return UserError(f"model.id: cannot load {path}: {first[:300]}", ExitCode.UNKNOWN_MODEL)


def load_tokenizer(path: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except _load_errors() as err:
        raise _load_error(path, err) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def load_model(path: str, r, cuda: bool, ranks=None):
    import torch
    from transformers import AutoModelForCausalLM

    from peft_advisor.core.catalog import trains_all_weights
    from peft_advisor.train.methods import quantization_config, sharded_qlora

    world = ranks.world if ranks is not None else 1
    dtype = getattr(torch, r.model.dtype) if cuda else torch.float32
    if dtype == torch.float16 and trains_all_weights(r.method.name):
        dtype = torch.float32  # fp16 weights cannot be trained with a GradScaler; fp16 autocast instead
    if sharded_qlora(r, world):
        dtype = torch.bfloat16  # the same dtype as the 4-bit storage, so FSDP wraps each block whole
    kwargs = {"dtype": dtype, "trust_remote_code": r.model.trust_remote_code}
    quant = quantization_config(r, world)
    if quant is not None:  # bitsandbytes quantizes on the GPU: each rank loads onto its own
        kwargs.update(quantization_config=quant, device_map={"": ranks.local_rank if ranks is not None else 0})
    try:
        kwargs.update(attention_kwargs(path, r.model.trust_remote_code))
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except _load_errors() as err:
        raise _load_error(path, err) from None


def attention_kwargs(path: str, trust_remote_code: bool) -> dict:
    """`attn_implementation` for architectures whose attention SDPA cannot compute (Gemma 2's soft-
    capped scores: `model_spec.attention_implementation`), so that training is right and its memory
    is what the estimate counts on every transformers 5.x; {} for the rest (transformers' default)."""
    from transformers import AutoConfig

    from peft_advisor.core.model_spec import attention_implementation

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    chosen = attention_implementation(getattr(config.get_text_config(), "model_type", None))
    return {"attn_implementation": chosen} if chosen else {}


def estimate_for(model, r, world: int = 1, shape: dict | None = None):
    """The estimate for this model and recipe, per GPU when there are several, or None. `shape`
    (`Prepared.estimate_shape`) replaces max_seq_len by the rows the run really has and counts
    its evaluation pass."""
    try:
        from dataclasses import replace

        from peft_advisor.core.distributed import Parallel, per_gpu_estimate
        from peft_advisor.core.model_spec import from_hf_config

        spec = from_hf_config(model.config.to_dict(), source=r.model.id)
        settings = replace(recipes.settings_from_recipe(r), **(shape or {}))
        return per_gpu_estimate(spec, settings, Parallel(world, r.distributed.strategy, r.distributed.zero_offload))
    except Exception as err:  # the estimate is advice; it must never stop a run
        print(f"peft-advisor: no estimate for this run ({type(err).__name__}: {err})", file=sys.stderr, flush=True)
        return None
