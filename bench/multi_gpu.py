"""DDP, FSDP and DeepSpeed ZeRO-2/3 through `peft-advisor train` on several GPUs of one machine: each GPU's measured peak
against the per-GPU estimate (`core.distributed.per_gpu_estimate`), on a real architecture with
random weights (memory does not depend on weight values).

Usage (on a machine with two or more NVIDIA GPUs):
    python bench/multi_gpu.py --model qwen2.5-1.5b --gpus 2 --out bench/results/h200x2_multi_gpu.md

For every (method, strategy) it writes the same recipe with only its [distributed] table changed,
runs the real command (torchrun starts one trainer process per GPU), and reads rank 0's events:
`mem_peak_bytes_by_rank` (PyTorch's peak reserved on each GPU, what the estimate predicts) and the
`estimate_peak_bytes` of the start event, which it also recomputes here as a cross-check. An NVML
sampler records each GPU's total used memory as well, which adds the CUDA context and NCCL's own
buffers (both outside PyTorch's allocator and the estimate). `--baseline` adds each method on one GPU.

ZeRO cases (`zero2`, `zero3`, and with offload `zero3+optimizer`, `zero3+optimizer+params`) need
`pip install "peft-advisor[deepspeed]"`; for them the host's used RAM (MemTotal - MemAvailable) is
sampled too, against the estimate's `cpu_bytes` x GPUs (offload keeps states in CPU RAM).

Status: written and checked by reading only; no multi-GPU machine was available when it was written.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from gpu_common import ROOT, make_model_folder, make_text_data, write_recipe, write_results

GIB = 2**30
CASES = [("lora", "ddp"), ("lora", "fsdp"), ("qlora", "ddp"), ("qlora", "fsdp"), ("dora", "fsdp"),
         ("full", "ddp"), ("full", "fsdp"),
         ("lora", "zero2"), ("lora", "zero3"), ("qlora", "zero2"), ("full", "zero2"), ("full", "zero3"),
         ("lora", "zero2+optimizer"), ("full", "zero3+optimizer"), ("full", "zero3+optimizer+params")]


def split_strategy(strategy: str) -> tuple[str, str]:
    """'zero3+optimizer+params' -> ('zero3', 'optimizer+params'); 'fsdp' -> ('fsdp', 'none')."""
    name, _, offload = strategy.partition("+")
    return name, offload or "none"


def host_used_bytes() -> int | None:
    """MemTotal - MemAvailable from /proc/meminfo (Linux), or None."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        return (int(fields["MemTotal"].split()[0]) - int(fields["MemAvailable"].split()[0])) * 1024
    except (OSError, KeyError, ValueError):
        return None


class NvmlPeaks:
    """Each visible GPU's highest `used` memory (NVML) while the run lasts, in a thread."""

    def __init__(self, indices: list[int], every_s: float = 0.2):
        self.indices, self.every_s = indices, every_s
        self.peaks = {i: 0 for i in indices}
        self.host_before = host_used_bytes()
        self.host_peak = self.host_before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            import pynvml as nv

            nv.nvmlInit()
        except Exception:  # no NVML: the table says so (None)
            self.peaks = {i: None for i in self.indices}
            return
        try:
            handles = {i: nv.nvmlDeviceGetHandleByIndex(i) for i in self.indices}
            while not self._stop.is_set():
                for i, handle in handles.items():
                    self.peaks[i] = max(self.peaks[i], nv.nvmlDeviceGetMemoryInfo(handle).used)
                host = host_used_bytes()
                if host is not None and self.host_peak is not None:
                    self.host_peak = max(self.host_peak, host)
                time.sleep(self.every_s)
        finally:
            nv.nvmlShutdown()


def distributed_table(gpus: int, strategy: str) -> str:
    """The only part of the recipe that changes between the runs."""
    name, offload = split_strategy(strategy)
    return (f'\n[distributed]\ngpus = {gpus}\nstrategy = "{name}"\nzero_offload = "{offload}"\n'
            f'master_port = 0\n')


