"""Which method, with which settings, fits the budgets, and why.

For each method the recommender walks the knobs a person would turn to make a run fit, in the
order that costs the least (quality first, then speed): the memory-saving techniques that cost
nothing (a fused loss, Liger's kernels; on a CUDA card only), 8-bit AdamW (a small quality risk),
gradient checkpointing, activation offloading (time), a smaller micro-batch with more gradient
accumulation (same effective batch), fewer adapted modules or a lower rank, GaLore's layer-wise
and 8-bit forms. The first setting that fits is that method's offer. Methods that fit are ranked
by the priority the person chose, with reasons drawn from the trade-off matrix (and, for the
techniques, what each saved and what the method needed without them); the others are ruled out
with what they would need.

Pure: the catalog, the estimator and the budget come in, plain data goes out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from peft_advisor.core.catalog import Method, alpha_for, load_catalog, method_info, multi_gpu_refusal, size_knob
from peft_advisor.core.distributed import Parallel, cheapest_first, cpu_ram_what, per_gpu_estimate
from peft_advisor.core.errors import ExitCode, UserError, did_you_mean
from peft_advisor.core.estimate import (CONTEXT_BASE_BYTES, CONTEXT_PER_TOTAL, LIGER_MODEL_TYPES, METHODS, Estimate,
                                        Settings, resolve_targets)
from peft_advisor.core.model_spec import ModelSpec
from peft_advisor.core.speed import ADAMW_8BIT_TIME_FACTOR, base_step_time, speed_key
from peft_advisor.core.units import GIB, fmt_bytes, fmt_file_bytes

PRIORITIES = ("quality", "speed", "memory", "size")
CKPT_TIME_FACTOR = 1.3
"""Recomputing each block in backward: torchtune measured -21 % tokens/s (PEERS.md §2.10)."""
FIT_MARGIN = 0.0
"""Share of the budget kept free beyond the estimate's whole band (high end plus CUDA context)
before a fit counts as "ok". The band already holds the measured residuals of the tuning set;
re-tune this from the fits benchmark on capped GPUs (issue 13, item 5), not by hand."""
FITS = ("ok", "tight")
TECHNIQUES = ("fused_loss", "liger_kernels", "adamw_8bit", "offload_activations")
"""The memory-saving techniques the ladder may turn on, cheapest first (issue 15): the fused loss
is free or faster, Liger's kernels free, 8-bit AdamW a small quality risk, offloading costs time
(tried after checkpointing). Their order is assumed from the tools' own reports, not yet measured."""
TECHNIQUE_WORDS = {"fused_loss": "fused loss", "liger_kernels": "Liger kernels", "adamw_8bit": "8-bit AdamW",
                   "paged_adamw_8bit": "paged 8-bit AdamW", "paged_adamw": "paged AdamW",
                   "offload_activations": "activations offloaded to CPU"}
