"""`peft-advisor export` (a recipe from explicit flags) and `peft-advisor validate FILE...`.

`export` writes commented TOML atomically and refuses to overwrite without `--force` (which replaces
only a recipe, never a model file or other TOML); with `-o -` (the default) the recipe goes to
stdout. When the model is a preset, a local folder or a Hub id that resolves to a preset, the
recipe carries the estimate at export time.
"""

from __future__ import annotations

import sys

from peft_advisor.core import recipe as rc
from peft_advisor.core.errors import ExitCode, UserError


def register(sub) -> None:
    p = sub.add_parser("export", help="write a recipe (TOML) from explicit settings")
    p.add_argument("-o", "--output", default="-", metavar="FILE", help="recipe file to write; - for stdout")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it is a recipe (nothing else is replaced)")
    p.add_argument("--model", default="demo", help='"demo", a preset id, a local folder or a Hub id')
    p.add_argument("--method", default="lora", help=" | ".join(rc.methods()))
    p.add_argument("--rank", type=int, help="LoRA-family rank (default 16)")
    p.add_argument("--alpha", type=int, help="LoRA alpha (default 2 * rank)")
    p.add_argument("--dropout", type=float, help="dropout on the adapter's input, at least 0 and below 1 (default 0)")
    p.add_argument("--targets", help='all-linear | attention | mlp | comma-separated module names')
    p.add_argument("--batch", type=int, help="micro-batch size")
    p.add_argument("--grad-accum", type=int, metavar="N",
                   help="micro-batches added up per optimizer step (batch = micro-batch x N; default 1)")
    p.add_argument("--seq", type=int, help="max sequence length in tokens")
    p.add_argument("--grad-ckpt", action="store_true", default=None, help="gradient checkpointing")
    p.add_argument("--grad-ckpt-layers", type=int, metavar="N",
                   help="with --grad-ckpt: checkpoint only the first N decoder blocks (default 0: all)")
    p.add_argument("--lr", type=float, help="learning rate (default: a per-method starting point)")
    p.add_argument("--steps", type=int, help="max optimizer steps; 0 = use --epochs")
    p.add_argument("--epochs", type=float, help="passes over the data when --steps is 0 (default 1)")
    p.add_argument("--data", help='"demo", a data file, a save_to_disk folder or a Hub dataset id')
    p.add_argument("--format", dest="data_format", help=" | ".join(rc.DATA_FORMATS))
    p.add_argument("--output-dir", help="run folder (default runs/<model>-<method>)")
    p.add_argument("--dtype", help=" | ".join(rc.DTYPES))
    p.add_argument("--trust-remote-code", action="store_true", default=None,
                   help="the model needs its own Python code; train still asks for consent")
    p.add_argument("--vram", type=float, dest="vram_gib", help="GPU budget it is meant for, GiB")
    p.add_argument("--adapter-mb", type=float, help="adapter size budget, MB")
    p.add_argument("--gpu-name", "--gpu", dest="gpu", type=_gpu_name, metavar="NAME",
                   help="name of the GPU it is meant for (recorded in [budget])")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="any recipe key, e.g. --set train.warmup_ratio=0.1 (VALUE in TOML syntax; repeatable)",
    )
    p.add_argument("--no-estimate", action="store_true", help="do not compute the estimate")
    p.add_argument("--no-techniques", action="store_true",
                   help="the memory-saving techniques off in [train] (fused loss, Liger, offloading; plain AdamW), "
                        "whatever --set says")
    p.set_defaults(func=run_export)

    v = sub.add_parser("validate", help="check recipe files: ok, or one line naming the key and line")
    v.add_argument("files", nargs="+", metavar="FILE", help="recipe TOML file(s)")
    v.set_defaults(func=run_validate)