def expected_estimate(recipe: Path, gpus: int, strategy: str):
    """What the trainer's start event should say, computed from the recipe alone (the whole Estimate)."""
    sys.path.insert(0, str(ROOT))
    from peft_advisor.core import recipe as rc
    from peft_advisor.core.distributed import Parallel, per_gpu_estimate
    from peft_advisor.core.model_spec import load_model_spec

    r = rc.load(recipe)
    return per_gpu_estimate(load_model_spec(r.model.id), rc.settings_from_recipe(r), Parallel(gpus, *split_strategy(strategy)))


def read_ranks(run_dir: Path) -> dict:
    """Rank 0's events: status, each GPU's peak (the highest over the steps and the end), estimate."""
    import statistics

    sys.path.insert(0, str(ROOT))
    from peft_advisor.core.events import read_events

    events, _ = read_events(run_dir / "events.jsonl")
    start = next((e for e in events if e["kind"] == "start"), {})
    end = next((e for e in reversed(events) if e["kind"] == "end"), {})
    steps = [e for e in events if e["kind"] == "step"]
    rows = [e.get("mem_peak_bytes_by_rank") or [e.get("mem_peak_bytes")] for e in steps]
    rows.append(end.get("mem_peak_bytes_by_rank") or [end.get("mem_peak_bytes")])
    width = max(len(r) for r in rows)
    by_rank = [max((r[i] or 0) for r in rows if len(r) == width) or None for i in range(width)]
    steady = [e["tokens_per_s"] for e in steps[3:] if e.get("tokens_per_s")]
    return {
        "status": end.get("status", "no end event"),
        "message": end.get("message"),
        "steps": len(steps),
        "gpus": start.get("gpus", 1),
        "global_batch": start.get("global_batch"),
        "peak_bytes_by_rank": by_rank,
        "estimate_peak_bytes": start.get("estimate_peak_bytes"),
        "tokens_per_s": statistics.median(steady) if steady else None,
        "first_loss": steps[0]["loss"] if steps else None,
        "last_loss": steps[-1]["loss"] if steps else None,
    }


def run_case(args, work: Path, model: Path, data: Path, method: str, strategy: str, gpus: int) -> dict:
    label = f"{method}-{strategy}-{gpus}gpu"
    run_dir = work / f"run-{label}"
    recipe = write_recipe(work / f"{label}.toml", model, data, run_dir, method, steps=args.steps, batch=args.batch,
                          seq=args.seq, ckpt=args.ckpt)
    with recipe.open("a") as fh:
        fh.write(distributed_table(gpus, strategy))
    expected = expected_estimate(recipe, gpus, strategy)
    t0 = time.time()
    with NvmlPeaks(list(range(gpus))) as nvml:
        proc = subprocess.run([sys.executable, "-m", "peft_advisor", "train", str(recipe)], capture_output=True,
                              text=True, cwd=ROOT)
    row = {"model": args.model, "method": method, "strategy": strategy if gpus > 1 else "—", "gpus_asked": gpus,
           "batch": args.batch, "seq": args.seq, "grad_ckpt": args.ckpt, "exit_code": proc.returncode,
           "process_s": round(time.time() - t0, 1), "expected_estimate_bytes": expected.peak_bytes,
           "expected_cpu_bytes": expected.cpu_bytes * gpus,
           "host_ram_added_bytes": None if nvml.host_peak is None else nvml.host_peak - nvml.host_before,
           "nvml_used_bytes_by_gpu": [nvml.peaks[i] for i in range(gpus)]}
    if (run_dir / "events.jsonl").exists():
        row.update(read_ranks(run_dir))
    else:
        row.update(status="did not start", message=(proc.stderr.strip().splitlines() or ["?"])[-1])
    return row


def gib(value: int | None) -> str:
    return "—" if value is None else f"{value / GIB:.2f}"


