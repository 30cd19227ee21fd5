"""Which method, with which settings, fits the budgets, and why.

For each method the recommender walks the knobs a person would turn to make a run fit, in the
order that costs the least (quality first, then speed): gradient checkpointing, a smaller
micro-batch with more gradient accumulation (same effective batch), fewer adapted modules or a
lower rank, GaLore's layer-wise and 8-bit forms. The first setting that fits is that method's
offer. Methods that fit are ranked by the priority the person chose, with reasons drawn from the
trade-off matrix; the others are ruled out with what they would need.

Pure: the catalog, the estimator and the budget come in, plain data goes out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from peft_advisor.core.catalog import Method, load_catalog
from peft_advisor.core.distributed import Parallel, per_gpu_estimate
from peft_advisor.core.errors import ExitCode, UserError, did_you_mean
from peft_advisor.core.estimate import METHODS, Estimate, Settings, resolve_targets
from peft_advisor.core.limits import MAX_ADAPTER_MB
from peft_advisor.core.model_spec import ModelSpec
from peft_advisor.core.speed import step_time_range, step_time_vs_lora
from peft_advisor.core.units import GIB, MB, fmt_bytes, fmt_file_bytes

PRIORITIES = ("quality", "speed", "memory", "size")
CKPT_TIME_FACTOR = 1.3
"""Recomputing each block in backward: torchtune measured -21 % tokens/s (PEERS.md §2.10)."""


@dataclass(frozen=True)
class Budget:
    """What the run may use."""

    vram_bytes: int
    """Memory the run may take on the card, CUDA context included."""
    adapter_bytes: int | None = None
    """Largest saved adapter accepted (None: no limit)."""
    source: str = "--vram"
    """Where the VRAM figure came from, e.g. `GPU 0 NVIDIA H200: free memory`."""
    total_vram_bytes: int | None = None
    """The card's size, if known (sizes the CUDA context estimate)."""

    def to_dict(self) -> dict:
        return {
            "vram_bytes": self.vram_bytes,
            "vram_gib": round(self.vram_bytes / GIB, 3),
            "adapter_bytes": self.adapter_bytes,
            "source": self.source,
        }


@dataclass(frozen=True)
class Recommendation:
    method: str
    name: str
    settings: Settings
    estimate: Estimate
    reasons: tuple[str, ...]
    adjustments: tuple[str, ...] = ()
    """Knobs changed from the request to make it fit, in words."""

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "name": self.name,
            "settings": self.settings.to_dict(),
            "peak_bytes": self.estimate.peak_bytes,
            "total_bytes": self.estimate.total_bytes,
            "low_bytes": self.estimate.low_bytes,
            "high_bytes": self.estimate.high_bytes,
            "adapter_bytes": self.estimate.adapter_bytes,
            "trainable_params": self.estimate.trainable_params,
            "step_time_vs_lora": round(_step_time(self), 2),
            "adjustments": list(self.adjustments),
            "reasons": list(self.reasons),
            "breakdown": dict(self.estimate.breakdown),
        }


@dataclass(frozen=True)
class RuledOut:
    method: str
    name: str
    reason: str
    peak_bytes: int
    """Peak of the closest setting tried (what it would take at best)."""
    closest: Estimate | None = None

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "name": self.name,
            "reason": self.reason,
            "peak_bytes": self.peak_bytes,
            "total_bytes": self.closest.total_bytes if self.closest else None,
            "settings": self.closest.settings.to_dict() if self.closest else None,
        }


@dataclass(frozen=True)
class Advice:
    model: str
    priority: str
    budget: Budget
    request: Settings
    recommendations: tuple[Recommendation, ...]
    ruled_out: tuple[RuledOut, ...]
    parallel: Parallel = Parallel()

    @property
    def best(self) -> Recommendation | None:
        return self.recommendations[0] if self.recommendations else None

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "priority": self.priority,
            "budget": self.budget.to_dict(),
            "request": {"seq_len": self.request.seq_len, "batch_size": self.request.batch_size},
            "parallel": {"gpus": self.parallel.gpus, "strategy": self.parallel.strategy},
            "recommendations": [r.to_dict() for r in self.recommendations],
            "ruled_out": [r.to_dict() for r in self.ruled_out],
        }


# ---------------------------------------------------------------- search for settings that fit


