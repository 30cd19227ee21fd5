"""`peft-advisor merge RUN_DIR -o DIR`: the base model with the run's adapter merged into its
weights, saved as safetensors with its tokenizer: a plain folder that
`AutoModelForCausalLM.from_pretrained(DIR)` loads, with no peft and no base model to fetch.

Every refusal (a method with nothing to merge, a 4-bit base, an output folder that exists) is one
line before torch is imported; the merge itself imports it inside `merge`, as the CLI must start
light. The folder is written beside DIR under a temporary name and renamed into place, so a failed
merge leaves nothing half-written, and `--force` replaces only a model folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

from peft_advisor.core import recipe as rc
from peft_advisor.core.errors import ExitCode, UserError


def register(sub) -> None:
    p = sub.add_parser("merge", help="merge a run's adapter into its base model: one folder transformers loads as is")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder, or a checkpoint-N folder in one")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write the merged model to (new)")
    p.add_argument("--dtype", choices=rc.DTYPES, help="dtype of the merged weights (default: the recipe's model.dtype)")
    p.add_argument("--dequantize", action="store_true",
                   help="QLoRA: merge into the base loaded unquantized (the adapter was trained against its "
                        "4-bit rounding, so outputs differ slightly from the 4-bit model's)")
    p.add_argument("--force", action="store_true", help="replace DIR if it is a model folder (nothing else is replaced)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow a recipe with model.trust_remote_code = true to run the model's own Python code")
    p.set_defaults(func=run_merge)


def run_merge(args) -> int:
    from peft_advisor.train.tuned import open_run

    run = open_run(args.run_dir, args.trust_remote_code)
    refusal = merge_refusal(run, args.run_dir, args.dequantize)
    if refusal:
        raise UserError(refusal, ExitCode.USAGE)
    out = check_output(Path(args.output), Path(args.run_dir), args.force)
    dtype = args.dtype or run.recipe.model.dtype
    print(f"peft-advisor: merging the {run.method} adapter of {args.run_dir} into {run.recipe.model.id} ({dtype})",
          file=sys.stderr, flush=True)
    merge(run, out, dtype)
    print(f"peft-advisor: wrote {out}", file=sys.stderr)
    return int(ExitCode.OK)


def merge_refusal(run, name: str, dequantize: bool) -> str | None:
    """Why this run cannot be merged as asked, or None."""
    if not run.has_adapter:
        return (f"{name}: a {run.method} run trains every weight and saved the whole model: there is no adapter "
                f"to merge; load {name} itself with AutoModelForCausalLM.from_pretrained")
    if run.recipe.model.load_in_4bit and not dequantize:
        return (f"{name}: this {run.method} adapter was trained on a 4-bit base, and merging into 4-bit weights "
                f"rounds it away; pass --dequantize to merge into the unquantized base")
    return None


def check_output(out: Path, run_dir: Path, force: bool) -> Path:
    """DIR, absolute, when it may be written: new, or with --force a model folder that is not the run."""
    out = out.expanduser().absolute()
    if out.resolve() in (run_dir.resolve(), *run_dir.resolve().parents):
        raise UserError(f"{out}: is the run folder or holds it; name another -o folder", ExitCode.USAGE)
    if out.exists() or out.is_symlink():
        if not force:
            raise UserError(f"{out}: already exists; pass --force to replace it", ExitCode.EXISTS)
        if not (out.is_dir() and (out / "config.json").is_file()):
            raise UserError(f"{out}: exists and is not a model folder (no config.json); not replacing it", ExitCode.EXISTS)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{out.parent}: cannot create it: {err.strerror or err}", ExitCode.USAGE) from None
    return out


def merge(run, out: Path, dtype: str) -> None:
    """Load base + adapter in `dtype` on the CPU, merge, save: weights, config, tokenizer."""
    import shutil
    import tempfile

    from peft_advisor.train.tuned import load_tokenizer, load_tuned

    model = load_tuned(run, dtype)
    try:
        merged = model.merge_and_unload()
    except (ValueError, TypeError, NotImplementedError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"peft cannot merge this {run.method} adapter: {first[:300]}", ExitCode.USAGE) from None
    tokenizer = load_tokenizer(run)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.chmod(0o755)  # mkdtemp makes it private; the model is an ordinary folder
        _replace(staging, out)
    except OSError as err:  # a full disk, a read-only folder
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"{out}: cannot write the merged model: {err.strerror or err}", ExitCode.USAGE) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace(new: Path, out: Path) -> None:
    """`new` renamed to `out`; an old model folder there is moved aside first, then removed."""
    import os
    import shutil

    old = out.with_name(f".{out.name}.old-{os.getpid()}") if out.exists() else None
    if old is not None:
        os.rename(out, old)
    os.rename(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
