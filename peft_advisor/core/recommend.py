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

from peft_advisor.core.catalog import Method, alpha_for, load_catalog, method_info, multi_gpu_refusal
from peft_advisor.core.distributed import Parallel, cheapest_first, per_gpu_estimate
from peft_advisor.core.errors import ExitCode, UserError, did_you_mean
from peft_advisor.core.estimate import CONTEXT_BASE_BYTES, CONTEXT_PER_TOTAL, METHODS, Estimate, Settings, resolve_targets
from peft_advisor.core.limits import MAX_ADAPTER_MB
from peft_advisor.core.model_spec import ModelSpec
from peft_advisor.core.speed import measured_shapes, measured_step_time, step_time_range, step_time_vs_lora
from peft_advisor.core.units import GIB, MB, fmt_bytes, fmt_file_bytes

PRIORITIES = ("quality", "speed", "memory", "size")
CKPT_TIME_FACTOR = 1.3
"""Recomputing each block in backward: torchtune measured -21 % tokens/s (PEERS.md §2.10)."""
FIT_MARGIN = 0.0
"""Share of the budget kept free beyond the estimate's whole band (high end plus CUDA context)
before a fit counts as "ok". The band already holds the measured residuals of the tuning set;
re-tune this from the fits benchmark on capped GPUs (issue 13, item 5), not by hand."""
FITS = ("ok", "tight")


def fit_of(est: Estimate, budget_bytes: int) -> str | None:
    """"ok" when the whole band (high end plus context) fits the budget less FIT_MARGIN; "tight"
    when only the expected peak does (a run may die at the band's high end); None: does not fit.
    The one fit rule: recommendations, `estimate` and the app's launch guard use it."""
    return fit_for(est.peak_bytes, est.high_bytes, est.context_bytes, budget_bytes)


def fit_for(peak_bytes: int, high_bytes: int, context_bytes: int, budget_bytes: int) -> str | None:
    if peak_bytes + context_bytes > budget_bytes:
        return None
    return "ok" if high_bytes + context_bytes <= budget_bytes * (1 - FIT_MARGIN) else "tight"


def card_needed_bytes(est: Estimate) -> int:
    """The smallest card on which this estimate fits "ok": its whole band plus the context, which
    grows with the card's size (CONTEXT_PER_TOTAL), plus FIT_MARGIN."""
    return int((est.high_bytes + CONTEXT_BASE_BYTES) / (1 - CONTEXT_PER_TOTAL - FIT_MARGIN))


def tight_risk(est: Estimate, budget_bytes: int) -> str:
    """What "tight" risks, in words (both front ends show it)."""
    return tight_words(est.high_bytes + est.context_bytes, budget_bytes)


def tight_words(top: int, budget_bytes: int) -> str:
    return (f"tight: the estimate's high end with context, {fmt_bytes(top)}, reaches past the "
            f"{fmt_bytes(budget_bytes)} budget; a run at that end runs out of memory")


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
    fit: str = "ok"
    """"ok": the whole band fits; "tight": only the expected peak does (see `fit_of`)."""
    requested_batch: int | None = None
    """The effective batch asked for (settings words say when it changed)."""

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "name": self.name,
            "fit": self.fit,
            "settings": dict(self.settings.to_dict(), alpha=alpha_for(self.method, self.settings.rank)),
            "settings_words": settings_words(self.settings, self.requested_batch),
            "peak_bytes": self.estimate.peak_bytes,
            "total_bytes": self.estimate.total_bytes,
            "low_bytes": self.estimate.low_bytes,
            "high_bytes": self.estimate.high_bytes,
            "adapter_bytes": self.estimate.adapter_bytes,
            "trainable_params": self.estimate.trainable_params,
            "step_time_vs_lora": round(speed_figure(self.method, self.settings), 2),
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
    data: dict | None = None
    """The data profile the sequence length came from (`DataProfile.to_dict`), when one was given."""

    @property
    def best(self) -> Recommendation | None:
        return self.recommendations[0] if self.recommendations else None

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "priority": self.priority,
            "budget": self.budget.to_dict(),
            "request": {"seq_len": self.request.seq_len, "batch_size": self.request.batch_size},
            "parallel": {"gpus": self.parallel.gpus, "strategy": self.parallel.strategy,
                         "offload": self.parallel.offload},
            "recommendations": [r.to_dict() for r in self.recommendations],
            "ruled_out": [r.to_dict() for r in self.ruled_out],
            **({"data": self.data} if self.data else {}),
        }