# Flag name -> recipe key, for the flags that map one to one.
_FLAG_KEYS = {
    "model": "model.id", "dtype": "model.dtype", "trust_remote_code": "model.trust_remote_code",
    "method": "method.name", "rank": "method.rank", "alpha": "method.alpha", "dropout": "method.dropout",
    "data": "data.path", "data_format": "data.format", "seq": "data.max_seq_len",
    "batch": "train.micro_batch", "grad_accum": "train.grad_accum", "grad_ckpt": "train.grad_ckpt",
    "grad_ckpt_layers": "train.grad_ckpt_layers",
    "lr": "train.lr", "steps": "train.max_steps", "epochs": "train.epochs", "output_dir": "output.dir",
    "vram_gib": "budget.vram_gib", "adapter_mb": "budget.adapter_mb", "gpu": "budget.gpu",
}


def _gpu_name(text: str) -> str:
    """A recipe records the card it was meant for by name; an index (what `recommend --gpu` and
    `estimate --gpu` take) names nothing on another machine."""
    import argparse

    if text.strip().isdigit() and int(text) < 64:  # an index; "4090" is a card's name
        raise argparse.ArgumentTypeError(f"{text!r} is a GPU index; a recipe records the GPU's name, "
                                         "e.g. --gpu-name 'RTX 4090'")
    return text


def _targets(text: str):
    return text if text in rc.TARGET_PRESETS else [t.strip() for t in text.split(",") if t.strip()]


def _toml_value(text: str):
    """`--set` values use TOML syntax; a bare word is taken as a string (`linear`)."""
    try:
        return rc.toml_loads(f"x = {text}")["x"]
    except ValueError:
        return text


def changes_from_args(args) -> dict:
    """The recipe keys the flags set, with per-method defaults for lr, alpha and the run folder."""
    changes = {key: getattr(args, flag) for flag, key in _FLAG_KEYS.items() if getattr(args, flag) is not None}
    if args.targets is not None:
        changes["method.targets"] = _targets(args.targets)
    if args.alpha is None and args.method in rc.methods():  # the catalog's one alpha rule
        from peft_advisor.core.catalog import alpha_for

        changes["method.alpha"] = alpha_for(args.method, args.rank or rc.MethodSection.rank)
    changes.setdefault("train.lr", rc.default_lr(args.method))
    changes.setdefault("output.dir", rc.default_output_dir(args.model, args.method))
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set {item}: expected KEY=VALUE", ExitCode.USAGE)
        changes[key.strip()] = _toml_value(value.strip())
    if args.no_techniques:
        changes.update({f"train.{key}": value for key, value in rc.technique_keys().items()})
    return changes


def advice_command(recipe: rc.Recipe) -> str:
    """The `recommend` line that asks for this recipe's method, model, card and shape."""
    import shlex

    d, t = recipe.distributed, recipe.train
    gpus = rc.world_size(d)
    args = ["peft-advisor", "recommend", "--model", recipe.model.id, "--vram", f"{recipe.budget.vram_gib:g}",
            "--methods", recipe.method.name, "--seq", str(recipe.data.max_seq_len),
            "--batch", str(t.micro_batch * t.grad_accum), "--rank", str(recipe.method.rank)]
    if gpus > 1:
        args += ["--gpus", str(gpus), "--strategy", d.strategy]
    return shlex.join([*args, "--export", "FILE"])


def fit_warning(recipe: rc.Recipe, name: str = "the recipe", hint: str = "") -> None:
    """A warning line when the recipe's estimate is tight or over the budget it names
    ([budget] vram_gib): the same verdict as the app's launch guard and `recommend`."""
    from peft_advisor.core.advise import recipe_fit

    fit, words = recipe_fit(recipe)
    if fit != "ok" and (fit or words):
        print(f"peft-advisor: warning: {name}: {words}{hint}", file=sys.stderr)


def with_estimate(recipe: rc.Recipe) -> rc.Recipe:
    """The recipe with its estimate filled in (per GPU, by its [distributed] table), when the
    model's shapes are known offline: the advice core's `with_estimate`, as the app's."""
    from peft_advisor.core.advise import with_estimate as estimated

    recipe, note = estimated(recipe)
    if note:
        print(f"peft-advisor: note: {note} in the recipe", file=sys.stderr)
    return recipe


def write_recipe(recipe: rc.Recipe, path, force: bool = False, header: str = ""):
    """Write `recipe` to `path` atomically (or to stdout for "-"); for `recommend --export` too."""
    if str(path) == "-":
        sys.stdout.write(rc.dumps(recipe, header=header))
        return None
    return rc.save(recipe, path, force=force, header=header)


