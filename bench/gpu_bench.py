"""`peft-advisor bench` on a real architecture (random weights) with the shipped arithmetic data.

Usage (on an NVIDIA GPU):
    python bench/gpu_bench.py --model qwen2.5-0.5b --methods lora,rslora,dora,vera,qlora,full --steps 25 --out bench/results/bench-h200

Builds the model folder (bench/gpu_common.py), writes one LoRA recipe for it, and runs the real
command; bench.md and bench.json land in --out. With random weights the losses and accuracies say
nothing about quality; memory, speed and adapter size are what this run measures.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from gpu_common import ROOT, make_model_folder

RECIPE = """version = 1
[model]
id = "{model}"
dtype = "bfloat16"
[method]
name = "lora"
rank = 16
alpha = 32
targets = "all-linear"
[data]
path = "demo"
format = "instruction"
eval_split = 32
max_seq_len = 256
[train]
max_steps = {steps}
micro_batch = {batch}
lr = 2e-4
eval_every = 0
save_every = 0
log_every = 1
[output]
dir = "{out}/lora"
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--methods", default="lora,rslora,dora,vera,qlora,full")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    model = make_model_folder(args.model, work / "model")
    recipe = work / "lora.toml"
    recipe.write_text(RECIPE.format(model=model, steps=args.steps, batch=args.batch, out=work / "runs"))
    cmd = [sys.executable, "-m", "peft_advisor", "bench", str(recipe), "--methods", args.methods,
           "--steps", str(args.steps), "--out", str(Path(args.out).absolute()), "--force"]
    print("$ peft-advisor bench", *cmd[4:], flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


if __name__ == "__main__":
    raise SystemExit(main())
