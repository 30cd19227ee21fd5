"""Does the advice fit the card it was given for? Train the top recommendations on a capped GPU.

Usage (on a machine with an NVIDIA GPU):
    python bench/fits.py --round 2 --out bench/results/h100_fits.jsonl [--cases 0-4] [--parallel-gib 70]
    python bench/fits.py --table bench/results/h100_fits.jsonl > bench/results/h100_fits.md   # no GPU

For each case (architecture, budget, sequence length) it asks `peft-advisor recommend --json` as a
user would, takes the top three methods, exports each with `recommend --methods M --export` (so the
settings are exactly those advised), points the recipe at the architecture with random bf16 weights
(memory does not depend on weight values) and at plain text packed into full-length rows, and runs
`peft-advisor train` for a few steps with the trainer's PyTorch allocator capped at the budget less
the CUDA context the advice assumed (PEFT_ADVISOR_GPU_CAP_GIB), as on a card of that size.

Per run it records: ended ok or out of memory; budget used = (measured peak + assumed context) /
budget; estimate error = (estimate - measured) / measured, peak = torch.cuda.max_memory_reserved()
from the run's own events. Runs go several at a time while their budgets fit the card together;
each row is appended as it finishes, so a call cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GIB = 2**30
STEPS = 3
# Architectures the estimator's constants were fitted on (bench/measure_memory.py cases_calib).
TUNED = {"qwen2.5-0.5b", "llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b"}
# (preset, budget GiB, sequence length): six architectures, 4-48 GiB, 512-4096 tokens. Round 1's
# results set the estimate's band (core/estimate.py BAND); round 2, other cases, checks it.
ROUND_1 = [
    ("gemma-3-1b", 4, 512),
    ("qwen2.5-1.5b", 6, 512),
    ("gemma-3-1b", 8, 2048),
    ("qwen3-1.7b", 8, 1024),
    ("gemma-2-2b", 12, 1024),
    ("llama-3.2-3b", 12, 2048),
    ("phi-3.5-mini", 16, 1024),
    ("gemma-2-2b", 24, 2048),
    ("qwen3-1.7b", 24, 4096),
    ("phi-3.5-mini", 48, 4096),
]
ROUND_2 = [
    ("qwen2.5-0.5b", 4, 1024),
    ("gemma-3-1b", 6, 1024),
    ("llama-3.2-1b", 6, 1024),
    ("gemma-2-2b", 8, 512),
    ("qwen3-1.7b", 12, 2048),
    ("qwen2.5-3b", 16, 2048),
    ("qwen2.5-1.5b", 16, 4096),
    ("phi-3-mini", 24, 2048),
    ("mistral-7b", 24, 1024),
    ("gemma-2-2b", 32, 4096),
]
# Round 3: six architectures never used before (not in the calibration sets, rounds 1-2 or the
# allocator traces), with the techniques available (liger-kernel and bitsandbytes installed) and
# the expandable-segments allocator the trainer now defaults to. Largest budgets first, so that
# small cases share the card with them.
ROUND_3 = [
    ("qwen2.5-7b", 24, 2048),
    ("gemma-3-4b", 24, 4096),
    ("qwen3-4b", 16, 4096),
    ("smollm2-1.7b", 12, 2048),
    ("gemma-3-4b", 12, 1024),
    ("qwen3-0.6b", 12, 4096),
    ("smollm2-1.7b", 8, 1024),
    ("qwen3-0.6b", 6, 2048),
    ("smollm2-360m", 4, 2048),
]
ROUNDS = {"1": ROUND_1, "2": ROUND_2, "3": ROUND_3}


def cli(*args, env=None, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peft_advisor", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, cwd=ROOT)


def advise(preset: str, budget: float, seq: int, methods: str | None = None) -> list[dict]:
    args = ["recommend", "--model", preset, "--vram", budget, "--seq", seq, "--batch", 4, "--json"]
    done = cli(*args, *(["--methods", methods] if methods else []))
    if done.returncode not in (0, 6):  # 6: nothing fits
        raise RuntimeError(done.stderr.strip().splitlines()[-1])
    return json.loads(done.stdout).get("recommendations") or []


def export(preset: str, budget: float, seq: int, method: str, path: Path, model_dir: Path, data: Path,
           run_dir: Path) -> Path:
    from peft_advisor.core import recipe as rc

    done = cli("recommend", "--model", preset, "--vram", budget, "--seq", seq, "--batch", 4, "--methods", method,
               "--export", path, "--force", "--json")
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1])
    recipe = rc.updated(rc.load(path), {
        "model.id": str(model_dir), "data.path": str(data), "data.format": "text", "data.packing": True,
        "data.eval_split": 0, "train.max_steps": STEPS, "train.eval_every": 0, "train.save_every": 0,
        "train.warmup_ratio": 0.0, "output.dir": str(run_dir),
    })
    return rc.save(recipe, path, force=True, header=f"bench/fits.py: {preset} {method} on {budget} GiB")


def train(recipe: Path, run_dir: Path, cap_gib: float) -> dict:
    from bench.gpu_common import read_run

    done = cli("train", recipe, "--run-dir", run_dir, env={"PEFT_ADVISOR_GPU_CAP_GIB": f"{cap_gib:.4f}"},
               timeout=1800)
    row = read_run(run_dir) if (run_dir / "events.jsonl").is_file() else {"status": "no run folder"}
    row["exit_code"] = done.returncode
    if row["status"] != "ok":
        row["stderr_tail"] = done.stderr.strip().splitlines()[-3:]
    return row


class GpuBudget:
    """Lets runs share the card while their budgets add up to no more than `gib`."""

    def __init__(self, gib: float) -> None:
        self.free, self.cond = gib, threading.Condition()

    def take(self, gib: float) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.free >= gib)
            self.free -= gib

    def give(self, gib: float) -> None:
        with self.cond:
            self.free += gib
            self.cond.notify_all()


def run_case(index: int, preset: str, budget: float, seq: int, work: Path, out: Path, pool: GpuBudget,
             lock: threading.Lock, models: dict, top: int = 3) -> None:
    try:
        recs = advise(preset, budget, seq)[:top]
    except RuntimeError as err:
        return append(out, lock, dict(case=index, model=preset, budget_gib=budget, seq=seq, status="advice failed",
                                      error=str(err)))
    if not recs:
        return append(out, lock, dict(case=index, model=preset, budget_gib=budget, seq=seq, status="nothing fits"))
    for rank, rec in enumerate(recs, 1):
        name = f"c{index}-{rank}-{rec['method']}"
        context_bytes = rec["total_bytes"] - rec["peak_bytes"]
        cap_gib = (budget * GIB - context_bytes) / GIB
        row = dict(case=index, model=preset, held_out=preset not in TUNED, budget_gib=budget, seq=seq, rank=rank,
                   method=rec["method"], fit=rec.get("fit", "ok"), settings=rec["settings"],
                   advised_total_bytes=rec["total_bytes"], advised_high_bytes=rec.get("high_bytes"),
                   context_bytes=context_bytes, cap_gib=round(cap_gib, 3))
        pool.take(budget)
        try:
            recipe = export(preset, budget, seq, rec["method"], work / f"{name}.toml", models[preset], work / "text.jsonl",
                            work / "runs" / name)
            row.update(train(recipe, work / "runs" / name, cap_gib))
        except Exception as err:  # noqa: BLE001 - record and go on
            row.update(status="bench error", error=f"{type(err).__name__}: {err}")
        finally:
            pool.give(budget)
        peak = row.get("peak_bytes")
        if peak and row.get("estimate_peak_bytes"):
            row["estimate_error"] = (row["estimate_peak_bytes"] - peak) / peak
        if peak:
            row["budget_used"] = (peak + context_bytes) / (budget * GIB)
        append(out, lock, row)


def append(out: Path, lock: threading.Lock, row: dict) -> None:
    with lock, out.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps({k: row.get(k) for k in ("model", "budget_gib", "seq", "method", "status", "budget_used",
                                              "estimate_error")}), flush=True)


def pick(spec: str, count: int) -> list[int]:
    if spec == "all":
        return list(range(count))
    lo, _, hi = spec.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


SETTING_WORDS = (("grad_ckpt", "ckpt"), ("fused_loss", "fused"), ("liger_kernels", "liger"),
                 ("offload_activations", "offload"))


def table(rows: list[dict]) -> str:
    """The Markdown table and its summary line, from the JSON rows."""
    runs = [r for r in rows if "rank" in r]
    lines = ["| model | held out | budget | seq | # | method | settings | fit | result | peak GiB | used | estimate error |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        s = r["settings"]
        ckpt = f" ckpt {s['grad_ckpt_layers']} blocks" if s.get("grad_ckpt") and s.get("grad_ckpt_layers") else ""
        setting = f"r{s.get('rank')} b{s.get('batch_size')}×{s.get('grad_accum')}{ckpt}" + "".join(
            f" {word}" for key, word in SETTING_WORDS if s.get(key) and not (key == "grad_ckpt" and ckpt)) + (" 8-bit" if "8bit" in s.get("optimizer", "") else "")
        peak = f"{r['peak_bytes'] / GIB:.2f}" if r.get("peak_bytes") else "—"
        used = f"{r['budget_used'] * 100:.0f} %" if r.get("budget_used") else "—"
        err = f"{r['estimate_error'] * 100:+.1f} %" if r.get("estimate_error") is not None else "—"
        lines.append(f"| {r['model']} | {'yes' if r['held_out'] else 'no'} | {r['budget_gib']} GiB | {r['seq']} | "
                     f"{r['rank']} | {r['method']} | {setting} | {r.get('fit', 'ok')} | {r['status']} | {peak} | "
                     f"{used} | {err} |")
    return "\n".join([summary(runs), "", *lines, ""])


def summary(runs: list[dict]) -> str:
    ok_oom = [r for r in runs if r.get("fit", "ok") == "ok" and r["status"] == "oom"]
    finished = [r for r in runs if r["status"] == "ok"]  # an out-of-memory run's peak is where it died
    used = [r["budget_used"] for r in finished if r.get("budget_used")]
    errors = [abs(r["estimate_error"]) for r in finished if r.get("estimate_error") is not None and r["held_out"]]
    parts = [f"{len(runs)} runs, {len(finished)} ended ok; out of memory while marked ok: {len(ok_oom)}"]
    if used:
        parts.append(f"median budget used {statistics.median(used) * 100:.0f} % (runs that ended ok)")
    if errors:
        parts.append(f"held-out estimate |error| median {statistics.median(errors) * 100:.1f} %, "
                     f"worst {max(errors) * 100:.1f} % ({len(errors)} runs)")
    return "**" + "; ".join(parts) + "**"


def rescore(rows: list[dict], sdpa: bool = False) -> str:
    """The runs that ended ok, against the estimator as it is now (the rows keep the estimate made
    when they ran): how a change to the estimator moves the error on measured runs. `sdpa` scores
    them as if attention ran on SDPA everywhere (Gemma 2 on a transformers that allowed it)."""
    from peft_advisor.core.estimate import Settings, estimate
    from peft_advisor.core.model_spec import load_preset

    keys = {f.name for f in dataclasses.fields(Settings)}
    lines = ["| model | held out | method | batch×seq | measured GiB | then: error | now: estimate GiB | now: error | "
             "now: terms vs allocated |", "|---|---|---|---|---|---|---|---|---|"]
    errors = []
    for r in rows:
        if r.get("status") != "ok" or not r.get("peak_bytes") or r.get("rank") is None:
            continue
        s = r["settings"]
        spec = load_preset(r["model"])
        spec = dataclasses.replace(spec, eager_attention=False) if sdpa else spec
        est = estimate(spec, Settings(**{k: v for k, v in s.items() if k in keys}))
        now = est.peak_bytes
        err = (now - r["peak_bytes"]) / r["peak_bytes"]
        alloc = r.get("peak_allocated_bytes")  # the estimate's terms without its allocator overhead
        terms = f"{((now - est.breakdown['overhead']) / alloc - 1) * 100:+.1f} %" if alloc else "—"
        if r["held_out"]:
            errors.append(abs(err))
        lines.append(f"| {r['model']} | {'yes' if r['held_out'] else 'no'} | {r['method']} | "
                     f"{s['batch_size']}×{s['seq_len']} | {r['peak_bytes'] / GIB:.2f} | {r['estimate_error'] * 100:+.1f} % | "
                     f"{now / GIB:.2f} | {err * 100:+.1f} % | {terms} |")
    head = (f"**now, held-out runs that ended ok: |error| median {statistics.median(errors) * 100:.1f} %, "
            f"worst {max(errors) * 100:.1f} % ({len(errors)} runs)**" if errors else "**no runs**")
    return "\n".join([head, "", *lines, ""])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="JSON lines to append to")
    ap.add_argument("--round", default="2", choices=sorted(ROUNDS), help="which case list (default 2)")
    ap.add_argument("--cases", default="all", help="all, N or N-M (indices into the round's cases)")
    ap.add_argument("--case", action="append", help="MODEL:GIB:SEQ instead of CASES (MODEL a preset or a model folder)")
    ap.add_argument("--top", type=int, default=3, help="how many of each case's recommendations to train (default 3)")
    ap.add_argument("--parallel-gib", type=float, default=70.0, help="budgets that may run at once, together")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fits"))
    ap.add_argument("--table", type=Path, help="print the Markdown table of a results file and exit")
    ap.add_argument("--rescore", type=Path, help="print a results file's ok runs against today's estimator and exit")
    ap.add_argument("--sdpa", action="store_true", help="with --rescore: as if every attention ran on SDPA")
    args = ap.parse_args()
    if args.rescore:
        print(rescore([json.loads(line) for line in args.rescore.read_text().splitlines() if line.strip()], args.sdpa))
        return 0
    if args.table:
        print(table([json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]))
        return 0
    from bench.gpu_common import make_model_folder, make_text_data

    args.work.mkdir(parents=True, exist_ok=True)
    make_text_data(args.work / "text.jsonl", rows=600, chars=4000)
    if args.case:
        chosen = [(i, m, float(g), int(s)) for i, (m, g, s) in enumerate(c.rsplit(":", 2) for c in args.case)]
    else:
        cases = ROUNDS[args.round]
        chosen = [(i, *cases[i]) for i in pick(args.cases, len(cases))]
    started = time.time()
    models = {p: Path(p) if Path(p).is_dir() else make_model_folder(p, args.work / "models" / p)
              for p in dict.fromkeys(c[1] for c in chosen)}
    print(f"models ready in {time.time() - started:.0f} s", flush=True)
    pool, lock = GpuBudget(args.parallel_gib), threading.Lock()
    with ThreadPoolExecutor(max_workers=4) as ex:
        futures = [ex.submit(run_case, i, p, b, s, args.work, args.out, pool, lock, models, args.top) for i, p, b, s in chosen]
        for f in futures:
            f.result()
    print(f"done in {time.time() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
