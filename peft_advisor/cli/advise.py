"""`peft-advisor recommend` and `peft-advisor estimate`: the advisor without a screen.

Must start fast (a cold `recommend --vram 12` well under 0.3 s): only the pure core is imported
here, and NVML only when no `--vram` is given.
"""

from __future__ import annotations

import argparse
import json
import sys

from peft_advisor.core.advise import DEFAULT_MODEL, AdviceRequest
from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.estimate import METHODS, Estimate, Settings
from peft_advisor.core.techniques import OPTIMIZERS
from peft_advisor.core.units import GIB, fmt_bytes, fmt_count, fmt_file_bytes

_D = AdviceRequest()
"""The advice core's defaults: the terminal app starts from the same ones."""
LABELS = {"vram_gib": "--vram", "adapter_mb": "--adapter-mb", "seq_len": "--seq", "batch_size": "--batch",
          "rank": "--rank", "gpus": "--gpus", "gpu_index": "--gpu", "model": "--model", "targets": "--targets",
          "priority": "--priority", "methods": "--methods", "strategy": "--strategy", "zero_offload": "--zero-offload",
          "data_columns": "--columns", "data_config": "--data-config", "data_split": "--data-split", "data": "--data"}
"""Fields named as the flags that set them, in the core's messages."""
NO_GPU_HINT = ": give --vram"


def register(sub) -> None:
    p = sub.add_parser("recommend", help="rank the methods that fit your GPU and adapter budgets")
    _add_model_and_shape(p)
    _add_card(p)
    p.add_argument("--adapter-mb", type=float, metavar="MB", help="largest saved adapter, in MB (10^6 bytes)")
    p.add_argument("--priority", default=_D.priority, help="quality | speed | memory | size (default quality)")
    p.add_argument("--methods", help="comma list to consider (default: every method)")
    p.add_argument("--export", metavar="FILE", help="write the top recommendation as a recipe TOML (data.path: --data, else demo)")
    p.add_argument("--force", action="store_true", help="overwrite the --export file")
    _add_no_techniques(p, "the advice never turns on a fused loss, Liger kernels, 8-bit AdamW or activation offloading")
    _add_parallel(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_recommend)

    e = sub.add_parser("estimate", help="peak memory, adapter size and trainable parameters of one method")
    _add_model_and_shape(e)
    e.add_argument("--method", required=True, help=", ".join(METHODS))
    _add_card(e)
    e.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing on")
    e.add_argument("--grad-ckpt-layers", type=int, default=0, metavar="N",
                   help="with --grad-ckpt: checkpoint only the first N decoder blocks (default 0: all)")
    e.add_argument("--galore-rank", type=int, default=128, metavar="R",
                   help="rank of GaLore's gradient projection (default 128; GaLore only)")
    e.add_argument("--galore-layerwise", action="store_true",
                   help="GaLore updates one layer at a time: less memory, no gradient accumulation, CUDA only")
    e.add_argument("--galore-8bit", action="store_true", help="GaLore with 8-bit optimizer states (CUDA only)")
    e.add_argument("--vera-rank", type=int, default=256, metavar="R",
                   help="rank of VeRA's shared random matrices (default 256; VeRA only)")
    e.add_argument("--no-vera-projection", action="store_true", help="VeRA adapter without its projections")
    e.add_argument("--fused-loss", action="store_true",
                   help="Liger's fused linear cross-entropy: the loss one chunk of tokens at a time (CUDA)")
    e.add_argument("--liger", action="store_true", help="Liger's RMSNorm, SwiGLU and RoPE kernels (CUDA)")
    e.add_argument("--offload", action="store_true", help="saved activations offloaded to pinned CPU memory")
    e.add_argument("--optimizer", default="adamw", help=" | ".join(OPTIMIZERS) + " (default adamw)")
    _add_no_techniques(e, "every technique off (not with the technique flags)")
    _add_parallel(e)
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=run_estimate)


