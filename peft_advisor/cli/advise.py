"""`peft-advisor recommend` and `peft-advisor estimate`: the advisor without a screen.

Must start fast (a cold `recommend --vram 12` well under 0.3 s): only the pure core is imported
here, and NVML only when no `--vram` is given.
"""

from __future__ import annotations

import argparse
import json
import sys

from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.estimate import METHODS, Estimate, Settings, resolve_targets
from peft_advisor.core.limits import MAX_BATCH, MAX_RANK, MAX_SEQ_LEN, MAX_VRAM_GIB
from peft_advisor.core.model_spec import load_model_spec
from peft_advisor.core.units import GIB, fmt_bytes, fmt_count, fmt_file_bytes

DEFAULT_MODEL = "llama-3.1-8b"
"""The model people fine-tune most; `--model` picks another preset, a folder or a config.json."""


def register(sub) -> None:
    p = sub.add_parser("recommend", help="rank the methods that fit your GPU and adapter budgets")
    _add_model_and_shape(p)
    p.add_argument("--vram", type=float, metavar="GIB", help="GPU memory the run may use, in GiB (default: free memory of the probed GPU)")
    p.add_argument("--gpu", type=int, default=0, metavar="INDEX", help="which probed GPU sets the default budget")
    p.add_argument("--adapter-mb", type=float, metavar="MB", help="largest saved adapter, in MB (10^6 bytes)")
    p.add_argument("--priority", default="quality", help="quality | speed | memory | size (default quality)")
    p.add_argument("--methods", help="comma list to consider (default: all eight)")
    p.add_argument("--export", metavar="FILE", help="write the top recommendation as a recipe TOML")
    p.add_argument("--data", default="demo", help="dataset path for the exported recipe (default: demo)")
    p.add_argument("--force", action="store_true", help="overwrite the --export file")
    _add_parallel(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_recommend)

    e = sub.add_parser("estimate", help="peak memory, adapter size and trainable parameters of one method")
    _add_model_and_shape(e)
    e.add_argument("--method", required=True, help=", ".join(METHODS))
    e.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing on")
    e.add_argument("--galore-rank", type=int, default=128)
    e.add_argument("--galore-layerwise", action="store_true")
    e.add_argument("--galore-8bit", action="store_true")
    e.add_argument("--vera-rank", type=int, default=256)
    e.add_argument("--no-vera-projection", action="store_true", help="VeRA adapter without its projections")
    _add_parallel(e)
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=run_estimate)