def render(rows: list[dict], args) -> str:
    lines = [f"# DDP, FSDP and ZeRO on {args.gpus} GPUs: {args.model} (random weights), per-GPU peak against the estimate", "",
             f"Command: `python bench/multi_gpu.py --model {args.model} --gpus {args.gpus} --steps {args.steps} "
             f"--batch {args.batch} --seq {args.seq}{' --grad-ckpt' if args.ckpt else ''}"
             f"{' --baseline' if args.baseline else ''} --out {args.out}`", "",
             "Micro-batch per GPU as given; global batch = micro-batch x GPUs. Peak = PyTorch's peak reserved "
             "on each GPU (what the estimate predicts, CUDA context excluded); NVML used adds the CUDA context "
             "and NCCL's buffers.", "",
             "| method | strategy | GPUs | status | peak per GPU (GiB) | max | estimate per GPU | error | "
             "NVML used per GPU (GiB) | tokens/s (all GPUs) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        by_rank = [p for p in r.get("peak_bytes_by_rank") or []]
        peak, est = max([p or 0 for p in by_rank], default=0), r.get("estimate_peak_bytes")
        if not peak:
            lines.append(f"| {r['method']} | {r['strategy']} | {r['gpus_asked']} | {r['status']}: {r.get('message')} "
                         f"| | | | | | |")
            continue
        each = " / ".join(f"{(p or 0) / GIB:.2f}" for p in by_rank)
        nvml = " / ".join("—" if v is None else f"{v / GIB:.2f}" for v in r["nvml_used_bytes_by_gpu"])
        err = f"{100 * (est - peak) / peak:+.1f} %" if est else "—"
        lines.append(f"| {r['method']} | {r['strategy']} | {r['gpus_asked']} | {r['status']} | {each} | "
                     f"{peak / GIB:.2f} | {(est or 0) / GIB:.2f} | {err} | {nvml} | {r.get('tokens_per_s') or 0:.0f} |")
    offload = [r for r in rows if r.get("expected_cpu_bytes")]
    if offload:
        lines += ["", "| method | strategy | CPU RAM estimate, all ranks (GiB) | host RAM added at peak (GiB) |",
                  "|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['strategy']} | {gib(r['expected_cpu_bytes'])} | {gib(r['host_ram_added_bytes'])} |"
                  for r in offload]
    mismatched = [r for r in rows if r.get("estimate_peak_bytes") not in (None, r.get("expected_estimate_bytes"))]
    if mismatched:
        lines += ["", "Start events whose estimate differs from `per_gpu_estimate` recomputed here: "
                  + ", ".join(f"{r['method']}/{r['strategy']}" for r in mismatched)]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-1.5b", help="a preset id (peft_advisor/data/models)")
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4, help="micro-batch per GPU")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--grad-ckpt", dest="ckpt", action="store_true")
    ap.add_argument("--baseline", action="store_true", help="also run each method on one GPU")
    ap.add_argument("--only", help="comma list of method:strategy, e.g. lora:fsdp,full:ddp")
    ap.add_argument("--out", required=True, help="Markdown table to write (JSON lines beside it)")
    args = ap.parse_args()
    import torch

    if torch.cuda.device_count() < args.gpus:
        print(f"needs {args.gpus} CUDA GPUs, found {torch.cuda.device_count()}", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="multi-gpu-"))
    model = make_model_folder(args.model, work / "model")
    data = make_text_data(work / "text.jsonl", rows=400, chars=args.seq * 2)
    cases = [(m, s) for m, s in CASES if not args.only or f"{m}:{s}" in args.only.split(",")]
    plan = [(m, s, args.gpus) for m, s in cases]
    if args.baseline:
        plan = [(m, "ddp", 1) for m in dict.fromkeys(m for m, _ in cases)] + plan
    rows = []
    for method, strategy, gpus in plan:
        row = run_case(args, work, model, data, method, strategy, gpus)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return write_results(rows, Path(args.out), render(rows, args))


if __name__ == "__main__":
    raise SystemExit(main())
