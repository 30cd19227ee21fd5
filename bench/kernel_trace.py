"""Where a training step's GPU time goes: busy, idle, and the longest idle gaps (a diagnosis).

Usage:
    python bench/kernel_trace.py OURS.json.gz PLAIN.json.gz --steps 10

Reads Chrome traces that `Tracer` wrote (torch.profiler, CUDA activity only, so tracing adds no
per-op cost on the host) and prints, per step: the span from the first kernel to the last, the time
some kernel or copy ran (busy), the rest (idle: the GPU waiting for the host), the longest gaps with
the kernels on each side (which part of the step the host was busy in), and the kernels whose
time differs most between the two traces. `bench/trainer_profile.py --trace DIR` writes the traces.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import defaultdict
from pathlib import Path

GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")


class Tracer:
    """Call with the step just finished; records CUDA activity over each (first, count) window and
    writes it to `path` (a `.json.gz`). `cpu=True` also records host ops (they cost host time)."""

    def __init__(self, path: Path, first: int, count: int, cpu: bool = False):
        self.path, self.first, self.last, self.cpu = Path(path), first, first + count, cpu
        self.prof = None

    def __call__(self, step: int) -> None:
        from torch.profiler import ProfilerActivity, profile

        if step == self.first:
            activities = [ProfilerActivity.CUDA] + ([ProfilerActivity.CPU] if self.cpu else [])
            self.prof = profile(activities=activities)
            self.prof.start()
        elif step == self.last and self.prof is not None:
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.prof.stop()
            raw = self.path.with_suffix("")  # x.json.gz -> x.json
            self.prof.export_chrome_trace(str(raw))
            self.path.write_bytes(gzip.compress(raw.read_bytes()))
            raw.unlink()
            self.prof = None


def gpu_events(path: Path) -> list[tuple[float, float, str]]:
    """(start_us, end_us, name) of every kernel, copy and memset, in start order."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    out = [(float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0)), e.get("name", "?"))
           for e in events if e.get("ph") == "X" and e.get("cat") in GPU_CATEGORIES]
    return sorted(out)


def summarize(path: Path, steps: int, top_gaps: int = 6) -> dict:
    """Per-step span, busy and idle milliseconds, the longest gaps, and time by kernel name."""
    events = gpu_events(path)
    if not events:
        return {"error": f"{path}: no GPU events in the trace"}
    busy, gaps, by_name = 0.0, [], defaultdict(float)
    covered_to = events[0][0]
    for i, (start, end, name) in enumerate(events):
        by_name[name] += end - start
        if start > covered_to:
            gaps.append((start - covered_to, events[i - 1][2] if i else "", name))
        busy += max(0.0, end - max(start, covered_to))
        covered_to = max(covered_to, end)
    span = covered_to - events[0][0]
    gaps.sort(reverse=True)
    return {
        "steps": steps,
        "kernels_per_step": round(len(events) / steps, 1),
        "span_ms": round(span / steps / 1e3, 3),
        "busy_ms": round(busy / steps / 1e3, 3),
        "idle_ms": round((span - busy) / steps / 1e3, 3),
        "gaps_over_100us_per_step": round(sum(1 for g in gaps if g[0] > 100) / steps, 1),
        "idle_in_gaps_over_100us_ms": round(sum(g[0] for g in gaps if g[0] > 100) / steps / 1e3, 3),
        "longest_gaps": [{"ms": round(g / 1e3, 3), "after": a[:80], "before": b[:80]} for g, a, b in gaps[:top_gaps]],
        "ms_by_kernel": {k: v / steps / 1e3 for k, v in by_name.items()},
    }


def kernel_differences(ours: dict, plain: dict, top: int = 12) -> list[tuple[str, float, float]]:
    """(name, ours ms/step, plain ms/step) of the kernels whose time differs most."""
    a, b = ours["ms_by_kernel"], plain["ms_by_kernel"]
    names = sorted(set(a) | set(b), key=lambda n: -abs(a.get(n, 0) - b.get(n, 0)))
    return [(n, round(a.get(n, 0), 3), round(b.get(n, 0), 3)) for n in names[:top]]


def report(ours: dict, plain: dict) -> str:
    errors = [s["error"] for s in (ours, plain) if "error" in s]
    if errors:
        return "\n".join(errors)
    lines = [f"{'per step':<28}{'peft-advisor':>14}{'plain loop':>14}"]
    for key in ("span_ms", "busy_ms", "idle_ms", "kernels_per_step", "gaps_over_100us_per_step",
                "idle_in_gaps_over_100us_ms"):
        lines.append(f"{key:<28}{ours[key]:>14}{plain[key]:>14}")
    for label, s in (("peft-advisor", ours), ("plain loop", plain)):
        lines.append(f"longest idle gaps, {label}:")
        lines += [f"  {g['ms']:8.3f} ms  after {g['after']}  before {g['before']}" for g in s["longest_gaps"]]
    lines.append("kernels whose time differs most (ms/step: peft-advisor, plain loop):")
    lines += [f"  {a:8.3f} {b:8.3f}  {n[:110]}" for n, a, b in kernel_differences(ours, plain)]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ours", type=Path)
    ap.add_argument("plain", type=Path)
    ap.add_argument("--steps", type=int, default=10, help="steps each trace covers")
    args = ap.parse_args()
    ours, plain = summarize(args.ours, args.steps), summarize(args.plain, args.steps)
    print(report(ours, plain))
    return 1 if "error" in ours or "error" in plain else 0


if __name__ == "__main__":
    raise SystemExit(main())
