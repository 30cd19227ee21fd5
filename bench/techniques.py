"""What the [train] techniques save against a plain transformers + peft loop (issue 15's targets).

Usage (on an NVIDIA GPU, with liger-kernel and bitsandbytes installed: pip install -e '.[fast]' bitsandbytes):
    python bench/techniques.py --out bench/results/h100_techniques.jsonl

For each shape (default Llama-3.2-1B and Qwen2.5-0.5B, LoRA r16 on all linear layers, 8 x 1024
tokens, no checkpointing; real architecture, random bf16 weights, packed text, as
bench/trainer_overhead.py), each in a fresh process:
  plain_loop     the hand-written transformers + peft loop (trainer_overhead.plain_loop)
  train          `peft-advisor train`, no technique
  fused_liger    train.fused_loss + train.liger_kernels
  fused_liger_8bit   the same + train.optimizer = "adamw_8bit"
  fused_offload  train.fused_loss + train.offload_activations
Prints per variant the peak reserved bytes (the run's events; the loop's allocator), the median
steady tokens/s, the loss at steps 1, 10 and the last, the ratios peak / plain loop and tokens/s /
plain loop (targets: peak <= 0.6x, tokens/s >= 1.1x for the techniques), and the largest absolute
difference of the loss curve against the plain loop's and against `train`'s (same data order and
seed: bf16 noise only). A JSON line per variant is appended to --out as soon as it finishes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from gpu_common import ROOT, make_model_folder, make_text_data, read_run, write_recipe
from trainer_overhead import parse_shape

VARIANTS = {  # recipe changes over the plain `peft-advisor train` recipe
    "train": {},
    "fused_liger": {"train.fused_loss": True, "train.liger_kernels": True},
    "fused_liger_8bit": {"train.fused_loss": True, "train.liger_kernels": True, "train.optimizer": "adamw_8bit"},
    "fused_offload": {"train.fused_loss": True, "train.offload_activations": True},
}
LOSS_STEPS = (1, 10, 50)


def events_of(run_dir: Path) -> list[dict]:
    from peft_advisor.core.events import read_events

    return read_events(run_dir / "events.jsonl")[0]


def run_plain_loop(model_dir: Path, data: Path, steps: int, batch: int, seq: int) -> dict:
    """trainer_overhead's plain loop in a fresh process (its --plain mode prints one JSON line)."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "trainer_overhead.py"), "--plain", str(model_dir),
                           str(data), "--steps", str(steps), "--batch", str(batch), "--seq", str(seq),
                           "--method", "lora"], check=True, capture_output=True, text=True, cwd=ROOT / "bench")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"status": "ok", "peak_bytes": out["peak_bytes"], "tokens_per_s": out["tokens_per_s"],
            "losses": out["losses"]}


def run_variant(name: str, model_dir: Path, data: Path, work: Path, steps: int, batch: int, seq: int) -> dict:
    """`peft-advisor train` with the variant's [train] keys; its events folded by gpu_common.read_run."""
    from peft_advisor.core import recipe as rc

    run_dir = work / f"run-{name}"
    path = write_recipe(work / f"{name}.toml", model_dir, data, run_dir, "lora", steps=steps, batch=batch, seq=seq)
    rc.save(rc.updated(rc.load(path), VARIANTS[name]), path, force=True)
    proc = subprocess.run([sys.executable, "-m", "peft_advisor", "train", str(path)], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if not (run_dir / "events.jsonl").exists():  # refused before training: the one line says why
        return {"status": "refused", "message": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else None}
    row, events = read_run(run_dir), events_of(run_dir)
    start = next((e for e in events if e["kind"] == "start"), {})
    losses = [e["loss"] for e in events if e["kind"] == "step" and e.get("loss") is not None]  # log_every = 1
    row.update(losses=losses, loss_impl=start.get("loss_impl"), liger_kernels=start.get("liger_kernels"),
               offload_activations=start.get("offload_activations"), optimizer=start.get("optimizer"))
    return row


def max_abs_diff(a: list[float] | None, b: list[float] | None) -> float | None:
    if not a or not b:
        return None
    return round(max(abs(x - y) for x, y in zip(a, b)), 4)


def summarise(row: dict, plain: dict, train: dict | None) -> dict:
    """Ratios against the plain loop, the losses at LOSS_STEPS, the curves' largest differences."""
    losses = row.get("losses") or []
    row["loss_at"] = {str(s): round(losses[s - 1], 4) for s in LOSS_STEPS if len(losses) >= s}
    if len(losses) and str(len(losses)) not in row["loss_at"]:
        row["loss_at"][str(len(losses))] = round(losses[-1], 4)
    peak, rate = row.get("peak_bytes"), row.get("tokens_per_s")
    row["peak_ratio"] = round(peak / plain["peak_bytes"], 3) if peak and plain.get("peak_bytes") else None
    row["tokens_per_s_ratio"] = round(rate / plain["tokens_per_s"], 3) if rate and plain.get("tokens_per_s") else None
    row["loss_max_abs_diff_vs_plain_loop"] = max_abs_diff(losses, plain.get("losses"))
    row["loss_max_abs_diff_vs_train"] = max_abs_diff(losses, (train or {}).get("losses"))
    return row


def show(row: dict) -> str:
    peak = f"{row['peak_bytes'] / 2**30:.2f} GiB" if row.get("peak_bytes") else "-"
    rate = f"{row['tokens_per_s']:.0f}" if row.get("tokens_per_s") else "-"
    ratios = f"peak {row.get('peak_ratio')}x, tokens/s {row.get('tokens_per_s_ratio')}x"
    losses = " ".join(f"@{k}={v}" for k, v in row.get("loss_at", {}).items())
    return (f"{row['model']} {row['variant']:<17} {row['status']:<8} peak {peak:>10}  tokens/s {rate:>7}  {ratios}  "
            f"loss {losses}  max|Δloss| vs loop {row.get('loss_max_abs_diff_vs_plain_loop')}, vs train "
            f"{row.get('loss_max_abs_diff_vs_train')}" + (f"  ({row['message']})" if row.get("message") else ""))


def measure_shape(shape: str, steps: int, variants: list[str], out: Path | None) -> list[dict]:
    model, batch, seq = parse_shape(shape)
    work = Path(tempfile.mkdtemp(prefix="techniques-"))
    model_dir = make_model_folder(model, work / "model")
    data = make_text_data(work / "text.jsonl", rows=max(600, steps * batch * seq // 1400 + 50))
    base = {"model": model, "batch": batch, "seq": seq, "steps": steps, "method": "lora", "rank": 16}
    plain = run_plain_loop(model_dir, data, steps, batch, seq)
    rows, train = [], None
    for name in ["plain_loop", *variants]:
        result = plain if name == "plain_loop" else run_variant(name, model_dir, data, work, steps, batch, seq)
        train = result if name == "train" else train
        row = summarise({**base, "variant": name, **result}, plain, train)
        rows.append(row)
        print(show(row), flush=True)
        if out is not None:
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="variants: plain_loop (always), " + ", ".join(VARIANTS))
    ap.add_argument("--shapes", default="llama-3.2-1b:8x1024,qwen2.5-0.5b:8x1024",
                    help="MODEL:BATCHxSEQ[,...] (model: a preset id)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    ap.add_argument("--out", type=Path, help="append one JSON line per variant as it finishes")
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant {unknown[0]}; expected some of {', '.join(VARIANTS)}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = [row for shape in args.shapes.split(",") for row in measure_shape(shape, args.steps, variants, args.out)]
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
