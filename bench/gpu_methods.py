"""Every method, GaLore's 8-bit and layer-wise forms and QLoRA included, trained for a few steps by
`peft-advisor train` (the real child process) on a real architecture with random weights.

Usage (on an NVIDIA GPU):
    python bench/gpu_methods.py --model qwen2.5-0.5b --out bench/results/h200_methods.md

For each run it reports the end status, the peak memory PyTorch reserved (from the run's events)
against the estimate written in its `start` event, steady tokens/s, the loss moving, the adapter size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpu_common import ROOT, make_model_folder, make_text_data, read_run, write_recipe, write_results

CASES = [("full", {}), ("lora", {}), ("rslora", {}), ("dora", {}), ("loraplus", {}), ("vera", {}),
         ("galore", {}), ("galore", {"layerwise": True}), ("galore", {"eightbit": True}), ("qlora", {}),
         ("oft", {}), ("lokr", {}), ("loha", {}), ("ia3", {}), ("miss", {}), ("c3a", {}), ("shira", {}),
         ("lorafa", {}), ("pissa", {}), ("olora", {})]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--out", required=True, help="Markdown table to write (JSON lines beside it)")
    ap.add_argument("--only", help="comma list of methods")
    ap.add_argument("--ckpt", action="store_true", help="gradient checkpointing on")
    ap.add_argument("--ckpt-layers", type=int, default=0, help="with --ckpt: checkpoint the first N blocks only")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gpu-methods-"))
    model = make_model_folder(args.model, work / "model")
    data = make_text_data(work / "text.jsonl")
    rows = []
    for method, kw in CASES:
        if args.only and method not in args.only.split(","):
            continue
        label = method + "".join(f"+{k}" for k in kw)
        recipe = write_recipe(work / f"{label}.toml", model, data, work / f"run-{label}", method,
                              steps=args.steps, batch=args.batch, seq=args.seq, ckpt=args.ckpt, **kw)
        if args.ckpt_layers:
            from peft_advisor.core import recipe as rc

            rc.save(rc.updated(rc.load(recipe), {"train.grad_ckpt_layers": args.ckpt_layers}), recipe, force=True)
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "peft_advisor", "train", str(recipe)],
                              capture_output=True, text=True, cwd=ROOT)
        run = read_run(work / f"run-{label}") if (work / f"run-{label}" / "events.jsonl").exists() else {
            "status": "did not start", "message": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        row = dict(model=args.model, method=label, batch=args.batch, seq=args.seq, exit_code=proc.returncode,
                   process_s=round(time.time() - t0, 1), **run)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return write_results(rows, Path(args.out), render(rows, args))


def render(rows, args) -> str:
    gib = 2**30
    lines = [f"# Every method through `peft-advisor train` on {args.model} (random weights)", "",
             f"Command: `python bench/gpu_methods.py --model {args.model} --steps {args.steps} --batch {args.batch} "
             f"--seq {args.seq}{' --ckpt' if args.ckpt else ''}"
             f"{f' --ckpt-layers {args.ckpt_layers}' if args.ckpt_layers else ''} --out {args.out}`", "",
             "| method | status | steps | loss first → last | peak reserved GiB | estimate GiB | error | tokens/s | adapter MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peak, est = r.get("peak_bytes"), r.get("estimate_peak_bytes")
        err = f"{100 * (est - peak) / peak:+.1f} %" if peak and est else "—"
        loss = f"{r['first_loss']:.3f} → {r['last_loss']:.3f}" if r.get("first_loss") is not None else "—"
        lines.append(f"| {r['method']} | {r['status']} | {r.get('steps', 0)} | {loss} | "
                     f"{peak / gib:.2f} | {est / gib if est else 0:.2f} | {err} | "
                     f"{r['tokens_per_s'] or 0:.0f} | {(r.get('adapter_bytes') or 0) / 1e6:.1f} |" if peak else
                     f"| {r['method']} | {r['status']}: {r.get('message')} | | | | | | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