# ---------------------------------------------------------------- search for settings that fit


def _ladder(s: Settings, multi_gpu: bool = False):
    """Settings to try for one method, cheapest change first; yields (settings, adjustments).
    The effective batch (micro-batch × accumulation) stays what was asked, except for layer-wise
    GaLore (no accumulation; single-GPU only), tried first at the asked batch, and only then at
    the smaller micro-batch, which says so as a change."""
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
            changes.insert(0, ("layer-wise GaLore (no full gradient buffer; no accumulation)",
                               dict(galore_layerwise=True, grad_accum=1)))
        for label, change in changes:
            if change.get("galore_layerwise") and cur.batch_size < s.batch_size:
                whole = replace(cur, batch_size=s.batch_size, **change)  # the asked batch in one pass
                kept = [st for st in steps if not st[0].startswith("micro-batch")]
                yield whole, tuple(a for a, _ in kept) + (label,)
                label += f"; effective batch {cur.batch_size} instead of {s.batch_size}"
            cur = replace(cur, **change)
            steps.append((label, cur))
            yield cur, tuple(a for a, _ in steps)


memory_ladder = _ladder  # for `advise.needs`: the same knobs, walked to the cheapest


def _size_ladder(s: Settings):
    """Ways to shrink the saved adapter: lower rank, fewer modules, VeRA without projections."""
    yield s, ()
    if s.method == "vera":
        yield replace(s, vera_save_projection=False), ("VeRA projections not saved (rebuilt from the seed)",)
        return
    if method_info(s.method).trains_all_weights:
        return
    rank = s.rank
    while rank > 4:
        rank //= 2
        yield replace(s, rank=rank), (f"rank {rank}",)
    for targets, label in (("attention", "attention modules only"), (("q_proj", "v_proj"), "q_proj and v_proj only")):
        yield replace(s, rank=4, targets=targets), ("rank 4", label)


def _fits(est: Estimate, budget: Budget) -> bool:
    return fit_of(est, budget.vram_bytes) is not None


def _adapter_fits(est: Estimate, budget: Budget) -> bool:
    return budget.adapter_bytes is None or est.adapter_bytes <= budget.adapter_bytes


def _search(spec: ModelSpec, s: Settings, budget: Budget, par: Parallel = Parallel(), calibrate=None):
    """First setting that fits both budgets -> (estimate, adjustments) or (None, closest, reason)."""

    def estimate(spec, settings, total=None):
        est = per_gpu_estimate(spec, settings, par, total)
        return calibrate(est) if calibrate and par.gpus == 1 else est

    closest, tight = None, None
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
            fit = fit_of(est, budget.vram_bytes)
            if fit == "ok":
                return est, size_adj + adj, None
            if fit == "tight" and tight is None:
                tight = est, size_adj + adj, None  # kept unless a later setting fits with room
            if closest is None or est.total_bytes < closest.total_bytes:
                closest = est
        if tight is not None:
            return tight
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
    """Combinations the trainer refuses (the catalog's FSDP facts)."""
    return multi_gpu_refusal(method, par.gpus, par.strategy)


def _more_gpus_hint(spec: ModelSpec, s: Settings, budget: Budget, start: int) -> str:
    """'fits on 2 GPUs with FSDP': the fewest GPUs (same budget each) on which a method fits, with the
    strategy that communicates least (`cheapest_first`); offload also names the CPU RAM it needs."""
    for gpus in (2, 4, 8):
        if gpus <= start:
            continue
        for par in cheapest_first(gpus):
            if _unsupported(s.method, par):
                continue
            est, _, _ = _search(spec, s, budget, par)
            if est is not None:
                ram = f", {fmt_bytes(est.cpu_bytes)} CPU RAM per GPU" if est.cpu_bytes else ""
                return f"; fits on {gpus} such GPUs with {par.label} ({fmt_bytes(est.total_bytes)} each{ram})"
    return ""