def _ladder(s: Settings, multi_gpu: bool = False):
    """Settings to try for one method, cheapest change first; yields (settings, adjustments).
    Layer-wise GaLore is single-GPU only (transformers refuses it with DDP/FSDP)."""
    yield s, ()
    steps: list[tuple[str, Settings]] = []
    cur = s
    if not cur.grad_ckpt:
        cur = replace(cur, grad_ckpt=True)
        steps.append(("gradient checkpointing on", cur))
        yield cur, tuple(a for a, _ in steps)
    while cur.batch_size > 1:
        cur = replace(cur, batch_size=cur.batch_size // 2, grad_accum=cur.grad_accum * 2)
        steps = [st for st in steps if not st[0].startswith("micro-batch")]
        steps.append((f"micro-batch {cur.batch_size} × {cur.grad_accum} accumulation steps", cur))
        yield cur, tuple(a for a, _ in steps)
    if cur.method == "galore":
        changes = [("8-bit GaLore optimizer states", dict(galore_8bit=True))]
        if not multi_gpu:
            changes.insert(0, ("layer-wise GaLore (no full gradient buffer; accumulation 1)",
                               dict(galore_layerwise=True, grad_accum=1)))
        for label, change in changes:
            cur = replace(cur, **change)
            steps.append((label, cur))
            yield cur, tuple(a for a, _ in steps)


def _size_ladder(s: Settings):
    """Ways to shrink the saved adapter: lower rank, fewer modules, VeRA without projections."""
    yield s, ()
    if s.method == "vera":
        yield replace(s, vera_save_projection=False), ("VeRA projections not saved (rebuilt from the seed)",)
        return
    if s.method in ("full", "galore"):
        return
    rank = s.rank
    while rank > 4:
        rank //= 2
        yield replace(s, rank=rank), (f"rank {rank}",)
    for targets, label in (("attention", "attention modules only"), (("q_proj", "v_proj"), "q_proj and v_proj only")):
        yield replace(s, rank=4, targets=targets), ("rank 4", label)


def _fits(est: Estimate, budget: Budget) -> bool:
    return est.total_bytes <= budget.vram_bytes


def _adapter_fits(est: Estimate, budget: Budget) -> bool:
    return budget.adapter_bytes is None or est.adapter_bytes <= budget.adapter_bytes


def _search(spec: ModelSpec, s: Settings, budget: Budget, par: Parallel = Parallel(), calibrate=None):
    """First setting that fits both budgets -> (estimate, adjustments) or (None, closest, reason)."""

    def estimate(spec, settings, total=None):
        est = per_gpu_estimate(spec, settings, par, total)
        return calibrate(est) if calibrate and par.gpus == 1 else est

    closest = None
    size_ok_any = False
    for sized, size_adj in _size_ladder(s):
        try:
            if not _adapter_fits(estimate(spec, sized, budget.total_vram_bytes), budget):
                continue
        except UserError:
            continue  # e.g. q_proj/v_proj does not exist in this architecture
        size_ok_any = True
        for cand, adj in _ladder(sized, par.gpus > 1):
            est = estimate(spec, cand, budget.total_vram_bytes)
            if _fits(est, budget):
                return est, size_adj + adj, None
            if closest is None or est.total_bytes < closest.total_bytes:
                closest = est
    if not size_ok_any:
        smallest = min((estimate(spec, x, budget.total_vram_bytes) for x, _ in _size_ladder(s)
                        if _valid(spec, x)), key=lambda e: e.adapter_bytes)
        reason = (f"adapter {fmt_file_bytes(smallest.adapter_bytes)} at best > budget "
                  f"{fmt_file_bytes(budget.adapter_bytes)}")
        return None, smallest, reason
    miss = closest.total_bytes - budget.vram_bytes
    per_gpu = " per GPU" if par.gpus > 1 else ""
    reason = (f"needs {fmt_bytes(closest.total_bytes)}{per_gpu} even with {_describe(closest.settings)} "
              f"> budget {fmt_bytes(budget.vram_bytes)} (misses by {fmt_bytes(miss)})")
    return None, closest, reason


def _unsupported(method: str, par: Parallel) -> str | None:
    """Combinations the trainer refuses (transformers, accelerate and peft do not support them)."""
    if par.gpus > 1 and par.strategy == "fsdp" and method in ("galore", "loraplus"):
        return f"{method} is not supported with FSDP (its optimizer needs whole weights); use --strategy ddp"
    return None


def _more_gpus_hint(spec: ModelSpec, s: Settings, budget: Budget, start: int) -> str:
    """'fits on 2 GPUs with FSDP': the fewest GPUs (same budget each) on which a method fits."""
    for gpus in (2, 4, 8):
        if gpus <= start:
            continue
        for strategy in ("ddp", "fsdp"):
            if _unsupported(s.method, Parallel(gpus, strategy)):
                continue
            est, _, _ = _search(spec, s, budget, Parallel(gpus, strategy))
            if est is not None:
                return f"; fits on {gpus} such GPUs with {strategy.upper()} ({fmt_bytes(est.total_bytes)} each)"
    return ""


def _valid(spec: ModelSpec, s: Settings) -> bool:
    try:
        per_gpu_estimate(spec, s, Parallel())
        return True
    except UserError:
        return False


def describe_knobs(s: Settings) -> list[str]:
    """The settings that change memory, in words (both front ends show them)."""
    parts = [f"micro-batch {s.batch_size}" + (f" × {s.grad_accum}" if s.grad_accum > 1 else "")]
    if s.grad_ckpt:
        parts.append("checkpointing")
    if s.method == "galore" and s.galore_layerwise:
        parts.append("layer-wise")
    if s.method == "galore" and s.galore_8bit:
        parts.append("8-bit states")
    if not isinstance(s.targets, str) or s.targets != "all-linear":
        parts.append(s.targets if isinstance(s.targets, str) else ",".join(s.targets))
    return parts


def _describe(s: Settings) -> str:
    rank = [f"rank {s.rank}"] if s.method in ("lora", "rslora", "dora", "loraplus", "qlora") else []
    return ", ".join(rank + describe_knobs(s))


# ---------------------------------------------------------------- ranking and reasons


def _step_time(rec: Recommendation) -> float:
    """Relative time per token vs LoRA at the requested shape (lower is faster)."""
    t = step_time_vs_lora(rec.method)
    if rec.settings.grad_ckpt:
        t *= CKPT_TIME_FACTOR
    return t


def _sort_key(rec: Recommendation, m: Method, priority: str):
    quality, peak, size, time = -m.quality, rec.estimate.total_bytes, rec.estimate.adapter_bytes, _step_time(rec)
    return {
        "quality": (quality, len(rec.adjustments), time, peak),
        "speed": (round(time, 1), quality, peak),
        "memory": (peak, quality, time),
        "size": (size, quality, peak),
    }[priority]


def _reasons(rec: Recommendation, m: Method, budget: Budget, priority: str) -> tuple[str, ...]:
    est = rec.estimate
    out = [
        f"fits: {fmt_bytes(est.total_bytes)} of {fmt_bytes(budget.vram_bytes)} "
        f"(peak {fmt_bytes(est.peak_bytes)} + CUDA context {fmt_bytes(est.context_bytes)}; "
        f"range {fmt_bytes(est.low_bytes + est.context_bytes)}–{fmt_bytes(est.high_bytes + est.context_bytes)})",
    ]
    if rec.adjustments:
        out.append("to fit: " + "; ".join(rec.adjustments))
    out.append(f"quality: {m.quality_evidence}")
    t = step_time_vs_lora(rec.method)
    if rec.method != "lora":
        lo_hi = step_time_range(rec.method)
        spread = f", {lo_hi[0]:.1f}–{lo_hi[1]:.1f}× across shapes" if lo_hi else ""
        if 0.95 <= t <= 1.05:
            out.append(f"speed: about as fast as LoRA (step time measured on an H200{spread})")
        else:
            word = "slower" if t > 1 else "faster"
            out.append(f"speed: {t:.1f}× LoRA's step time, {word} (measured on an H200{spread})")
        if rec.method == "galore":
            out.append("speed: not counted above: an SVD of every projected weight at the first step and "
                       "every update_proj_gap steps (seconds to minutes, growing with the model)")
    if rec.settings.grad_ckpt:
        out.append("gradient checkpointing recomputes activations: about 20–30 % slower")
    if est.calibrated:
        out.append(f"estimate {est.calibrated}")
    out.append(f"adapter: {fmt_file_bytes(est.adapter_bytes)} ({m.adapter_size})")
    for caveat in m.caveats[:1]:
        out.append(f"caveat: {caveat}")
    return tuple(out)


def recommend(
    spec: ModelSpec,
    budget: Budget,
    seq_len: int = 1024,
    batch_size: int = 1,
    priority: str = "quality",
    methods: tuple[str, ...] = METHODS,
    rank: int = 16,
    targets="all-linear",
    catalog: dict[str, Method] | None = None,
    parallel: Parallel = Parallel(),
    calibrate=None,
) -> Advice:
    """Rank every method that fits; rule out the rest with the reason (and how many GPUs would do).

    `calibrate` (est -> est) applies local measurements of this GPU and model, when there are any.
    """
    check_priority(priority)
    if budget.vram_bytes <= 0:
        raise UserError("VRAM budget must be positive", ExitCode.USAGE)
    resolve_targets(spec, targets)  # a typo is an error, not a silent fall back to smaller target sets
    catalog = catalog or load_catalog()
    request = Settings(method="lora", rank=rank, targets=targets, batch_size=batch_size, seq_len=seq_len)
    fits, ruled = [], []
    for method in methods:
        s = replace(request, method=method)
        refused = _unsupported(method, parallel)
        if refused:
            ruled.append(RuledOut(method, catalog[method].name, refused, 0, None))
            continue
        est, adjustments, reason = _search(spec, s, budget, parallel, calibrate)
        name = catalog[method].name
        if est is None:
            if "adapter" not in reason:
                reason += _more_gpus_hint(spec, s, budget, parallel.gpus)
            ruled.append(RuledOut(method, name, reason, adjustments.peak_bytes, adjustments))
            continue
        fits.append(Recommendation(method, name, est.settings, est, (), adjustments))
    fits.sort(key=lambda r: _sort_key(r, catalog[r.method], priority))
    recs = tuple(replace(r, reasons=_reasons(r, catalog[r.method], budget, priority)) for r in fits)
    if recs:
        recs = (replace(recs[0], reasons=(_why_first(recs, catalog, priority),) + recs[0].reasons),) + recs[1:]
    ruled.sort(key=lambda r: (r.closest is None, r.peak_bytes))
    return Advice(spec.id, priority, budget, request, recs, tuple(ruled), parallel)


def _why_first(recs, catalog, priority: str) -> str:
    best = recs[0]
    m = catalog[best.method]
    if priority == "quality":
        return f"best measured quality that fits (quality {m.quality}/5 relative to LoRA = 3)"
    if priority == "speed":
        return f"fastest that fits ({_step_time(best):.2f}× LoRA's step time)"
    if priority == "memory":
        return f"smallest peak memory ({fmt_bytes(best.estimate.total_bytes)})"
    return f"smallest adapter ({fmt_file_bytes(best.estimate.adapter_bytes)})"


def closest_miss(advice: Advice) -> str:
    """One line for 'nothing fits': what comes closest and by how much it misses."""
    if not advice.ruled_out:
        return "nothing to recommend"
    best = advice.ruled_out[0]
    return f"nothing fits: closest is {best.name} — {best.reason}"


def check_priority(priority: str) -> str:
    if priority not in PRIORITIES:
        raise UserError(f"unknown priority {priority!r}{did_you_mean(priority, PRIORITIES)} "
                        f"(choose from {', '.join(PRIORITIES)})", ExitCode.USAGE)
    return priority


def adapter_budget_bytes(adapter_mb: float | None) -> int | None:
    """`--adapter-mb` counts 10^6 bytes, like file sizes on disk; 0 or None means no limit."""
    if adapter_mb is None or adapter_mb == 0:
        return None
    if not adapter_mb > 0:  # also NaN
        raise UserError(f"--adapter-mb must be positive, got {adapter_mb:g}", ExitCode.USAGE)
    if adapter_mb > MAX_ADAPTER_MB:  # also inf
        raise UserError(f"--adapter-mb {adapter_mb:g} is absurd (max {MAX_ADAPTER_MB:g})", ExitCode.USAGE)
    return int(adapter_mb * MB)


__all__ = [
    "PRIORITIES",
    "check_priority",
    "Advice",
    "Budget",
    "Recommendation",
    "RuledOut",
    "adapter_budget_bytes",
    "closest_miss",
    "recommend",
]
