"""A run's trained model, opened after training: what `peft-advisor merge` and `try` work on.

`open_run` checks the folder with no heavy import (every bad input is one line before torch loads);
the loaders import torch, transformers and peft inside, as the trainer child does. The base
model is found the way the trainer found it (the run's recipe copy, `resolve_model`), not from the
Hub id that adapter_config.json names, so a demo run works offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peft_advisor.core import recipe as rc
from peft_advisor.core import run_folder as rf
from peft_advisor.core.errors import ExitCode, UserError

ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class RunModel:
    """A run folder (or one of its checkpoints) and the recipe that made it."""

    weights_dir: Path
    """Where the saved adapter or model is: the run folder, or a checkpoint-N folder in it."""
    recipe: rc.Recipe
    has_adapter: bool
    """True for the adapter methods; False for full and GaLore, which save the whole model."""

    @property
    def method(self) -> str:
        return self.recipe.method.name


def open_run(path, trust_remote_code: bool = False) -> RunModel:
    """The run in `path` (a run folder or a checkpoint-N folder in one), checked; no torch."""
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"{path}: no such run folder", ExitCode.USAGE)
    recipe_path = folder / rf.RECIPE
    if not recipe_path.is_file() and rf.checkpoint_step(folder) is not None:  # a checkpoint: its run's recipe
        recipe_path = folder.parent / rf.RECIPE
    if not recipe_path.is_file():
        raise UserError(f"{path}: not a run folder (no {rf.RECIPE})", ExitCode.USAGE)
    recipe = rc.load(recipe_path)
    rc.check_remote_code(recipe, recipe_path, trust_remote_code)  # loading runs the model's code, as training did
    if (folder / ADAPTER_CONFIG).is_file():
        return RunModel(folder, recipe, True)
    if (folder / "config.json").is_file() and any(folder.glob("model*.safetensors")):
        return RunModel(folder, recipe, False)
    last, _ = rf.last_complete_checkpoint(folder)
    hint = f"; its last checkpoint is {last}" if last else ""
    raise UserError(f"{path}: no saved model in it (the run has not ended, or failed){hint}", ExitCode.USAGE)


def base_path(run: RunModel) -> str:
    from peft_advisor.train.model import resolve_model

    return resolve_model(run.recipe.model.id)


def load_tokenizer(run: RunModel):
    """The tokenizer the run saved beside its weights (or the base's, for a checkpoint without one)."""
    from peft_advisor.train.model import load_tokenizer as load

    has_own = (run.weights_dir / "tokenizer_config.json").is_file()
    return load(str(run.weights_dir) if has_own else base_path(run), run.recipe.model.trust_remote_code)


def quiet_libraries() -> None:
    """The trainer child's filters (train/quiet.py), and no progress bars: a terminal command
    prints its answer, not the loading of 21 tensors."""
    from transformers.utils import logging

    from peft_advisor.train import quiet

    quiet.install()
    logging.disable_progress_bar()


def load_plain(path: str, run: RunModel, dtype: str, device: str = "cpu"):
    """A causal LM from `path` in `dtype` (never quantized), in eval mode, on `device`."""
    quiet_libraries()
    import torch
    from transformers import AutoModelForCausalLM

    from peft_advisor.train.model import _load_error, _load_errors, attention_kwargs

    remote = run.recipe.model.trust_remote_code
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), trust_remote_code=remote,
                                                     **attention_kwargs(path, remote))
    except _load_errors() as err:
        raise _load_error(path, err) from None
    return model.to(device).eval()


def load_tuned(run: RunModel, dtype: str, device: str = "cpu"):
    """The base with the run's adapter on top (a PeftModel), or the run's whole model."""
    if not run.has_adapter:
        return load_plain(str(run.weights_dir), run, dtype, device)
    from peft import PeftModel

    base = load_plain(base_path(run), run, dtype, device)
    try:
        return PeftModel.from_pretrained(base, str(run.weights_dir)).eval()
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{run.weights_dir}: cannot load the adapter onto its base: {first[:300]}",
                        ExitCode.UNKNOWN_MODEL) from None