def _add_no_techniques(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--no-techniques", action="store_true", help=f"without the memory-saving techniques: {what}")


def _add_card(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vram", type=float, metavar="GIB",
                   help="the card's memory the run may use, in GiB; also sizes the CUDA context (default: the probed GPU)")
    p.add_argument("--gpu", type=int, metavar="INDEX", help="which probed GPU is the card (default 0)")


def _add_parallel(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpu-name", help="use local calibration runs measured on this GPU (default: the probed GPU)")
    p.add_argument("--gpus", type=int, help="GPU count (default: the probed GPUs of the same model, or 1 with --vram)")
    p.add_argument("--strategy", default=_D.strategy, help="ddp | fsdp | zero2 | zero3 (DeepSpeed ZeRO): how several GPUs share the run (default fsdp)")
    p.add_argument("--zero-offload", default=_D.zero_offload,
                   help="none | optimizer | optimizer+params (zero3): what ZeRO keeps in CPU RAM (default none)")


def add_data_choice(p: argparse.ArgumentParser, with_: str = "with --data: ") -> None:
    """Which rows of the data, as the recipe's data.columns, data.config and data.split say."""
    p.add_argument("--columns", default="", metavar="FIELD=COLUMN,...",
                   help=f"{with_}your columns as the format's fields, e.g. instruction=question,output=answer")
    p.add_argument("--data-config", default="", metavar="NAME", help=f"{with_}a Hub dataset's configuration (subset)")
    p.add_argument("--data-split", default="", metavar="NAME", help=f"{with_}the split trained on (default train)")


def _add_model_and_shape(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"preset id, model folder or config.json (default {DEFAULT_MODEL})")
    p.add_argument("--seq", type=int, help=f"sequence length in tokens, the max_seq_len with --data (default {_D.seq_len})")
    p.add_argument("--data", help="training data (a file, a folder, demo or a cached Hub id): estimate at its longest "
                                  "row after truncation at --seq, with its evaluation pass (default: rows of --seq tokens)")
    p.add_argument("--packing", action="store_true", help="with --data: rows packed into --seq tokens (data.packing)")
    add_data_choice(p)
    p.add_argument("--batch", type=int, default=_D.batch_size,
                   help=f"batch size; the advice keeps micro-batch x accumulation equal to it (default {_D.batch_size})")
    p.add_argument("--rank", type=int, default=_D.rank, help=f"LoRA-family rank (default {_D.rank})")
    p.add_argument("--targets", default=_D.targets, help="all-linear | attention | mlp | comma list of modules")


# ---------------------------------------------------------------- the request


def request_from_args(args) -> AdviceRequest:
    """The flags as the advice core's request; the core checks them (one validation)."""
    methods = getattr(args, "methods", None)
    return AdviceRequest(
        model=args.model, vram_gib=args.vram, adapter_mb=getattr(args, "adapter_mb", None), seq_len=_seq(args),
        batch_size=args.batch, rank=args.rank, targets=args.targets,
        priority=getattr(args, "priority", _D.priority).strip().lower(),
        methods=tuple(m.strip().lower() for m in methods.split(",")) if methods else None,
        gpus=args.gpus, strategy=args.strategy.strip().lower(), gpu_index=args.gpu, gpu_name=args.gpu_name,
        zero_offload=args.zero_offload.strip().lower(),
        data=args.data, packing=args.packing, techniques=not args.no_techniques,
        data_columns=args.columns, data_config=args.data_config, data_split=args.data_split,
    )


def _seq(args) -> int:
    """--seq, or the advice core's default when it was not typed (a typed one is kept in an export)."""
    return _D.seq_len if args.seq is None else args.seq


def _probe():
    from peft_advisor.probe import probe

    return probe()


def _free_ram():
    from peft_advisor.probe import free_ram_bytes

    return free_ram_bytes()


def _calibration(gpu_name: str, model_id: str):
    from peft_advisor.calibration_store import calibrator

    return calibrator(gpu_name, model_id)


def _with_hint(err: UserError) -> UserError:
    """The probe's message says what is missing; the CLI says what to type."""
    return UserError(f"{err}{NO_GPU_HINT}", err.code) if err.code == ExitCode.NO_GPU else err


# ---------------------------------------------------------------- estimate


def run_estimate(args) -> int:
    from peft_advisor.core.advise import estimate_one

    req = request_from_args(args)
    optimizer = args.optimizer.strip().lower()
    if args.no_techniques and (args.fused_loss or args.liger or args.offload or optimizer != "adamw"):
        raise UserError("--no-techniques turns every technique off: drop it or the technique flags", ExitCode.USAGE)
    s = Settings(method=_method(args.method), rank=args.rank, targets=args.targets, batch_size=args.batch,
                 seq_len=_seq(args), grad_ckpt=args.grad_ckpt, grad_ckpt_layers=args.grad_ckpt_layers,
                 galore_rank=args.galore_rank,
                 galore_layerwise=args.galore_layerwise, galore_8bit=args.galore_8bit,
                 vera_rank=args.vera_rank, vera_save_projection=not args.no_vera_projection,
                 fused_loss=args.fused_loss, liger_kernels=args.liger, offload_activations=args.offload,
                 optimizer=optimizer)
    try:
        result = estimate_one(req, s, _probe if args.vram is None else None, _calibration, LABELS, ram=_free_ram)
    except UserError as err:
        raise _with_hint(err) from None
    est, par = result.estimate, result.parallel
    if args.json:
        from peft_advisor.core.model_spec import load_model_spec

        spec = load_model_spec(args.model)
        print(json.dumps(dict(est.to_dict(), model=spec.id, total_params=spec.total_params, gpus=par.gpus,
                              strategy=par.strategy, card_bytes=result.card.total_bytes, card=result.card_note,
                              budget_bytes=result.card.budget_bytes, fit=result.fit or None,
                              cpu_ram_free_per_process_bytes=result.ram_bytes, cpu_ram_fits=result.ram_fits,
                              data_words=result.data_words), indent=2))
    else:
        print(format_estimate(args.model, result))
    return ExitCode.OK


def _method(name: str) -> str:
    key = name.strip().lower()
    Settings(method=key)  # raises the 'unknown method … did you mean' error
    return key


def _ram_words(result) -> str:
    """How the offloaded bytes compare with the machine's free RAM (as `recommend` checks it)."""
    if result.ram_fits is None:
        return "; free RAM not checked"
    if result.ram_fits:
        return f", of {fmt_bytes(result.ram_bytes)} free"
    return f": over the {fmt_bytes(result.ram_bytes)} free RAM, the run would swap or be killed"


def format_estimate(model: str, result) -> str:
    from peft_advisor.core.distributed import cpu_ram_what
    from peft_advisor.core.recommend import tight_risk

    est: Estimate = result.estimate
    s = est.settings
    lines = [
        f"{model} · {s.method} · seq {s.seq_len} · {', '.join(result.words)}",
        f"peak (allocator)  {fmt_bytes(est.peak_bytes):>12}   range {fmt_bytes(est.low_bytes)} – {fmt_bytes(est.high_bytes)}",
        f"CUDA context      {fmt_bytes(est.context_bytes):>12}   {result.card_note}"
        + (" (give --vram or --gpu)" if result.card.total_bytes is None else ""),
        f"total on the card {fmt_bytes(est.total_bytes):>12}",
        *([f"CPU RAM           {fmt_bytes(est.cpu_bytes):>12}   "
           f"{'per GPU process: ' if result.parallel.gpus > 1 else ''}{cpu_ram_what(s, result.parallel.offload)}"
           + _ram_words(result)] if est.cpu_bytes else []),
        f"adapter file      {fmt_file_bytes(est.adapter_bytes):>12}",
        f"trainable params  {fmt_count(est.trainable_params):>12}",
    ]
    if result.fit == "ok":
        lines.append(f"fits              {'ok':>12}   the whole range fits {fmt_bytes(result.card.budget_bytes)}")
    elif result.fit == "tight":
        lines.append(f"fits              {'tight':>12}   {tight_risk(est, result.card.budget_bytes).removeprefix('tight: ')}")
    elif result.fit is None:
        lines.append(f"fits              {'no':>12}   over the budget {fmt_bytes(result.card.budget_bytes)}")
    lines += [f"  - {w}" for w in result.data_words]
    lines.append("breakdown:")
    for key, value in est.breakdown.items():
        lines.append(f"  {key:<15} {fmt_bytes(value):>12}")
    return "\n".join(lines)


# ---------------------------------------------------------------- recommend


def run_recommend(args) -> int:
    from peft_advisor.core.advise import advise
    from peft_advisor.core.recommend import closest_miss

    req = request_from_args(args)
    try:
        advice = advise(req, _probe, _calibration, LABELS, ram=_free_ram)
    except UserError as err:
        raise _with_hint(err) from None
    if args.json:
        print(json.dumps(advice.to_dict(), indent=2))
    else:
        print(format_advice(advice))
    if not advice.recommendations:
        raise UserError(closest_miss(advice), ExitCode.DOES_NOT_FIT)
    if args.export is not None:
        _export(args, advice, req)
    return ExitCode.OK


def _export(args, advice, req: AdviceRequest) -> None:
    from peft_advisor.cli.recipes_cmd import write_recipe
    from peft_advisor.core.recipe import recipe_from_recommendation

    from dataclasses import replace

    from peft_advisor.core.recipe import updated

    best = advice.best
    recipe = recipe_from_recommendation(  # max_seq_len is --seq, not the data's longest row the estimate used
        model_id=args.model, settings=replace(best.settings, seq_len=_seq(args)), estimate=best.estimate,
        vram_gib=advice.budget.vram_bytes / GIB, adapter_mb=(advice.budget.adapter_bytes or 0) / 1e6,
        priority=advice.priority, gpu=advice.budget.source, data_path=args.data or "demo",
        gpus=advice.parallel.gpus, strategy=advice.parallel.strategy,
    )
    if advice.parallel.gpus > 1 and advice.parallel.offload != "none":
        recipe = updated(recipe, {"distributed.zero_offload": advice.parallel.offload})
    if args.packing:
        recipe = updated(recipe, {"data.packing": True})
    from peft_advisor.core.advise import data_choice, demo_fast

    recipe = updated(recipe, data_choice(req))
    recipe = demo_fast(recipe, given=("data.max_seq_len",) if args.seq is not None else ())  # as the app's
    write_recipe(recipe, args.export, args.force)
    tight = f"; {best.fit}: its estimate's high end does not fit the budget" if best.fit != "ok" else ""
    print(f"wrote {args.export} ({best.name}{tight})", file=sys.stderr)
    from peft_advisor.cli.recipes_cmd import warn_missing_packages

    warn_missing_packages(recipe, str(args.export))


def _seq_words(advice) -> str:
    if not advice.data:
        return f"seq {advice.request.seq_len}"
    return f"seq {advice.request.seq_len} from --data (max_seq_len {advice.data['max_seq_len']})"


def format_advice(advice) -> str:
    from peft_advisor.core.recommend import settings_words

    b = advice.budget
    gpus = f" per GPU × {advice.parallel.describe()}" if advice.parallel.gpus > 1 else ""
    lines = [f"{advice.model} · budget {fmt_bytes(b.vram_bytes)}{gpus} ({b.source})"
             + (f" · adapter ≤ {fmt_file_bytes(b.adapter_bytes)}" if b.adapter_bytes else "")
             + f" · {_seq_words(advice)} · batch {advice.request.batch_size} · priority {advice.priority}", ""]
    header = f"{'#':>2}  {'method':<8} {'fit':<5} {'on card':>10} {'adapter':>9} {'trainable':>10} {'speed':>6}  settings"
    lines.append(header)
    lines.append("-" * len(header))
    for i, rec in enumerate(advice.recommendations, 1):
        step = rec.to_dict()["step_time_vs_lora"]
        lines.append(f"{i:>2}  {rec.name:<8} {rec.fit:<5} {fmt_bytes(rec.estimate.total_bytes):>10} "
                     f"{fmt_file_bytes(rec.estimate.adapter_bytes):>9} {fmt_count(rec.estimate.trainable_params):>10} "
                     f"{step:>5.2f}×  " + ", ".join(settings_words(rec.settings, rec.requested_batch)))
    if advice.best:
        lines += ["", f"Recommended: {advice.best.name}"]
        lines += [f"  - {r}" for r in advice.best.reasons]
    if advice.ruled_out:
        lines += ["", "Ruled out:"]
        lines += [f"  {r.name:<8} {r.reason}" for r in advice.ruled_out]
    lines += ["", "fit: ok = the estimate's whole range fits; tight = only its expected peak does. "
              "speed: step time × LoRA's (this trainer's H200 median, else the study's time; see the reasons)."]
    return "\n".join(lines)
