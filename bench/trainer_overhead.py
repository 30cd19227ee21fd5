"""Does `peft-advisor train` cost speed or memory against a plain transformers + peft loop?

Usage (on an NVIDIA GPU):
    python bench/trainer_overhead.py --shapes qwen2.5-0.5b:8x512,llama-3.2-1b:8x1024 --repeats 3 \
        --out bench/results/h200_overhead.jsonl

Both runs use the same model folder (real architecture, random bf16 weights), the same packed
text, LoRA r16 on all linear layers, batch x seq, fused AdamW, grad-norm clipping and a loss read
every step, each in a fresh process, alternating. The plain loop is what a person would write by
hand. Prints, per shape, the median tokens/s of the peft-advisor runs / the plain loops' (target
>= 0.97) and peak reserved memory of the peft-advisor runs / the plain loops' (target <= 1.03),
measured in this one run. A small shape (a 0.5B model, 8 x 512 tokens) is bound by the CPU
launching kernels and shows the trainer's per-step Python work most; a larger one is GPU-bound.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpu_common import ROOT, make_model_folder, make_text_data, read_run, write_recipe


def plain_loop(model_dir: str, data: str, steps: int, batch: int, seq: int, method: str, on_step=None) -> dict:
    """`on_step(step)`, if given, is called after each step's loss read (trainer_profile's tracer)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = []
    for line in Path(data).read_text().splitlines():
        ids += tok(json.loads(line)["text"])["input_ids"] + [tok.eos_token_id]
    blocks = torch.tensor(ids[: len(ids) // seq * seq]).view(-1, seq)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32  # as the trainer does on each
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    model.config.use_cache = False
    r = 16
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", lora_dropout=0.0,
                                             use_dora=method == "dora", task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0, fused=True)  # Trainer's adamw_torch_fused
    sched = get_cosine_schedule_with_warmup(opt, 0, steps)
    model.train()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rates, losses, last = [], [], time.time()
    for step in range(steps):
        x = blocks[(step * batch) % (len(blocks) - batch):][:batch].to(device)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())  # read the loss every step, as any logging loop does
        if on_step:
            on_step(step)
        now = time.time()
        rates.append(batch * seq / (now - last))
        last = now
    peak = torch.cuda.max_memory_reserved() if device == "cuda" else None
    return {"tokens_per_s": statistics.median(rates[3:]), "peak_bytes": peak, "losses": losses}


def parse_shape(text: str) -> tuple[str, int, int]:
    """"qwen2.5-0.5b:8x512" -> ("qwen2.5-0.5b", 8, 512)."""
    model, _, dims = text.partition(":")
    batch, _, seq = dims.partition("x")
    return model, int(batch), int(seq)


def parse_cpus(text: str) -> set[int]:
    """"0-3,8" -> {0, 1, 2, 3, 8}."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def one_pair(model_dir: Path, data: Path, work: Path, method: str, steps: int, batch: int, seq: int) -> tuple:
    """One `peft-advisor train` run, then one plain loop, each in a fresh process."""
    run_dir = work / f"run-{len(list(work.glob('run-*')))}"
    recipe = write_recipe(work / "r.toml", model_dir, data, run_dir, method, steps=steps, batch=batch, seq=seq)
    subprocess.run([sys.executable, "-m", "peft_advisor", "train", str(recipe)], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    ours = read_run(run_dir)
    proc = subprocess.run([sys.executable, __file__, "--plain", str(model_dir), str(data), "--steps", str(steps),
                           "--batch", str(batch), "--seq", str(seq), "--method", method],
                          check=True, capture_output=True, text=True, cwd=ROOT / "bench")
    return ours, json.loads(proc.stdout.strip().splitlines()[-1])


def measure_shape(shape: str, method: str, steps: int, repeats: int) -> dict:
    """Runs alternate (ours, plain, ours, plain, ...) so that a drift of the machine hits both alike;
    the ratio is of the medians over the repeats."""
    model, batch, seq = parse_shape(shape)
    work = Path(tempfile.mkdtemp(prefix="overhead-"))
    model_dir = make_model_folder(model, work / "model")
    data = make_text_data(work / "text.jsonl", rows=max(600, steps * batch * seq // 1400 + 50))
    pairs = []
    for _ in range(repeats):
        pairs.append(one_pair(model_dir, data, work, method, steps, batch, seq))
        print(f"{shape}: peft-advisor {pairs[-1][0]['tokens_per_s']:.1f}, plain {pairs[-1][1]['tokens_per_s']:.1f} "
              "tokens/s", flush=True)
    ours = [o["tokens_per_s"] for o, _ in pairs]
    plain = [p["tokens_per_s"] for _, p in pairs]
    ours_peak, plain_peak = max(o["peak_bytes"] or 0 for o, _ in pairs), max(p["peak_bytes"] or 0 for _, p in pairs)
    return {
        "model": model, "method": method, "batch": batch, "seq": seq, "steps": steps, "repeats": repeats,
        "peft_advisor_tokens_per_s": [round(x, 1) for x in ours], "plain_tokens_per_s": [round(x, 1) for x in plain],
        "tokens_per_s_ratio": round(statistics.median(ours) / statistics.median(plain), 3),
        # each pair ran back to back, so its own ratio is immune to the machine drifting between pairs
        "pair_ratios": [round(o / p, 3) for o, p in zip(ours, plain)],
        "peft_advisor_peak_bytes": ours_peak or None, "plain_peak_bytes": plain_peak or None,
        "peak_ratio": round(ours_peak / plain_peak, 3) if plain_peak else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="qwen2.5-0.5b:8x512", help="MODEL:BATCHxSEQ[,...] (model: a preset id)")
    ap.add_argument("--method", default="lora", choices=["lora", "dora"])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3, help="alternating pairs of runs per shape")
    ap.add_argument("--out", help="write one JSON line per shape")
    ap.add_argument("--cpus", help="run every process on these CPUs (e.g. 0-7): is the spread between "
                                   "processes where the scheduler puts them?")
    ap.add_argument("--plain", nargs=2, metavar=("MODEL_DIR", "DATA"), help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)  # for --plain
    ap.add_argument("--seq", type=int, default=512, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plain:
        print(json.dumps(plain_loop(*args.plain, args.steps, args.batch, args.seq, args.method)))
        return 0
    if args.cpus:
        os.sched_setaffinity(0, parse_cpus(args.cpus))  # inherited by every run started from here
    rows = []
    for shape in args.shapes.split(","):  # each shape's row is printed and written as soon as it is done
        r = measure_shape(shape, args.method, args.steps, args.repeats)
        rows.append(r)
        print(json.dumps(r))
        print(f"{r['model']} {r['method']} {r['batch']}x{r['seq']}: tokens/s ratio (peft-advisor / plain loop) "
              f"{r['tokens_per_s_ratio']:.3f} (target >= 0.97)"
              + (f"; peak memory ratio {r['peak_ratio']:.3f} (target <= 1.03)" if r["peak_ratio"] else ""), flush=True)
        if args.out:
            Path(args.out).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