def _valid(spec: ModelSpec, s: Settings) -> bool:
    try:
        per_gpu_estimate(spec, s, Parallel())
        return True
    except UserError:
        return False


def settings_words(s: Settings, requested_batch: int | None = None) -> list[str]:
    """The one wording of a method's settings (the CLI's table, the app's detail, JSON): the rank
    and alpha (by the catalog's rule), then the knobs that change memory; an effective batch other
    than the one asked for is said as a change."""
    family = method_info(s.method).family
    head = {"lora": [f"rank {s.rank}", f"alpha {alpha_for(s.method, s.rank)}"],
            "vera": [f"vera rank {s.vera_rank}"]}.get(family)
    if head is None:
        head = [f"galore rank {s.galore_rank}"] if s.method == "galore" else ["all weights"]
    words = head + describe_knobs(s)
    if requested_batch and s.batch_size * s.grad_accum != requested_batch:
        words.append(f"effective batch {s.batch_size * s.grad_accum}, not {requested_batch}")
    return words


def describe_knobs(s: Settings) -> list[str]:
    """The settings that change memory, in words (part of `settings_words`)."""
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
    rank = [f"rank {s.rank}"] if method_info(s.method).family == "lora" else []
    return ", ".join(rank + describe_knobs(s))


# ---------------------------------------------------------------- ranking and reasons


def speed_figure(method: str, s: Settings) -> float:
    """The one speed figure: step time vs LoRA's (without checkpointing) at these settings, from
    the measured median (core.speed) times CKPT_TIME_FACTOR when checkpointing is on. The reason,
    the ranking, both tables and the JSON all use this."""
    t = step_time_vs_lora(method)
    return t * CKPT_TIME_FACTOR if s.grad_ckpt else t


def quality_at(m: Method, s: Settings, requested_rank: int) -> int:
    """The quality the evidence supports at these settings: a claim above LoRA's (3) measured at
    `evidence_rank` is not carried to a rank the ladder lowered below it."""
    if _lowered_below_evidence(m, s, requested_rank):
        return min(m.quality, 3)
    return m.quality


def evidence_level(m: Method, s: Settings, requested_rank: int) -> int:
    """How well the quality evidence matches these settings: 2 measured by the study, 1 measured
    but at a rank above the one the ladder lowered to, 0 not in the study (paper or third party).
    Among equal quality the ranking prefers the better-matched evidence."""
    if not m.in_study:
        return 0
    return 1 if _lowered_below_evidence(m, s, requested_rank) else 2


def _lowered_below_evidence(m: Method, s: Settings, requested_rank: int) -> bool:
    rank = _rank_of(s)
    return bool(m.evidence_rank) and rank < m.evidence_rank and rank < requested_rank


def _rank_of(s: Settings) -> int:
    return s.vera_rank if s.method == "vera" else s.rank


def _sort_key(rec: Recommendation, m: Method, priority: str, request: Settings):
    est = rec.estimate
    requested = _rank_of(replace(request, method=rec.method))
    quality, peak, size = -quality_at(m, rec.settings, requested), est.total_bytes, est.adapter_bytes
    time = speed_figure(rec.method, rec.settings)
    evidence = -evidence_level(m, rec.settings, requested)
    return (rec.fit != "ok",) + {
        "quality": (quality, evidence, len(rec.adjustments), time, peak),
        "speed": (round(time, 2), quality, peak),
        "memory": (peak, quality, time),
        "size": (size, quality, peak),
    }[priority]


