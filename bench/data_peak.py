"""Is the `--data` estimate right on data of mixed lengths? (issue 15 item 4: within 5 %)

Usage (on a machine with an NVIDIA GPU):
    python bench/data_peak.py --out bench/results/h100_data_peak.jsonl [--presets llama-3.2-1b,qwen2.5-0.5b]
    python bench/data_peak.py --dry-run                # no GPU: data, advice, recipe; no training

It writes an instruction dataset with a long tail of lengths (seeded, so the same file every time:
most answers a few hundred characters, a lognormal tail up to --tail characters: inside the first
max_seq_len of --seqs, past the second, which the trainer truncates), then per architecture and
max_seq_len:
  1. `peft-advisor recommend --model FOLDER --vram V --seq S --batch B --methods M --data FILE
     --export recipe.toml --json`, as a user would (and once without --data, for contrast); FOLDER holds the architecture with random bf16
     weights and a byte tokenizer (bench/gpu_common.py), so the advice counts the rows in the
     tokens the trainer will see;
  2. `peft-advisor train` on that recipe for ONE WHOLE EPOCH (max_steps = 0, epochs = 1) with no
     held-out rows (eval_split = 0): every row, the longest included, is in some micro-batch, and
     the collator pads that micro-batch to the longest row after truncation, which is the batch
     the estimate is for. (The trainer shuffles rows, so "longest first" cannot be promised; the
     whole epoch makes it unnecessary. The dataset is kept small, --rows, so the epoch is short.)
  3. estimate error = (recommend's peak_bytes - measured peak) / measured peak, the measured peak
     being torch.cuda.max_memory_reserved() from the run's events (bench/gpu_common.read_run);
     the trainer's own estimate (its start event) is shown beside it.
The estimate also counts an evaluation pass; with eval_split = 0 the run has none, so a case whose
estimated peak is the evaluation's (breakdown "evaluation") is flagged rather than compared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GIB = 2**30
PRESETS = "llama-3.2-1b,qwen2.5-0.5b"
TARGET_ERROR = 0.05


def cli(*args, timeout=1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peft_advisor", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def answer_chars(rng: random.Random, tail: int) -> int:
    """A long-tailed answer length: lognormal around 300 characters (capped at `tail`), and one
    row in 40 from the far tail, 0.6-1.0 × `tail` characters (one byte token each)."""
    if rng.random() < 1 / 40:
        return int(tail * rng.uniform(0.6, 1.0))
    return max(8, min(int(rng.lognormvariate(math.log(300), 0.9)), tail))


def write_long_tail(path: Path, rows: int, tail: int, seed: int = 0) -> Path:
    """Instruction rows (instruction / input / output) with long-tailed answers; deterministic."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(rows):
            a, b = rng.randint(1, 999), rng.randint(1, 999)
            words = []
            n = answer_chars(rng, tail)
            while sum(len(w) + 1 for w in words) < n:
                x, y = rng.randint(1, 999), rng.randint(1, 999)
                words.append(f"{x} plus {y} is {x + y}.")
            f.write(json.dumps({"instruction": f"Row {i}: add {a} and {b}, then show some sums.", "input": "",
                                "output": f"{a + b}. " + " ".join(words)}) + "\n")
    return path


def spec_folder(preset: str, folder: Path) -> Path:
    """The architecture's config.json and the byte tokenizer, no weights: enough for the advice
    (the dry run's model; training uses gpu_common.make_model_folder's, with weights)."""
    from bench.gpu_common import preset_config
    from tests.train.tiny import byte_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tok = byte_tokenizer()
    (folder / "config.json").write_text(json.dumps(preset_config(preset, tok), indent=1))
    tok.save_pretrained(folder)
    return folder


def recommend(model: Path, args, seq: int, method: str, *extra) -> dict:
    done = cli("recommend", "--model", model, "--vram", args.vram, "--seq", seq, "--batch", args.batch,
               "--methods", method, "--json", *extra)
    if done.returncode != 0:
        raise RuntimeError((done.stderr.strip().splitlines() or ["recommend failed"])[-1])
    return json.loads(done.stdout)


def advise_and_export(model: Path, data: Path, args, seq: int, method: str, recipe: Path, run_dir: Path) -> dict:
    """recommend --data --export for one method; the recipe then trains one whole epoch, no eval rows."""
    from peft_advisor.core import recipe as rc

    advice = recommend(model, args, seq, method, "--data", data, "--export", recipe, "--force")
    changed = rc.updated(rc.load(recipe), {
        "train.max_steps": 0, "train.epochs": 1.0, "data.eval_split": 0, "train.eval_every": 0,
        "train.save_every": 0, "train.baseline_eval_rows": 0, "train.warmup_ratio": 0.0, "output.dir": str(run_dir)})
    rc.save(changed, recipe, force=True, header=f"bench/data_peak.py: {model.name} {method}, one epoch of {data.name}")
    return advice


