"""Where is the peak? Replay PyTorch's allocator trace of one training step and list what is alive.

Usage (on a machine with an NVIDIA GPU):
    python bench/memory_trace.py --case qwen3-1.7b:lora:1:1024:ckpt --out bench/results/h100_memory_trace.jsonl

The fits benchmark found the estimate low by 4-13 % on held-out architectures with checkpointing
(bench/results/h100_fits_round1_rescored.md), and the residual is not explained by any one term.
This script builds the case as bench/measure_memory.py does (the real architecture, random bf16
weights, the method applied as the trainer applies it), records the caching allocator's history
over two steps (`torch.cuda.memory._record_memory_history`), and replays the second step's
alloc/free events to find the moment of the highest allocated bytes. It reports, per group of
allocations alive at that moment (grouped by the first Python frame in transformers, peft, torch's
functional code or the loop), their total bytes, next to the estimator's terms for the same case:
the difference between the two lists is the missing term, by name.
"""

from __future__ import annotations

import argparse
import gc
import os
import json
import sys
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure_memory import apply_method, build_base, preset_config  # noqa: E402

GIB = 2**30
SKIP = ("torch/utils/_contextlib", "torch/nn/modules/module.py", "torch/_tensor.py", "torch/autograd/__init__",
        "torch/autograd/graph.py", "torch/_dynamo", "torch/utils/_device", "torch/overrides")


def parse_case(text: str) -> dict:
    """MODEL:METHOD:BATCH:SEQ[:ckpt|:ckptN][:fused]: `ckptN` checkpoints the first N blocks only,
    `fused` adds the trainer's Liger kernels and fused loss (the advice's techniques)."""
    parts = text.split(":")
    flags = parts[4:]
    ckpt = next((f for f in flags if f.startswith("ckpt")), "")
    return dict(model=parts[0], method=parts[1], batch=int(parts[2]), seq=int(parts[3]), grad_ckpt=bool(ckpt),
                grad_ckpt_layers=int(ckpt[4:] or 0), fused="fused" in flags, rank=16, targets="all-linear")


def prepare(case: dict):
    """The case's model, optimizer and loss function, built as the trainer builds them: Liger's
    kernels on the base model before the adapter, checkpointing limited to the first N blocks,
    the fused loss instead of the model's own."""
    from peft_advisor.train import techniques

    base = build_base(preset_config(case["model"]))
    if case.get("fused"):
        techniques.apply_liger_kernels(base)
    model, opt = apply_method(base, case)
    if case.get("grad_ckpt_layers"):
        techniques.limit_checkpointing(model, case["grad_ckpt_layers"])
    if not case.get("fused"):
        return model, opt, lambda ids: model(input_ids=ids, labels=ids).loss
    from peft_advisor.train.fused_loss import FusedLoss

    fused = FusedLoss(model, "liger")
    return model, opt, lambda ids: fused(model, {"input_ids": ids, "labels": ids})["loss"]


def origin(frames: list[dict]) -> str:
    """The innermost Python frame worth naming: in transformers, peft, torch's functional code,
    the checkpoint/optimizer code or this script."""
    for f in frames:
        name = f.get("filename", "")
        if not name.endswith(".py") or any(s in name for s in SKIP):
            continue
        short = name.split("site-packages/")[-1]
        return f"{short}:{f.get('line')} {f.get('name')}"
    return "(no python frame)"


def peak_live(snapshot: dict, device: int = 0) -> tuple[int, Counter, int]:
    """Replay the trace: (peak allocated bytes, bytes per origin alive at the peak, event index)."""
    trace = snapshot["device_traces"][device]
    live: dict[int, tuple[int, str]] = {}
    cur = best = best_at = 0
    best_live: dict[int, tuple[int, str]] = {}
    for i, ev in enumerate(trace):
        action, addr, size = ev["action"], ev["addr"], ev["size"]
        if action == "alloc":
            live[addr] = (size, origin(ev.get("frames", [])))
            cur += size
            if cur > best:
                best, best_at, best_live = cur, i, dict(live)
        elif action == "free_completed" and addr in live:
            cur -= live.pop(addr)[0]
    groups: Counter = Counter()
    for size, where in best_live.values():
        groups[where] += size
    return best, groups, best_at