def run_export(args) -> int:
    if args.method not in rc.methods():
        hint = rc.did_you_mean(args.method, rc.methods()) or f"; expected one of {', '.join(rc.methods())}"
        raise UserError(f"unknown method {args.method!r}{hint}", ExitCode.UNKNOWN_METHOD)
    changes = changes_from_args(args)
    recipe = rc.updated(rc.Recipe(), changes)
    from peft_advisor.core.advise import demo_fast

    recipe = demo_fast(recipe, given=changes, estimate=False)  # estimated below unless --no-estimate
    if not args.no_estimate:
        recipe = with_estimate(recipe)
        fit_warning(recipe, "the recipe", f" (`{advice_command(recipe)}` finds settings that fit)")
    path = write_recipe(recipe, args.output, force=args.force)
    if path is not None:
        print(f"wrote {path} ({recipe.method.name} on {recipe.model.id})", file=sys.stderr)
        warn_missing_packages(recipe, str(path))
    return int(ExitCode.OK)


def warn_missing_packages(recipe: rc.Recipe, name: str, cuda_here=None) -> None:
    """After an export on a machine with an NVIDIA GPU: a warning line when train would refuse the
    recipe here for a package not installed (liger-kernel; bitsandbytes for 8-bit AdamW, QLoRA or
    8-bit GaLore), with its install command.
    Without a GPU nothing is said: the recipe is for another machine (validate says more)."""
    from peft_advisor.launch import CudaHere

    from peft_advisor.core.techniques import method_needs_bnb, needs_cuda

    cuda_here = cuda_here or CudaHere()
    if (needs_cuda(recipe.train.liger_kernels, recipe.train.optimizer) or method_needs_bnb(recipe.method)) and cuda_here():
        warning = technique_warning(recipe, name, cuda_here)
        if warning:
            print(f"peft-advisor: warning: {warning}", file=sys.stderr)


def run_validate(args) -> int:
    """Each file: `ok: FILE (method, model)` on stdout, or its one-line error on stderr; a valid
    recipe that turns trust_remote_code on, or needs CUDA on a machine without it, also gets a
    warning line on stderr (still exit 0: the recipe may be meant for another machine)."""
    failed = 0
    from peft_advisor.launch import CudaHere

    cuda = CudaHere()
    for name in args.files:
        if len(args.files) == 1:
            recipe = rc.load(name)  # a single file: the dispatcher prints the error and exit code
        else:
            try:
                recipe = rc.load(name)
            except UserError as err:
                print(f"peft-advisor: {err}", file=sys.stderr)
                failed += 1
                continue
        for warning in (rc.remote_code_warning(recipe, name), cuda_warning(recipe, name, cuda),
                        technique_warning(recipe, name, cuda)):
            if warning:
                print(f"peft-advisor: warning: {warning}", file=sys.stderr)
        fit_warning(recipe, name)
        print(f"ok: {name} ({recipe.method.name}, {recipe.model.id})")
    return int(ExitCode.BAD_RECIPE if failed else ExitCode.OK)


def cuda_warning(recipe: rc.Recipe, name: str, cuda_here) -> str | None:
    """Why `train` would refuse this recipe on this machine (the trainer's own check, made
    without importing torch), or None. `cuda_here()` is asked only when the recipe needs CUDA."""
    from peft_advisor.core.catalog import cuda_reason, method_info

    m = recipe.method
    reason = cuda_reason(m.name, {f: getattr(m, f, False) for f in method_info(m.name).cuda_switches})
    if reason is None or cuda_here():
        return None
    return f"{name}: {reason}, and this machine has none: train will refuse it here"


def technique_warning(recipe: rc.Recipe, name: str, cuda_here) -> str | None:
    """Why `train` would refuse this recipe's [train] techniques on this machine (no CUDA, a
    package not installed), or None."""
    from peft_advisor.core.techniques import refusal_for

    line = refusal_for(recipe, cuda_here)
    return f"{name}: {line}: train will refuse it here" if line else None