def run_case(preset: str, seq: int, method: str, data: Path, work: Path, args) -> dict:
    """One architecture, max_seq_len and method: the advice, then (without --dry-run) one epoch's peak."""
    from bench.gpu_common import make_model_folder, read_run

    name = f"{preset}-{seq}-{method}"
    model = spec_folder(preset, work / f"spec-{preset}") if args.dry_run else make_model_folder(preset, work / f"model-{preset}")
    advice = advise_and_export(model, data, args, seq, method, work / f"{name}.toml", work / "runs" / name)
    best = advice["recommendations"][0]
    plain = recommend(model, args, seq, method)["recommendations"][0]  # every row max_seq_len long
    row = {"preset": preset, "method": method, "max_seq_len": seq, "settings": best["settings_words"],
           "rows": advice["data"]["rows"], "longest_tokens": advice["data"]["longest_tokens"],
           "estimate_seq_len": advice["data"]["estimate_seq_len"], "cut_share": advice["data"]["cut_share"],
           "estimate_peak_bytes": best["peak_bytes"], "plain_estimate_peak_bytes": plain["peak_bytes"],
           "plain_settings": plain["settings_words"],
           "peak_is_evaluation": "evaluation" in best["breakdown"]}
    if args.dry_run:
        check = cli("validate", work / f"{name}.toml")
        row["recipe_valid"] = check.returncode == 0
        row["status"] = "dry run"
        return row
    started = time.monotonic()
    done = cli("train", work / f"{name}.toml", "--run-dir", work / "runs" / name)
    measured = read_run(work / "runs" / name)
    row.update(status=measured["status"], exit_code=done.returncode, steps=measured["steps"],
               peak_bytes=measured["peak_bytes"], trainer_estimate_peak_bytes=measured["estimate_peak_bytes"],
               wall_s=round(time.monotonic() - started, 1))
    if measured["peak_bytes"] and not row["peak_is_evaluation"]:
        row["estimate_error"] = (best["peak_bytes"] - measured["peak_bytes"]) / measured["peak_bytes"]
    if measured["status"] != "ok":
        row["stderr_tail"] = done.stderr.strip().splitlines()[-3:]
    return row


def line(row: dict) -> str:
    gib = lambda b: f"{b / GIB:.2f}" if b else "—"  # noqa: E731
    err = f"{row['estimate_error'] * 100:+.1f} %" if row.get("estimate_error") is not None else "—"
    plain = f", {', '.join(row['plain_settings'])}" if row["plain_settings"] != row["settings"] else ""
    flag = " (estimate's peak is the evaluation: not compared)" if row["peak_is_evaluation"] else ""
    return (f"{row['preset']:<14} {row['method']:<6} max_seq_len {row['max_seq_len']}: {row['rows']} rows, longest "
            f"{row['longest_tokens']} tokens (estimated at {row['estimate_seq_len']}, {row['cut_share']:.1%} cut) · "
            f"{', '.join(row['settings'])} · estimate {gib(row['estimate_peak_bytes'])} GiB (without --data "
            f"{gib(row['plain_estimate_peak_bytes'])} GiB{plain}) · measured {gib(row.get('peak_bytes'))} GiB · trainer's estimate {gib(row.get('trainer_estimate_peak_bytes'))}"
            f" GiB · error {err} · {row['status']}{flag}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default=PRESETS, help=f"comma list of architectures (default {PRESETS})")
    p.add_argument("--methods", default="lora", help="comma list of methods (default lora)")
    p.add_argument("--rows", type=int, default=400, help="rows in the generated dataset (default 400)")
    p.add_argument("--seqs", default="4096,2048", help="comma list of max_seq_len (default 4096,2048: the longest "
                   "row fits the first and is truncated by the second)")
    p.add_argument("--tail", type=int, default=3000, help="longest answer in characters (byte tokens; default 3000)")
    p.add_argument("--batch", type=int, default=4, help="micro-batch (default 4)")
    p.add_argument("--vram", type=float, default=70.0, help="budget in GiB: room enough that the advice keeps "
                   "--batch and no checkpointing (default 70)")
    p.add_argument("--seed", type=int, default=0, help="the dataset's seed (default 0)")
    p.add_argument("--work", type=Path, default=Path("/tmp/peft-advisor-data-peak"), help="models, data, recipes, runs")
    p.add_argument("--out", type=Path, help="append each row as a JSON line here")
    p.add_argument("--dry-run", action="store_true", help="data, advice and recipes only: no model weights, no training")
    args = p.parse_args(argv)
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("data_peak: no CUDA GPU here; use --dry-run", file=sys.stderr)
            return 2
    args.work.mkdir(parents=True, exist_ok=True)
    data = write_long_tail(args.work / f"long-tail-{args.rows}-{args.tail}-{args.seed}.jsonl", args.rows, args.tail, args.seed)
    print(f"data: {data} ({args.rows} rows, seed {args.seed}); one whole epoch per run, no eval rows", flush=True)
    rows = []
    cases = [(p.strip(), int(s), m.strip()) for p in args.presets.split(",") for s in args.seqs.split(",")
             for m in args.methods.split(",")]
    for preset, seq, method in cases:
        row = run_case(preset, seq, method, data, args.work, args)
        rows.append(row)
        print(line(row), flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
    errors = [abs(r["estimate_error"]) for r in rows if r.get("estimate_error") is not None]
    if errors:
        print(f"worst |estimate error| {max(errors) * 100:.1f} % (target {TARGET_ERROR * 100:.0f} %)")
    ok = all(r["status"] in ("ok", "dry run") for r in rows) and all(r.get("recipe_valid", True) for r in rows)
    return 0 if ok and all(e <= TARGET_ERROR for e in errors) else 1


if __name__ == "__main__":
    sys.exit(main())