"""How each technique (or optimizer) is named to the person: settings words and reasons."""


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
    ram_bytes: int | None = None
    """Free CPU RAM that one GPU's offloaded activations may pin: the machine's free RAM shared by
    the run's GPUs on it (None: not checked)."""

    def to_dict(self) -> dict:
        return {
            "vram_bytes": self.vram_bytes,
            "vram_gib": round(self.vram_bytes / GIB, 3),
            "adapter_bytes": self.adapter_bytes,
            "source": self.source,
            "ram_bytes": self.ram_bytes,
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
    savings: tuple[tuple[str, int], ...] = ()
    """(technique words, bytes on the card it saves at these settings) for each technique on."""
    without_techniques: str = ""
    """What this method needed, or why it did not fit, without the techniques ("" when it would
    have fitted with the same knobs or no technique is on)."""

    @property
    def step_time_vs_lora(self) -> float:
        """`speed_figure` at these settings, checkpointed share included."""
        return speed_figure(self.method, self.settings, self.estimate.checkpointed_share)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "name": self.name,
            "fit": self.fit,
            "settings": dict(self.settings.to_dict(), alpha=alpha_for(self.method, self.settings.rank)),
            "settings_words": settings_words(self.settings, self.requested_batch),
            "peak_bytes": self.estimate.peak_bytes,
            "total_bytes": self.estimate.total_bytes,
            "cpu_bytes": self.estimate.cpu_bytes,
            "low_bytes": self.estimate.low_bytes,
            "high_bytes": self.estimate.high_bytes,
            "adapter_bytes": self.estimate.adapter_bytes,
            "trainable_params": self.estimate.trainable_params,
            "step_time_vs_lora": round(self.step_time_vs_lora, 2),
            "adjustments": list(self.adjustments),
            "technique_savings": {words: saved for words, saved in self.savings},
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


def _ladder(s: Settings, multi_gpu: bool = False, techniques: tuple[str, ...] = ()):
    """Settings to try for one method, cheapest change first; yields (settings, adjustments).
    `techniques` (of TECHNIQUES) are the ones this card and model can run: the free ones and
    8-bit AdamW come before checkpointing, offloading after it. The effective batch (micro-batch ×
    accumulation) stays what was asked, except for layer-wise GaLore (no accumulation; single-GPU
    only), tried first at the asked batch, and only then at the smaller micro-batch, which says
    so as a change."""
    yield s, ()
    steps: list[tuple[str, Settings]] = []
    cur = s
    for change in _technique_steps(s, techniques, before_ckpt=True):
        cur = replace(cur, **change)
        steps.append((_technique_label(change), cur))
        yield cur, tuple(a for a, _ in steps)
    if not cur.grad_ckpt:
        cur = replace(cur, grad_ckpt=True)
        steps.append((CKPT_ON, cur))
        yield cur, tuple(a for a, _ in steps)
    for change in _technique_steps(s, techniques, before_ckpt=False):
        cur = replace(cur, **change)
        steps.append((_technique_label(change), cur))
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
                steps = [st for st in steps if not st[0].startswith("micro-batch")]  # no accumulation now
                label += f"; micro-batch {cur.batch_size}: effective batch {cur.batch_size} instead of {s.batch_size}"
            cur = replace(cur, **change)
            steps.append((label, cur))
            yield cur, tuple(a for a, _ in steps)


memory_ladder = _ladder  # for `advise.needs`: the same knobs, walked to the cheapest


def _technique_steps(s: Settings, techniques: tuple[str, ...], before_ckpt: bool) -> list[dict]:
    """The Settings changes of the available techniques not yet on, in TECHNIQUES order: those
    cheaper than checkpointing, or those after it. 8-bit AdamW replaces only the plain optimizer,
    never GaLore's (which has `galore_8bit`)."""
    changes = []
    for name in TECHNIQUES:
        if name not in techniques or (name == "offload_activations") == before_ckpt:
            continue
        if name == "adamw_8bit":
            if s.optimizer == "adamw" and s.method != "galore":
                changes.append({"optimizer": "adamw_8bit"})
        elif not getattr(s, name):
            changes.append({name: True})
    return changes


def _technique_label(change: dict) -> str:
    """The ladder's words for one technique change ("fused loss on", "8-bit AdamW")."""
    (key, value), = change.items()
    return TECHNIQUE_WORDS[value] if key == "optimizer" else TECHNIQUE_WORDS[key] + " on"


def available_techniques(spec: ModelSpec, cuda: bool, enabled: bool = True) -> tuple[str, ...]:
    """The techniques the ladder may use for this model on this card: none when the person turned
    them off or the card is not a CUDA card (Liger's Triton kernels, bitsandbytes and pinned
    memory all need one); Liger's kernels only on an architecture it patches."""
    if not (enabled and cuda):
        return ()
    return tuple(t for t in TECHNIQUES if t != "liger_kernels" or spec.model_type in LIGER_MODEL_TYPES)


def runnable_techniques(s: Settings, par: Parallel, techniques: tuple[str, ...]) -> tuple[str, ...]:
    """Of `techniques`, those the trainer would run for this method on this run
    (`core.techniques.recipe_refusals`: no fused loss under multi-GPU FSDP, no 8-bit AdamW for
    methods with their own optimizer), so the advice never exports a recipe `train` refuses."""
    from peft_advisor.core.techniques import recipe_refusals

    def runs(name: str) -> bool:
        try:
            t = replace(s, **({"optimizer": "adamw_8bit"} if name == "adamw_8bit" else {name: True}))
        except UserError:  # Settings refuses it too (8-bit AdamW for GaLore)
            return False
        return not recipe_refusals(t.method, t.targets, t.optimizer, t.fused_loss, par.strategy, par.gpus,
                                   t.method == "qlora")

    return tuple(name for name in techniques if runs(name))


def without_techniques(s: Settings) -> Settings:
    """The settings with every memory-saving technique off (plain AdamW): `--no-techniques`."""
    return replace(s, fused_loss=False, liger_kernels=False, offload_activations=False, optimizer="adamw")


def technique_savings(estimate, est: Estimate) -> tuple[tuple[str, int], ...]:
    """What each technique on in `est` saves on the card: its total with that one technique off
    minus its total (`estimate(settings) -> Estimate`, e.g. the per-GPU, calibrated one)."""
    s = est.settings
    out = []
    for name in TECHNIQUES:
        if name == "adamw_8bit":
            name, off = s.optimizer, {"optimizer": "adamw"}
            if name == "adamw":
                continue
        elif getattr(s, name):
            off = {name: False}
        else:
            continue
        out.append((TECHNIQUE_WORDS[name], estimate(replace(s, **off)).total_bytes - est.total_bytes))
    return tuple(out)


def _size_ladder(s: Settings):
    """Ways to shrink the saved adapter: lower rank, fewer modules, VeRA without projections."""
    yield s, ()
    if s.method == "vera":
        yield replace(s, vera_save_projection=False), ("VeRA projections not saved (rebuilt from the seed)",)
        return
    if method_info(s.method).trains_all_weights:
        return
    by_rank = size_knob(s.method) == "rank"  # OFT and C3A are sized by block size, IA3 by nothing
    rank = s.rank
    while by_rank and rank > 4:
        rank //= 2
        yield replace(s, rank=rank), (f"rank {rank}",)
    low = min(s.rank, 4)  # a rank asked below 4 is never raised
    for targets, label in (("attention", "attention modules only"), (("q_proj", "v_proj"), "q_proj and v_proj only")):
        yield ((replace(s, rank=low, targets=targets), (*((f"rank {low}",) if low < s.rank else ()), label)) if by_rank
               else (replace(s, targets=targets), (label,)))


def _ram_fits(est: Estimate, budget: Budget) -> bool:
    """Offloaded activations (pinned CPU memory) fit the machine's free RAM, when it is known."""
    return budget.ram_bytes is None or est.cpu_bytes <= budget.ram_bytes


UNDO = ((TECHNIQUE_WORDS["adamw_8bit"], {"optimizer": "adamw"}),
        (TECHNIQUE_WORDS["offload_activations"] + " on", {"offload_activations": False}))
"""Costly techniques the ladder turns on before a later step, which may make them needless; tried
off in this order (quality first, then speed)."""


def _without_needless(est: Estimate, adjustments: tuple, budget: Budget, estimate) -> tuple[Estimate, tuple]:
    """The ladder is cumulative: 8-bit AdamW (a small quality risk) and offloading (time) stay on
    for every later step. When a later step (checkpointing, a smaller micro-batch) made the run
    fit, each is turned back off if the run still fits with room without it. Returns
    (estimate, adjustments)."""
    for label, off in UNDO:
        if label not in adjustments[:-1]:
            continue
        plain = estimate(replace(est.settings, **off))
        if fit_of(plain, budget.vram_bytes) == "ok" and _ram_fits(plain, budget):
            est, adjustments = plain, tuple(a for a in adjustments if a != label)
    return est, adjustments


CKPT_ON = "gradient checkpointing on"


def _fewest_checkpointed(spec: ModelSpec, par: Parallel, est: Estimate, adjustments: tuple, budget: Budget,
                         estimate) -> tuple[Estimate, tuple]:
    """Checkpointing recomputes every block it covers. When the ladder turned it on and the run fits
    with room, the last blocks keep their activations instead: the fewest checkpointed blocks with
    which the whole band still fits (memory grows as fewer are checkpointed, so a bisection finds
    it). Fills the card the person has, and each block left alone saves its recompute. Not under
    FSDP on several GPUs, whose own checkpointing covers every block, nor with offloading, which
    would copy a whole block's activations to the CPU and back instead of one recompute."""
    s, layers = est.settings, spec.num_layers
    fsdp = par.gpus > 1 and par.strategy == "fsdp"
    if CKPT_ON not in adjustments or s.grad_ckpt_layers or layers < 2 or fsdp or s.offload_activations:
        return est, adjustments
    lo, hi, best = 1, layers, est  # `hi` blocks checkpointed fits
    while lo < hi:
        mid = (lo + hi) // 2
        cand = estimate(replace(s, grad_ckpt_layers=mid))
        if fit_of(cand, budget.vram_bytes) == "ok" and _ram_fits(cand, budget):
            hi, best = mid, cand
        else:
            lo = mid + 1
    if best is est:
        return est, adjustments
    label = f"gradient checkpointing on {hi} of {layers} blocks"
    return best, tuple(label if a == CKPT_ON else a for a in adjustments)


def _fits(est: Estimate, budget: Budget) -> bool:
    return fit_of(est, budget.vram_bytes) is not None


def _adapter_fits(est: Estimate, budget: Budget) -> bool:
    return budget.adapter_bytes is None or est.adapter_bytes <= budget.adapter_bytes


def _estimator(spec: ModelSpec, par: Parallel, calibrate, total_vram_bytes: int | None):
    """settings -> the estimate the advice judges by: per GPU, with the local calibration on one GPU."""

    def estimate(settings: Settings) -> Estimate:
        est = per_gpu_estimate(spec, settings, par, total_vram_bytes)
        return calibrate(est) if calibrate and par.gpus == 1 else est

    return estimate


def _search(spec: ModelSpec, s: Settings, budget: Budget, par: Parallel = Parallel(), calibrate=None,
            techniques: tuple[str, ...] = ()):
    """First setting that fits both budgets -> (estimate, adjustments) or (None, closest, reason).
    A setting whose offloaded activations need more CPU RAM than is free does not fit either."""

    estimate = _estimator(spec, par, calibrate, budget.total_vram_bytes)
    closest, tight, short_of_ram = None, None, None
    size_ok_any = False
    for sized, size_adj in _size_ladder(s):
        try:
            if not _adapter_fits(estimate(sized), budget):
                continue
        except UserError:
            continue  # e.g. q_proj/v_proj does not exist in this architecture
        size_ok_any = True
        for cand, adj in _ladder(sized, par.gpus > 1, runnable_techniques(sized, par, techniques)):
            est = estimate(cand)
            fit = fit_of(est, budget.vram_bytes)
            if fit and not _ram_fits(est, budget):
                short_of_ram = short_of_ram or est
                continue
            if fit == "ok":
                est, adj = _without_needless(est, size_adj + adj, budget, estimate)
                return _fewest_checkpointed(spec, par, est, adj, budget, estimate) + (None,)
            if fit == "tight" and tight is None:
                tight = est, size_adj + adj, None  # kept unless a later setting fits with room
            if closest is None or est.total_bytes < closest.total_bytes:
                closest = est
        if tight is not None:
            return tight
    if not size_ok_any:
        smallest = min((estimate(x) for x, _ in _size_ladder(s)
                        if _valid(spec, x)), key=lambda e: e.adapter_bytes)
        reason = (f"adapter {fmt_file_bytes(smallest.adapter_bytes)} at best > budget "
                  f"{fmt_file_bytes(budget.adapter_bytes)}")
        return None, smallest, reason
    per_gpu = " per GPU" if par.gpus > 1 else ""
    if short_of_ram is not None:
        what = cpu_ram_what(short_of_ram.settings, par.offload)
        return None, short_of_ram, (f"needs {fmt_bytes(short_of_ram.cpu_bytes)} of CPU RAM{per_gpu} for {what} "
                                    f"> {fmt_bytes(budget.ram_bytes)} free{per_gpu} "
                                    f"(with {_describe(short_of_ram.settings)})")
    miss = closest.total_bytes - budget.vram_bytes
    reason = (f"needs {fmt_bytes(closest.total_bytes)}{per_gpu} even with {_describe(closest.settings)} "
              f"> budget {fmt_bytes(budget.vram_bytes)} (misses by {fmt_bytes(miss)})")
    return None, closest, reason


def _unsupported(method: str, par: Parallel) -> str | None:
    """Combinations the trainer refuses (the catalog's FSDP facts)."""
    return multi_gpu_refusal(method, par.gpus, par.strategy)


def _more_gpus_hint(spec: ModelSpec, s: Settings, budget: Budget, start: int, techniques: tuple[str, ...] = ()) -> str:
    """'fits on 2 GPUs with FSDP': the fewest GPUs (same budget each) on which a method fits, with the
    strategy that communicates least (`cheapest_first`); offload also names the CPU RAM it needs."""
    for gpus in (2, 4, 8):
        if gpus <= start:
            continue
        for par in cheapest_first(gpus):
            if _unsupported(s.method, par) or _cannot_fit(spec, s, budget, par, techniques):
                continue
            est, _, _ = _search(spec, s, budget, par, techniques=techniques)
            if est is not None:
                ram = f", {fmt_bytes(est.cpu_bytes)} CPU RAM per GPU" if est.cpu_bytes else ""
                return f"; fits on {gpus} such GPUs with {par.label} ({fmt_bytes(est.total_bytes)} each{ram})"
    return ""


def _cannot_fit(spec: ModelSpec, s: Settings, budget: Budget, par: Parallel, techniques: tuple[str, ...]) -> bool:
    """A lower bound that spares a full search: even the cheapest setting of both ladders (the
    smallest adapter, every memory knob turned) does not fit. The hint asks this of up to 18 GPU
    counts and strategies per ruled-out method; most fail it at the cost of one estimate."""
    estimate = _estimator(spec, par, None, budget.total_vram_bytes)
    *_, (smallest, _) = _size_ladder(s)
    *_, (cheapest, _) = _ladder(smallest, par.gpus > 1, runnable_techniques(smallest, par, techniques))
    try:
        return fit_of(estimate(cheapest), budget.vram_bytes) is None
    except UserError:  # e.g. the smallest targets do not exist here: search as usual
        return False


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
    words = _size_words(s) + describe_knobs(s)
    if requested_batch and s.batch_size * s.grad_accum != requested_batch:
        words.append(f"effective batch {s.batch_size * s.grad_accum}, not {requested_batch}")
    return words


KNOB_WORDS = {"rank": "rank", "vera_rank": "vera rank", "galore_rank": "galore rank", "oft_block_size": "block size",
              "c3a_block_size": "block size"}
"""How each `catalog.size_knob` is named to the person."""


def _size_words(s: Settings) -> list[str]:
    """The knob that sizes the adapter (`catalog.size_knob`), and alpha for the LoRA family; IA3
    has none ("scaling vectors"), full fine-tuning trains "all weights"."""
    m, knob = method_info(s.method), size_knob(s.method)
    if knob is None:
        return ["all weights"] if m.trains_all_weights else ["scaling vectors"]
    words = [f"{KNOB_WORDS[knob]} {getattr(s, knob)}"]
    return words + [f"alpha {alpha_for(s.method, s.rank)}"] if m.family == "lora" else words


def describe_knobs(s: Settings) -> list[str]:
    """The settings that change memory, in words (part of `settings_words`)."""
    parts = [f"micro-batch {s.batch_size}" + (f" × {s.grad_accum}" if s.grad_accum > 1 else "")]
    if s.grad_ckpt:
        parts.append(f"checkpointing {s.grad_ckpt_layers} blocks" if s.grad_ckpt_layers else "checkpointing")
    if s.method == "galore" and s.galore_layerwise:
        parts.append("layer-wise")
    if s.method == "galore" and s.galore_8bit:
        parts.append("8-bit states")
    parts += [TECHNIQUE_WORDS[name] for name in ("fused_loss", "liger_kernels") if getattr(s, name)]
    if s.optimizer != "adamw":
        parts.append(TECHNIQUE_WORDS[s.optimizer])
    if s.offload_activations:
        parts.append(TECHNIQUE_WORDS["offload_activations"])
    if not isinstance(s.targets, str) or s.targets != "all-linear":
        parts.append(s.targets if isinstance(s.targets, str) else ",".join(s.targets))
    return parts


def _describe(s: Settings) -> str:
    rank = [f"rank {s.rank}"] if method_info(s.method).family == "lora" else []
    return ", ".join(rank + describe_knobs(s))


# ---------------------------------------------------------------- ranking and reasons


def speed_figure(method: str, s: Settings, checkpointed_share: float | None = None) -> float:
    """The one speed figure: step time vs LoRA's (without checkpointing) at these settings, from
    `core.speed.base_step_time` (this trainer's median for the method or its GaLore variant, else
    the study's training time), ×ADAMW_8BIT_TIME_FACTOR for a bitsandbytes optimizer, and the
    recompute cost (CKPT_TIME_FACTOR - 1) scaled by the share of blocks checkpointed
    (`Estimate.checkpointed_share`; None: all of them when `grad_ckpt`). The reason, the ranking,
    both tables and the JSON all use this."""
    share = (1.0 if s.grad_ckpt else 0.0) if checkpointed_share is None else checkpointed_share
    base, _ = base_step_time(speed_key(method, s.galore_layerwise, s.galore_8bit))
    optimizer = ADAMW_8BIT_TIME_FACTOR if s.optimizer != "adamw" else 1.0
    return base * optimizer * (1 + (CKPT_TIME_FACTOR - 1) * share)


def quality_at(m: Method, s: Settings) -> int:
    """The quality the evidence supports at these settings: a claim above LoRA's (3) measured at
    `evidence_rank` is not carried to a lower rank, whether asked for or lowered to fit."""
    return min(m.quality, 3) if _below_evidence(m, s) else m.quality


def evidence_level(m: Method, s: Settings, requested: Settings) -> int:
    """How well the quality evidence matches what the advice did to the request: 2 measured by
    the study, 1 measured but the ladder lowered the rank below the measured one, 0 not in the study
    (paper or third party). Among equal quality the ranking prefers the better-matched evidence;
    a rank the person asked for is theirs, and all methods share it."""
    if not m.in_study:
        return 0
    asked = _rank_of(replace(requested, method=s.method))
    return 1 if _below_evidence(m, s) and asked is not None and _rank_of(s) < asked else 2


def _below_evidence(m: Method, s: Settings) -> bool:
    rank = _rank_of(s)
    return bool(m.evidence_rank) and rank is not None and rank < m.evidence_rank


def _rank_of(s: Settings) -> int | None:
    """The size the evidence's `evidence_rank` is comparable with, larger meaning more capacity:
    `rank`, VeRA's `vera_rank` or OFT's block size; None for the others (C3A's block size works the
    other way, IA3 and full fine-tuning have none, GaLore's rank is its optimizer's)."""
    knob = size_knob(s.method)
    return getattr(s, knob) if knob in ("rank", "vera_rank", "oft_block_size") else None


def _sort_key(rec: Recommendation, m: Method, priority: str, request: Settings):
    est = rec.estimate
    quality, peak, size = -quality_at(m, rec.settings), est.total_bytes, est.adapter_bytes
    time = rec.step_time_vs_lora
    evidence = -evidence_level(m, rec.settings, request)
    return (rec.fit != "ok",) + {
        "quality": (quality, evidence, _costly_changes(rec.adjustments), time, peak),
        "speed": (round(time, 2), quality, peak),
        "memory": (peak, quality, time),
        "size": (size, quality, peak),
    }[priority]


FREE_CHANGES = tuple(TECHNIQUE_WORDS[t] + " on" for t in ("fused_loss", "liger_kernels"))
"""Ladder steps that cost neither quality nor speed: the ranking does not count them as changes."""


def _costly_changes(adjustments: tuple) -> int:
    """How many of the changes made to fit cost quality or speed (the quality ranking's tie-break)."""
    return sum(1 for a in adjustments if a not in FREE_CHANGES)


def _reasons(rec: Recommendation, m: Method, budget: Budget, request: Settings,
             par: Parallel = Parallel()) -> tuple[str, ...]:
    est = rec.estimate
    band = (f"peak {fmt_bytes(est.peak_bytes)} + CUDA context {fmt_bytes(est.context_bytes)}; "
            f"range {fmt_bytes(est.low_bytes + est.context_bytes)}–{fmt_bytes(est.high_bytes + est.context_bytes)}")
    out = [f"fits: {fmt_bytes(est.total_bytes)} of {fmt_bytes(budget.vram_bytes)} ({band})" if rec.fit == "ok" else
           f"{tight_risk(est, budget.vram_bytes)} (expected {fmt_bytes(est.total_bytes)}: {band})"]
    if rec.adjustments:
        out.append("to fit: " + "; ".join(rec.adjustments))
    if rec.savings:
        out.append(_techniques_reason(rec))
    if est.cpu_bytes:
        ram = f", of {fmt_bytes(budget.ram_bytes)} free" if budget.ram_bytes is not None else "; free RAM not checked"
        out.append(f"CPU RAM: {fmt_bytes(est.cpu_bytes)} for {cpu_ram_what(rec.settings, par.offload)}{ram}")
    if rec.settings.optimizer.startswith("paged"):
        out.append("paged optimizer: its states can spill pages to CPU RAM when the card runs short")
    out.append(_quality_reason(m, rec, request))
    out.append(_speed_reason(rec))
    if rec.method == "galore":
        out.append("speed: not counted above: an SVD of every projected weight at the first step and "
                   "every update_proj_gap steps (seconds to minutes, growing with the model)")
    if est.calibrated:
        out.append(f"estimate {est.calibrated}")
    if not m.memory_measured:
        out.append(f"memory not yet measured on a GPU: {m.name}'s saved activations are counted as autograd "
                   "saves them on the CPU, its backward buffers and allocator overhead as LoRA's "
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
    techniques: tuple[str, ...] = (),
) -> Advice:
    """Rank every method that fits; rule out the rest with the reason (and how many GPUs would do).

    `calibrate` (est -> est) applies local measurements of this GPU and model, when there are any.
    `evaluation` ({"eval_seq_len": …, "generate_len": …}) counts the run's evaluation pass.
    `techniques` (see `available_techniques`) are the memory-saving techniques the ladder may
    turn on; () gives the advice without them.
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
        est, adjustments, reason = _search(spec, s, budget, parallel, calibrate, techniques)
        name = catalog[method].name
        if est is None:
            if "adapter" not in reason:
                reason += _more_gpus_hint(spec, s, budget, parallel.gpus, techniques)
            ruled.append(RuledOut(method, name, reason, adjustments.peak_bytes, adjustments))
            continue
        savings, without = _technique_effect(spec, s, budget, parallel, calibrate, est, adjustments)
        fits.append(Recommendation(method, name, est.settings, est, (), adjustments,
                                   fit_of(est, budget.vram_bytes), batch_size, savings, without))
    fits.sort(key=lambda r: _sort_key(r, catalog[r.method], priority, request))
    recs = tuple(replace(r, reasons=_reasons(r, catalog[r.method], budget, request, parallel)) for r in fits)
    if recs:
        recs = (replace(recs[0], reasons=(_why_first(recs, catalog, priority, request),) + recs[0].reasons),) + recs[1:]
    ruled.sort(key=lambda r: (r.closest is None, r.peak_bytes))
    return Advice(spec.id, priority, budget, request, recs, tuple(ruled), parallel)


def _techniques_reason(rec: Recommendation) -> str:
    """Which techniques are on and what each saves by the numbers; and what the method needed
    without them (checkpointing, a smaller micro-batch, or it did not fit at all)."""
    saved = ", ".join(f"{words}: −{fmt_bytes(max(0, b))}" for words, b in rec.savings)
    return f"techniques: {saved}" + (f"; {rec.without_techniques}" if rec.without_techniques else "")


def _without_words(rec_adjustments: tuple, plain, budget: Budget) -> str:
    """How the advice without the techniques differs, in words, from `plain` = _search's answer
    without them; "" when the same knobs would have fitted as well."""
    est, adjustments, reason = plain
    if est is None:
        return f"without them ruled out: {reason}"
    extra = [a for a in adjustments if a not in rec_adjustments]
    tight = fit_of(est, budget.vram_bytes) == "tight"
    if not extra and not tight:
        return ""
    if not extra:
        return f"without them the same settings fit only tight ({fmt_bytes(est.total_bytes)})"
    return f"without them it would need {'; '.join(extra)} ({fmt_bytes(est.total_bytes)}{', tight' if tight else ''})"


def _technique_effect(spec: ModelSpec, s: Settings, budget: Budget, par: Parallel, calibrate, est: Estimate,
                      adjustments: tuple) -> tuple[tuple, str]:
    """(what each technique on saves, what the method needed without any) for one offer."""
    if not _techniques_on(est.settings):
        return (), ""
    plain = _search(spec, s, budget, par, calibrate)
    estimate = _estimator(spec, par, calibrate, budget.total_vram_bytes)
    return technique_savings(estimate, est), _without_words(adjustments, plain, budget)


def _techniques_on(s: Settings) -> bool:
    return s.fused_loss or s.liger_kernels or s.offload_activations or s.optimizer != "adamw"


def _quality_reason(m: Method, rec: Recommendation, request: Settings) -> str:
    """The quality claim, and, when these settings' rank is below the one the evidence was
    measured at and either the ladder lowered it or the claim is above LoRA's, that it was
    measured elsewhere."""
    rank = _rank_of(rec.settings)
    if not _below_evidence(m, rec.settings):
        return f"quality: {m.quality_evidence}"
    lowered = rank < (_rank_of(replace(request, method=rec.method)) or 0)
    if not (lowered or m.quality > 3):
        return f"quality: {m.quality_evidence}"
    at = quality_at(m, rec.settings)
    claim = (f"the {m.quality}/5 claim does not carry over (counted as {at}/5)" if at < m.quality
             else "below the measured rank")
    knob = KNOB_WORDS[size_knob(rec.method)]
    claim = claim.replace("rank", knob)
    return f"quality: measured at {knob} {m.evidence_rank}; these settings use {knob} {rank}, {claim}. {m.quality_evidence}"


def _speed_reason(rec: Recommendation) -> str:
    """The speed figure with where it comes from (the same number the ranking uses)."""
    s, share, t = rec.settings, rec.estimate.checkpointed_share, rec.step_time_vs_lora
    key = speed_key(rec.method, s.galore_layerwise, s.galore_8bit)
    _, basis = base_step_time(key)
    if key != rec.method:
        basis = f"{ {'layerwise': 'layer-wise', '8bit': '8-bit'}[key.split('+')[1]]} GaLore: {basis}"
    measured = "one run" if s.optimizer == "adamw_8bit" else "assumed as 8-bit AdamW's"
    costs = [f"×{ADAMW_8BIT_TIME_FACTOR:g} for {TECHNIQUE_WORDS[s.optimizer]} ({measured})"] if s.optimizer != "adamw" else []
    if share:
        costs.append(f"×{CKPT_TIME_FACTOR:g} for gradient checkpointing" if share == 1 else
                     f"×{1 + (CKPT_TIME_FACTOR - 1) * share:.2f} for checkpointing {share:.0%} of the blocks")
    if s.offload_activations:
        costs.append("offloading's copies not counted (not measured)")
    return f"speed: {t:.2f}× LoRA's step time without checkpointing ({'; '.join([basis, *costs])})"


def _why_first(recs, catalog, priority: str, request: Settings) -> str:
    best = recs[0]
    m = catalog[best.method]
    if priority == "quality":
        at = quality_at(m, best.settings)
        return f"best measured quality that fits (quality {at}/5 relative to LoRA = 3)"
    if priority == "speed":
        return f"fastest that fits ({best.step_time_vs_lora:.2f}× LoRA's step time)"
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


__all__ = [
    "PRIORITIES",
    "check_priority",
    "Advice",
    "Budget",
    "Recommendation",
    "RuledOut",
    "closest_miss",
    "recommend",
]
