"""Where does a `peft-advisor train` step spend its time against a plain loop? (a diagnosis, on a GPU)

Usage:
    python bench/trainer_profile.py --model qwen2.5-0.5b --steps 40 [--profile] [--out FILE]

Runs the real trainer code (`train.run.Run`) in this process once per variant, each toggling one
setting (or putting back the plain HF Trainer that train/lean.py trims), and times every optimizer
step with a callback (tokens/s = batch x seq / median step time, steps after the 3rd). The plain
loop of `trainer_overhead.py` runs after the variants as the reference; `--rounds N` runs them all
N times over, alternating, and reports the medians. `--profile` adds a cProfile of the
trainer as shipped (top functions by own time): time in `.item()`/`__bool__` is the CPU waiting for
the GPU; time elsewhere is CPU work the GPU may wait on. `--trace DIR` records the GPU's kernels
over ten steps of the trainer as shipped and of the plain loop, and prints where each step's GPU
time goes (`bench/kernel_trace.py`: busy, idle, the longest idle gaps, the kernels that differ).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import pstats
import statistics
import tempfile
import time
from pathlib import Path

from gpu_common import make_model_folder, make_text_data, write_recipe
from kernel_trace import Tracer, report, summarize
from trainer_overhead import plain_loop

VARIANTS = {
    "as shipped": {},
    "before (HF Trainer)": {"hf_trainer": True, "all_ones_mask": True, "args": {  # the trainer at f77371d
        "dataloader_num_workers": 0, "dataloader_persistent_workers": False,
        "include_num_input_tokens_seen": "non_padding", "logging_nan_inf_filter": True}},
    "no loader workers": {"args": {"dataloader_num_workers": 0, "dataloader_persistent_workers": False}},
    # the pin-memory thread shares the GIL with the thread launching kernels
    "no pinned memory": {"args": {"dataloader_pin_memory": False}},
    "Trainer's token count": {"args": {"include_num_input_tokens_seen": "non_padding"}},
    "Trainer's nan/inf filter": {"args": {"logging_nan_inf_filter": True}},
    "log every 10": {"args": {"logging_steps": 10}},
    "all-ones attention mask": {"all_ones_mask": True},
    # the collector's full passes walk every object the process holds (datasets, tokenizer, Trainer)
    "gc frozen": {"gc_freeze": True},
}


def run_variant(name: str, recipe: Path, work: Path, variant: dict, profile: bool = False, tracers=()) -> dict:
    import torch
    from transformers import TrainerCallback

    import peft_advisor.train.data as data_mod
    import peft_advisor.train.lean as lean_mod
    import peft_advisor.train.run as run_mod

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter())
            for tracer in tracers:
                tracer(state.global_step)

    original_args, original_collator, lean = run_mod.training_args, data_mod.Collator, lean_mod.LeanTrainer

    def patched_args(*a, **k):
        return {**original_args(*a, **k), **variant.get("args", {})}

    class OnesMask(original_collator):
        def __call__(self, features):
            batch = super().__call__(features)
            batch.setdefault("attention_mask", torch.ones_like(batch["input_ids"]))
            return batch

    run_mod.training_args = patched_args
    if variant.get("all_ones_mask"):
        data_mod.Collator = OnesMask
    if variant.get("hf_trainer"):  # the per-step walks of train/lean.py put back
        from transformers import Trainer

        lean_mod.LeanTrainer = Trainer
    try:
        run = run_mod.Run(recipe, work / f"run-{len(list(work.glob('run-*')))}")
        run.setup()
        make = run.make_trainer

        def make_with_timer():
            trainer = make()
            trainer.add_callback(Timer())
            if variant.get("gc_freeze"):
                gc.collect()
                gc.freeze()
            return trainer

        run.make_trainer = make_with_timer
        prof = cProfile.Profile() if profile else None
        if prof:
            prof.enable()
        code = run.train()
        if prof:
            prof.disable()
        run.cleanup()
    finally:
        gc.unfreeze()
        run_mod.training_args, data_mod.Collator, lean_mod.LeanTrainer = original_args, original_collator, lean
    batch, seq = run.recipe.train.micro_batch, run.recipe.data.max_seq_len
    steps = [b - a for a, b in zip(times, times[1:])][3:]
    row = {"variant": name, "exit": code, "tokens_per_s": round(batch * seq / statistics.median(steps), 1)}
    if prof:
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out).sort_stats("tottime")
        stats.print_stats(30)
        stats.print_callers(r"_named_members|\(train\)|zero_grad|\(named_modules\)")
        row["profile"] = out.getvalue()
    del run
    torch.cuda.empty_cache()
    return row


def rounds(names: list[str], recipe: Path, work: Path, model: Path, data: Path, args) -> list[dict]:
    """Every variant, then the plain loop, `args.rounds` times over, in this one process: a drift of
    the machine (a CPU-bound step's speed varies by a third between processes) hits all alike.
    Each row's tokens/s is the median over the rounds."""
    runs: dict[str, list[dict]] = {n: [] for n in names + ["plain loop"]}
    for i in range(args.rounds):
        for n in names:
            runs[n].append(run_variant(n, recipe, work, VARIANTS[n]))
        plain = plain_loop(str(model), str(data), args.steps, args.batch, args.seq, "lora")
        runs["plain loop"].append({"variant": "plain loop", "exit": 0, "tokens_per_s": round(plain["tokens_per_s"], 1)})
        if args.rounds > 1:
            print(f"round {i + 1}: " + ", ".join(f"{n} {r[-1]['tokens_per_s']:.0f}" for n, r in runs.items()), flush=True)
    return [{"variant": n, "exit": max(r["exit"] for r in rs), "rounds": [r["tokens_per_s"] for r in rs],
             "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in rs), 1)} for n, rs in runs.items()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--variants", help="comma-separated names (default: all)")
    ap.add_argument("--rounds", type=int, default=1, help="run every variant and the plain loop this many times")
    ap.add_argument("--out")
    ap.add_argument("--trace", metavar="DIR", help="write kernel traces here and print where GPU time goes")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trainer-profile-"))
    model = make_model_folder(args.model, work / "model")
    data = make_text_data(work / "text.jsonl", rows=600)
    recipe = write_recipe(work / "r.toml", model, data, work / "unused", "lora", steps=args.steps,
                          batch=args.batch, seq=args.seq)
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    rows = rounds(names, recipe, work, model, data, args)
    if args.profile:
        rows.append(run_variant("as shipped (cProfile)", recipe, work, {}, profile=True))
    trace = Path(args.trace) if args.trace else None
    if trace:  # kernels over steps 11-20; the host's ops too over steps 23-25 (they slow those steps)
        trace.mkdir(parents=True, exist_ok=True)
        tracers = (Tracer(trace / "ours_kernels.json.gz", 10, 10), Tracer(trace / "ours_host.json.gz", 22, 3, cpu=True))
        rows.append(run_variant("as shipped (traced)", recipe, work, {}, tracers=tracers))
        plain_loop(str(model), str(data), args.steps, args.batch, args.seq, "lora",
                   on_step=Tracer(trace / "plain_kernels.json.gz", 9, 10))
    plain = next(r for r in rows if r["variant"] == "plain loop")
    for row in rows:
        print(f"{row['variant']:<24} {row['tokens_per_s']:>10.1f} tokens/s  "
              f"{row['tokens_per_s'] / plain['tokens_per_s']:.3f}x plain  exit {row['exit']}")
    for row in rows:
        if "profile" in row:
            print(row["profile"])
    if trace:
        print(report(summarize(trace / "ours_kernels.json.gz", 10), summarize(trace / "plain_kernels.json.gz", 10)))
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