def trace_case(case: dict, out: Path) -> dict:
    from peft_advisor.core.estimate import Settings, components, estimate
    from peft_advisor.core.model_spec import load_preset

    torch.manual_seed(0)
    model, opt, loss_of = prepare(case)
    model.train()
    vocab = model.config.get_text_config().vocab_size
    ids = torch.randint(0, vocab, (case["batch"], case["seq"]), device="cuda")
    gc.collect()
    torch.cuda.empty_cache()
    static = torch.cuda.memory_allocated()

    def step():
        loss = loss_of(ids)
        loss.backward()
        del loss
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)

    step()  # the first step creates the optimizer states
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.memory._record_memory_history(max_entries=2_000_000)
    step()
    torch.cuda.synchronize()
    snap = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    peak_alloc, groups, _ = peak_live(snap)
    spec = load_preset(case["model"])
    s = Settings(method=case["method"], batch_size=case["batch"], seq_len=case["seq"], grad_ckpt=case["grad_ckpt"],
                 grad_ckpt_layers=case.get("grad_ckpt_layers", 0), fused_loss=case.get("fused", False),
                 liger_kernels=case.get("fused", False))
    est = estimate(spec, s)
    row = dict(case, gpu=torch.cuda.get_device_name(), alloc_conf=os.environ.get("PYTORCH_CUDA_ALLOC_CONF"), static_bytes=static,
               peak_allocated_bytes=torch.cuda.max_memory_allocated(),
               peak_reserved_bytes=torch.cuda.max_memory_reserved(), replay_peak_bytes=peak_alloc,
               live_at_peak={k: v for k, v in groups.most_common(25)},
               estimate_peak_bytes=est.peak_bytes, estimate_breakdown=est.breakdown,
               estimate_components=components(spec, s))
    with out.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(f"\n== {case}  static {static / GIB:.2f} GiB  peak alloc {row['peak_allocated_bytes'] / GIB:.2f}  "
          f"reserved {row['peak_reserved_bytes'] / GIB:.2f}  estimate {est.peak_bytes / GIB:.2f} GiB", flush=True)
    print("   estimate: " + ", ".join(f"{k} {v / GIB:.3f}" for k, v in est.breakdown.items()), flush=True)
    for where, size in groups.most_common(14):
        print(f"   {size / GIB:7.3f} GiB  {where}", flush=True)
    del model, opt, ids
    gc.collect()
    torch.cuda.empty_cache()
    return row


def table(rows: list[dict]) -> str:
    """Per case: what tensors held at the peak against the estimate's terms without the allocator's
    overhead, and what the allocator reserved above that."""
    lines = ["| case | allocator | allocated peak GiB | estimate without overhead GiB | error | reserved peak GiB | "
             "reserved − allocated GiB | estimate's overhead GiB | fp32 logits buffer GiB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b = r["estimate_breakdown"]
        bare = sum(v for k, v in b.items() if k != "overhead")
        logits_fp32 = r["estimate_components"]["logits"] / 3  # LOGIT_BYTES 12 = three fp32 buffers
        ckpt = f" ckpt {r['grad_ckpt_layers']} blocks" if r.get("grad_ckpt_layers") else " ckpt" if r["grad_ckpt"] else ""
        case = f"{r['model']} {r['method']} {r['batch']}×{r['seq']}{ckpt}{' fused liger' if r.get('fused') else ''}"
        lines.append(f"| {case} | {r.get('alloc_conf') or 'default'} | {r['peak_allocated_bytes'] / GIB:.2f} | "
                     f"{bare / GIB:.2f} | {(bare - r['peak_allocated_bytes']) / r['peak_allocated_bytes'] * 100:+.1f} % | "
                     f"{r['peak_reserved_bytes'] / GIB:.2f} | {(r['peak_reserved_bytes'] - r['peak_allocated_bytes']) / GIB:.2f} | "
                     f"{b.get('overhead', 0) / GIB:.2f} | {logits_fp32 / GIB:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", help="MODEL:METHOD:BATCH:SEQ[:ckpt|:ckptN][:fused] (repeatable)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--table", type=Path, help="print the Markdown table of a results file and exit (no GPU)")
    ap.add_argument("--expandable", action="store_true", help="the trainer's allocator setting (launch.allocator_env)")
    args = ap.parse_args()
    if args.table:
        print(table([json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]), end="")
        return 0
    if not (args.case and args.out):
        ap.error("--case and --out are needed to measure")
    if args.expandable:  # before the first CUDA allocation, which reads it
        from peft_advisor.launch import ALLOCATOR_CONF

        os.environ["PYTORCH_CUDA_ALLOC_CONF"] = ALLOCATOR_CONF
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for text in args.case:
        try:
            trace_case(parse_case(text), args.out)
        except Exception as err:  # noqa: BLE001 - one case failing should not lose the others
            print(f"{text}: {type(err).__name__}: {err}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
