"""Does `peft-advisor train` cost speed or memory against a plain transformers + peft loop?

Usage (on an NVIDIA GPU):
    python bench/trainer_overhead.py --model qwen2.5-0.5b --method lora --steps 40 --out bench/results/h200_overhead.json

Both runs use the same model folder (real architecture, random bf16 weights), the same packed
text, LoRA r16 on all linear layers, batch x seq, fused AdamW, grad-norm clipping and a loss read
every step, each in a fresh process. The plain loop is what a person would write by hand. Prints
tokens/s of the peft-advisor run / the plain loop's (target >= 0.97) and peak reserved memory of the
peft-advisor run / the plain loop's (target <= 1.03), measured in this one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpu_common import ROOT, make_model_folder, make_text_data, read_run, write_recipe


def plain_loop(model_dir: str, data: str, steps: int, batch: int, seq: int, method: str) -> dict:
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
    rates, last = [], time.time()
    for step in range(steps):
        x = blocks[(step * batch) % (len(blocks) - batch):][:batch].to(device)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # read the loss every step, as any logging loop does
        now = time.time()
        rates.append(batch * seq / (now - last))
        last = now
    peak = torch.cuda.max_memory_reserved() if device == "cuda" else None
    return {"tokens_per_s": statistics.median(rates[3:]), "peak_bytes": peak}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--method", default="lora", choices=["lora", "dora"])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--out", help="write the figures as JSON")
    ap.add_argument("--plain", nargs=2, metavar=("MODEL_DIR", "DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plain:
        print(json.dumps(plain_loop(*args.plain, args.steps, args.batch, args.seq, args.method)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="overhead-"))
    model = make_model_folder(args.model, work / "model")
    data = make_text_data(work / "text.jsonl", rows=600)
    recipe = write_recipe(work / "r.toml", model, data, work / "run", args.method, steps=args.steps,
                          batch=args.batch, seq=args.seq)
    subprocess.run([sys.executable, "-m", "peft_advisor", "train", str(recipe)], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    ours = read_run(work / "run")
    proc = subprocess.run([sys.executable, __file__, "--plain", str(model), str(data), "--steps", str(args.steps),
                           "--batch", str(args.batch), "--seq", str(args.seq), "--method", args.method],
                          check=True, capture_output=True, text=True, cwd=ROOT / "bench")
    plain = json.loads(proc.stdout.strip().splitlines()[-1])
    result = {
        "model": args.model, "method": args.method, "batch": args.batch, "seq": args.seq, "steps": args.steps,
        "peft_advisor_tokens_per_s": ours["tokens_per_s"], "plain_tokens_per_s": plain["tokens_per_s"],
        "tokens_per_s_ratio": round(ours["tokens_per_s"] / plain["tokens_per_s"], 3),
        "peft_advisor_peak_bytes": ours["peak_bytes"], "plain_peak_bytes": plain["peak_bytes"],
        "peak_ratio": round(ours["peak_bytes"] / plain["peak_bytes"], 3) if plain["peak_bytes"] else None,
    }
    print(json.dumps(result, indent=1))
    print(f"tokens/s ratio (peft-advisor / plain loop): {result['tokens_per_s_ratio']:.3f}  (target >= 0.97)")
    if result["peak_ratio"]:
        print(f"peak memory ratio (peft-advisor / plain loop): {result['peak_ratio']:.3f}  (target <= 1.03)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