def _reasons(rec: Recommendation, m: Method, budget: Budget, request: Settings) -> tuple[str, ...]:
    est = rec.estimate
    band = (f"peak {fmt_bytes(est.peak_bytes)} + CUDA context {fmt_bytes(est.context_bytes)}; "
            f"range {fmt_bytes(est.low_bytes + est.context_bytes)}–{fmt_bytes(est.high_bytes + est.context_bytes)}")
    out = [f"fits: {fmt_bytes(est.total_bytes)} of {fmt_bytes(budget.vram_bytes)} ({band})" if rec.fit == "ok" else
           f"{tight_risk(est, budget.vram_bytes)} (expected {fmt_bytes(est.total_bytes)}: {band})"]
    if rec.adjustments:
        out.append("to fit: " + "; ".join(rec.adjustments))
    out.append(_quality_reason(m, rec, request))
    out.append(_speed_reason(rec))
    if rec.method == "galore":
        out.append("speed: not counted above: an SVD of every projected weight at the first step and "
                   "every update_proj_gap steps (seconds to minutes, growing with the model)")
    if est.calibrated:
        out.append(f"estimate {est.calibrated}")
    if measured_step_time(rec.method) is None:  # no H200 run yet: neither step time nor memory
        out.append(f"memory not yet measured on a GPU: {m.name}'s activation terms are LoRA's by analogy "
                   "(parameters and adapter size are counted exactly)")
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
    evaluation: dict | None = None,
) -> Advice:
    """Rank every method that fits; rule out the rest with the reason (and how many GPUs would do).

    `calibrate` (est -> est) applies local measurements of this GPU and model, when there are any.
    `evaluation` ({"eval_seq_len": …, "generate_len": …}) counts the run's evaluation pass.
    """
    check_priority(priority)
    if budget.vram_bytes <= 0:
        raise UserError("VRAM budget must be positive", ExitCode.USAGE)
    resolve_targets(spec, targets)  # a typo is an error, not a silent fall back to smaller target sets
    catalog = catalog or load_catalog()
    request = Settings(method="lora", rank=rank, targets=targets, batch_size=batch_size, seq_len=seq_len,
                       **(evaluation or {}))
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
        fits.append(Recommendation(method, name, est.settings, est, (), adjustments,
                                   fit_of(est, budget.vram_bytes), batch_size))
    fits.sort(key=lambda r: _sort_key(r, catalog[r.method], priority, request))
    recs = tuple(replace(r, reasons=_reasons(r, catalog[r.method], budget, request)) for r in fits)
    if recs:
        recs = (replace(recs[0], reasons=(_why_first(recs, catalog, priority, request),) + recs[0].reasons),) + recs[1:]
    ruled.sort(key=lambda r: (r.closest is None, r.peak_bytes))
    return Advice(spec.id, priority, budget, request, recs, tuple(ruled), parallel)


def _quality_reason(m: Method, rec: Recommendation, request: Settings) -> str:
    """The quality claim, and, when the ladder lowered the rank below the one the evidence was
    measured at (or the claim is above LoRA's), that it was measured elsewhere."""
    rank = _rank_of(rec.settings)
    lowered = rank < _rank_of(replace(request, method=rec.method))
    if not m.evidence_rank or rank >= m.evidence_rank or not (lowered or m.quality > 3):
        return f"quality: {m.quality_evidence}"
    at = quality_at(m, rec.settings, _rank_of(replace(request, method=rec.method)))
    claim = (f"the {m.quality}/5 claim does not carry over (counted as {at}/5)" if at < m.quality
             else "below the measured rank")
    return f"quality: measured at rank {m.evidence_rank}; these settings use rank {rank}, {claim}. {m.quality_evidence}"


def _speed_reason(rec: Recommendation) -> str:
    """The speed figure with the shape it was measured at (the same number the ranking uses)."""
    t = speed_figure(rec.method, rec.settings)
    measured = measured_step_time(rec.method)
    lo_hi = step_time_range(rec.method)
    spread = f", {lo_hi[0]:.2f}–{lo_hi[1]:.2f}× across them" if lo_hi and rec.method != "lora" else ""
    basis = (f"measured {measured:.2f}× on {measured_shapes()}{spread}" if measured is not None
             else "not measured: assumed LoRA's")
    ckpt = f"; ×{CKPT_TIME_FACTOR:g} for gradient checkpointing" if rec.settings.grad_ckpt else ""
    return f"speed: {t:.2f}× LoRA's step time without checkpointing ({basis}{ckpt})"


def _why_first(recs, catalog, priority: str, request: Settings) -> str:
    best = recs[0]
    m = catalog[best.method]
    if priority == "quality":
        at = quality_at(m, best.settings, _rank_of(replace(request, method=best.method)))
        return f"best measured quality that fits (quality {at}/5 relative to LoRA = 3)"
    if priority == "speed":
        return f"fastest that fits ({speed_figure(best.method, best.settings):.2f}× LoRA's step time)"
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