def _add_parallel(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpu-name", help="use local calibration runs measured on this GPU (default: the probed GPU)")
    p.add_argument("--gpus", type=int, help="GPU count (default: the probed GPUs of the same model, or 1 with --vram)")
    p.add_argument("--strategy", default="fsdp", help="ddp | fsdp: how several GPUs share the run (default fsdp)")


def _add_model_and_shape(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"preset id, model folder or config.json (default {DEFAULT_MODEL})")
    p.add_argument("--seq", type=int, default=1024, help="sequence length in tokens (default 1024)")
    p.add_argument("--batch", type=int, default=4, help="micro-batch size (default 4)")
    p.add_argument("--rank", type=int, default=16, help="LoRA-family rank (default 16)")
    p.add_argument("--targets", default="all-linear", help="all-linear | attention | mlp | comma list of modules")


# ---------------------------------------------------------------- estimate


def run_estimate(args) -> int:
    spec = load_model_spec(args.model)
    _check_shape(args)
    s = Settings(method=_method(args.method), rank=args.rank, targets=args.targets, batch_size=args.batch,
                 seq_len=args.seq, grad_ckpt=args.grad_ckpt, galore_rank=args.galore_rank,
                 galore_layerwise=args.galore_layerwise, galore_8bit=args.galore_8bit,
                 vera_rank=args.vera_rank, vera_save_projection=not args.no_vera_projection)
    from peft_advisor.core.distributed import per_gpu_estimate

    par = _parallel(args, 1)
    est = per_gpu_estimate(spec, s, par)
    if par.gpus == 1 and args.gpu_name:
        from peft_advisor.calibration_store import calibrated_estimate

        est = calibrated_estimate(spec, s, args.gpu_name, args.model)
    if args.json:
        print(json.dumps(dict(est.to_dict(), model=spec.id, total_params=spec.total_params,
                              gpus=par.gpus, strategy=par.strategy), indent=2))
    else:
        print(format_estimate(spec.id, est))
    return ExitCode.OK


def _method(name: str) -> str:
    key = name.strip().lower()
    Settings(method=key)  # raises the 'unknown method … did you mean' error
    return key


def format_estimate(model: str, est: Estimate) -> str:
    s = est.settings
    lines = [
        f"{model} · {s.method} · batch {s.batch_size} × seq {s.seq_len}"
        + (" · checkpointing" if s.grad_ckpt else ""),
        f"peak (allocator)  {fmt_bytes(est.peak_bytes):>12}   range {fmt_bytes(est.low_bytes)} – {fmt_bytes(est.high_bytes)}",
        f"CUDA context      {fmt_bytes(est.context_bytes):>12}",
        f"total on the card {fmt_bytes(est.total_bytes):>12}",
        f"adapter file      {fmt_file_bytes(est.adapter_bytes):>12}",
        f"trainable params  {fmt_count(est.trainable_params):>12}",
        "breakdown:",
    ]
    for key, value in est.breakdown.items():
        lines.append(f"  {key:<15} {fmt_bytes(value):>12}")
    return "\n".join(lines)


def _check_shape(args) -> None:
    for flag, ceiling in (("seq", MAX_SEQ_LEN), ("batch", MAX_BATCH), ("rank", MAX_RANK)):
        value = getattr(args, flag)
        if value < 1:
            raise UserError(f"--{flag} must be >= 1, got {value}", ExitCode.USAGE)
        if value > ceiling:
            raise UserError(f"--{flag} {value} is absurd (more than {ceiling:,})", ExitCode.USAGE)
    if args.gpus is not None and args.gpus < 1:
        raise UserError(f"--gpus must be >= 1, got {args.gpus}", ExitCode.USAGE)


def _parallel(args, default_gpus: int):
    """The GPU count and strategy; an unknown strategy is an error whatever the count."""
    from peft_advisor.core.distributed import Parallel

    return Parallel(args.gpus or default_gpus, args.strategy.strip().lower())


# ---------------------------------------------------------------- recommend


def run_recommend(args) -> int:
    from peft_advisor.core.recommend import adapter_budget_bytes, check_priority, closest_miss, recommend

    spec = load_model_spec(args.model)
    _check_shape(args)  # every flag is checked before the GPUs are probed: a typo is named as such
    resolve_targets(spec, args.targets)
    methods = tuple(_method(m) for m in args.methods.split(",")) if args.methods else METHODS
    priority = check_priority(args.priority.strip().lower())
    _parallel(args, 1)  # the strategy checked too, before `_budget` probes the GPUs
    budget = _budget(args, adapter_budget_bytes(args.adapter_mb))
    par = _parallel(args, getattr(args, "_probed_gpus", 1))
    calibrate = None
    gpu_name = args.gpu_name or getattr(args, "_probed_gpu_name", None)
    if gpu_name:
        from peft_advisor.calibration_store import calibrator

        calibrate = calibrator(gpu_name, spec.id)
    advice = recommend(spec, budget, seq_len=args.seq, batch_size=args.batch, priority=priority,
                       methods=methods, rank=args.rank, targets=args.targets, parallel=par, calibrate=calibrate)
    if args.json:
        print(json.dumps(advice.to_dict(), indent=2))
    else:
        print(format_advice(advice))
    if not advice.recommendations:
        raise UserError(closest_miss(advice), ExitCode.DOES_NOT_FIT)
    if args.export is not None:
        _export(args, spec, advice)
    return ExitCode.OK


def _budget(args, adapter_bytes):
    from peft_advisor.core.recommend import Budget

    if args.vram is not None:
        if not args.vram > 0 or args.vram != args.vram:
            raise UserError(f"--vram must be a positive number of GiB, got {args.vram:g}", ExitCode.USAGE)
        if args.vram > MAX_VRAM_GIB:
            raise UserError(f"--vram {args.vram:g} GiB is absurd for one GPU (max {MAX_VRAM_GIB:g})", ExitCode.USAGE)
        # The figure people give is their card's size: it also sizes the CUDA context estimate.
        return Budget(int(args.vram * GIB), adapter_bytes, f"--vram {args.vram:g}", int(args.vram * GIB))
    from peft_advisor.probe import probe

    result = probe()
    if not result.ok or not result.gpus:
        raise UserError(result.message, ExitCode.NO_GPU)
    gpus = {g.index: g for g in result.gpus}
    if args.gpu not in gpus:
        raise UserError(f"--gpu {args.gpu}: no such GPU (found {', '.join(map(str, gpus))})", ExitCode.USAGE)
    gpu = gpus[args.gpu]
    args._probed_gpus = sum(1 for g in result.gpus if g.name == gpu.name)
    args._probed_gpu_name = gpu.name
    free = gpu.free_bytes if gpu.free_bytes is not None else gpu.total_bytes
    return Budget(int(free), adapter_bytes, f"GPU {gpu.index} {gpu.name}: free memory", gpu.total_bytes)


def _export(args, spec, advice) -> None:
    from peft_advisor.cli.recipes_cmd import write_recipe
    from peft_advisor.core.recipe import recipe_from_recommendation

    best = advice.best
    recipe = recipe_from_recommendation(
        model_id=args.model, settings=best.settings, estimate=best.estimate,
        vram_gib=advice.budget.vram_bytes / GIB, adapter_mb=(advice.budget.adapter_bytes or 0) / 1e6,
        priority=advice.priority, gpu=advice.budget.source, data_path=args.data,
        gpus=advice.parallel.gpus, strategy=advice.parallel.strategy,
    )
    write_recipe(recipe, args.export, args.force)
    print(f"wrote {args.export} ({best.name})", file=sys.stderr)


def format_advice(advice) -> str:
    from peft_advisor.core.recommend import describe_knobs

    b = advice.budget
    gpus = f" per GPU × {advice.parallel.describe()}" if advice.parallel.gpus > 1 else ""
    lines = [f"{advice.model} · budget {fmt_bytes(b.vram_bytes)}{gpus} ({b.source})"
             + (f" · adapter ≤ {fmt_file_bytes(b.adapter_bytes)}" if b.adapter_bytes else "")
             + f" · seq {advice.request.seq_len} · batch {advice.request.batch_size} · priority {advice.priority}", ""]
    header = f"{'#':>2}  {'method':<8} {'on card':>10} {'adapter':>9} {'trainable':>10}  settings"
    lines.append(header)
    lines.append("-" * len(header))
    for i, rec in enumerate(advice.recommendations, 1):
        s = rec.settings
        rank = {"vera": f"rank {s.vera_rank}", "galore": f"galore rank {s.galore_rank}", "full": "all weights"}
        knobs = [rank.get(s.method, f"rank {s.rank}")] + describe_knobs(s)
        lines.append(f"{i:>2}  {rec.name:<8} {fmt_bytes(rec.estimate.total_bytes):>10} "
                     f"{fmt_file_bytes(rec.estimate.adapter_bytes):>9} {fmt_count(rec.estimate.trainable_params):>10}  "
                     + ", ".join(knobs))
    if advice.best:
        lines += ["", f"Recommended: {advice.best.name}"]
        lines += [f"  - {r}" for r in advice.best.reasons]
    if advice.ruled_out:
        lines += ["", "Ruled out:"]
        lines += [f"  {r.name:<8} {r.reason}" for r in advice.ruled_out]
    return "\n".join(lines)
