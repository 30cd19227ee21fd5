"""One advice for every front end: the request, its one validation, the one call, its words.

The CLI (`recommend`, `estimate`, `export`) and the terminal app used to each hold their own
defaults, limit checks, "a typed VRAM is the card's size" rule and calibration hook, and gave
different answers to the same question. Here each of those exists once: a front end fills an
`AdviceRequest` (leaving out what the person did not give), calls `advise` or `estimate_one`, and
renders what comes back. It names fields in its own words (`--vram` or "VRAM GiB") by passing
`labels`; the rules and the messages are the same everywhere.

Pure: the GPU probe and the calibration store come in as callables, so nothing here touches NVML
or the cache unless the request needs it (a typed budget never probes).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.limits import MAX_ADAPTER_MB, MAX_BATCH, MAX_GPUS, MAX_RANK, MAX_SEQ_LEN, MAX_VRAM_GIB
from peft_advisor.core.units import GIB, MB, fmt_bytes

DEFAULT_MODEL = "llama-3.1-8b"
"""The model people fine-tune most; a preset id, a local folder or a config.json picks another."""
REFERENCE_CARD_GIB = 140
"""The card an estimate's CUDA context is sized for when no card is known (an H200's 140 GiB)."""

LABELS = {
    "model": "model", "vram_gib": "VRAM budget", "adapter_mb": "adapter budget", "seq_len": "sequence length",
    "batch_size": "batch", "rank": "rank", "targets": "targets", "priority": "priority", "methods": "methods",
    "gpus": "GPU count", "strategy": "strategy", "gpu_index": "GPU index", "zero_offload": "ZeRO offload",
    "data_columns": "data columns", "data_config": "data config", "data_split": "data split", "data": "data",
}
"""How a field is named in messages; each front end passes its own (flags, field labels)."""


@dataclass(frozen=True)
class AdviceRequest:
    """What the person asks; every front end's defaults are these."""

    model: str = DEFAULT_MODEL
    vram_gib: float | None = None
    """The budget, taken as the card's size (it also sizes the CUDA context); None: the free
    memory of the probed GPU `gpu_index`."""
    adapter_mb: float | None = None
    """Largest saved adapter in MB (10^6 bytes); None or 0: no limit."""
    seq_len: int = 1024
    batch_size: int = 4
    """The effective batch: the advice keeps micro-batch × accumulation equal to it, or says not."""
    rank: int = 16
    targets: str | tuple[str, ...] = "all-linear"
    priority: str = "quality"
    methods: tuple[str, ...] | None = None
    """Methods to consider, None: all of the catalog's."""
    gpus: int | None = None
    """GPU count; None: the probed GPUs of the same model as `gpu_index`, or 1 with a typed budget."""
    strategy: str = "fsdp"
    zero_offload: str = "none"
    """ZeRO only: "optimizer" | "optimizer+params" (zero3) kept in CPU RAM."""
    gpu_index: int | None = None
    """The probed GPU that is the card; None: GPU 0, without asking for one (so `estimate` may
    fall back to the reference card where no GPU is found; a named GPU must exist)."""
    gpu_name: str | None = None
    """Use local calibration measured on this GPU; None: the probed GPU's, when one is used."""
    data: str | None = None
    """The training data (a file, a folder, "demo", a cached Hub id): the estimate then uses its
    longest row after truncation at `seq_len` (the max_seq_len) and counts its evaluation pass;
    None: every row is `seq_len` long and no evaluation is counted."""
    packing: bool = False
    """Rows packed into `seq_len`-token rows (data.packing)."""
    data_columns: str = ""
    """The data's columns named as the format's fields, "instruction=question,output=answer" (data.columns)."""
    data_config: str = ""
    """A Hub dataset's configuration or a save_to_disk folder's subfolder (data.config)."""
    data_split: str = ""
    """The split trained on; "" = train (data.split)."""
    techniques: bool = True
    """Let the advice turn on the memory-saving techniques (fused loss, Liger kernels, 8-bit AdamW,
    activation offloading) where the card runs them; False: the advice without them, and
    `estimate_one` turns off any its settings have."""


@dataclass(frozen=True)
class Card:
    """The card the advice is for: the budget, its size (sizes the CUDA context), where it came from."""

    budget_bytes: int | None
    total_bytes: int | None
    source: str
    name: str | None = None
    """The probed GPU's name (its calibration applies); None for a typed budget."""
    same_gpus: int = 1
    """Probed GPUs of the same model (the default GPU count)."""
    cuda: bool = True
    """An NVIDIA card runs CUDA: a probed GPU, or a typed budget (the advisor's budgets are NVIDIA
    cards); False for the reference card used when none is known."""


@dataclass(frozen=True)
class EstimateResult:
    """One method's estimate on one card, and how it fits when there is a budget."""

    estimate: object
    card: Card
    parallel: object
    fit: str | None = None
    """"ok", "tight", or None (does not fit); "" when there is no budget to fit."""
    card_note: str = ""
    words: list[str] = field(default_factory=list)
    data_words: list[str] = field(default_factory=list)
    """What the data profile changed (sequence length, evaluation), when --data was given."""
    ram_bytes: int | None = None
    """Free CPU RAM per GPU process, which the estimate's CPU RAM must fit; None: not checked
    (nothing offloaded, or no `ram` probe given)."""

    @property
    def ram_fits(self) -> bool | None:
        if self.ram_bytes is None:
            return None
        return self.estimate.cpu_bytes <= self.ram_bytes


# ---------------------------------------------------------------- the one validation


def check(req: AdviceRequest, labels: dict | None = None) -> AdviceRequest:
    """Every field of the request, before any model is loaded or GPU probed; the first problem is
    one line naming the field as the front end calls it."""
    name = {**LABELS, **(labels or {})}
    if not str(req.model).strip():
        raise UserError(f"{name['model']}: give a preset id, a model folder or a config.json", ExitCode.USAGE)
    if req.vram_gib is not None:
        _positive_float(name["vram_gib"], req.vram_gib, MAX_VRAM_GIB, "GiB")
    if req.adapter_mb:
        _positive_float(name["adapter_mb"], req.adapter_mb, MAX_ADAPTER_MB, "MB")
    for key, ceiling in (("seq_len", MAX_SEQ_LEN), ("batch_size", MAX_BATCH), ("rank", MAX_RANK), ("gpus", MAX_GPUS)):
        value = getattr(req, key)
        if value is not None:
            _whole(name[key], value, ceiling)
    if not req.data and (req.data_columns or req.data_config or req.data_split):
        flag = "data columns" if req.data_columns else "data config" if req.data_config else "data split"
        raise UserError(f"{name.get(flag.replace(' ', '_'), flag)} says which rows of the data to read: "
                        f"give the data too ({name['data']})", ExitCode.USAGE)
    if req.data_columns:
        check_columns(name["data_columns"], req.data_columns)
    if req.gpu_index is not None and (not isinstance(req.gpu_index, int) or req.gpu_index < 0):
        raise UserError(f"{name['gpu_index']} must be a GPU index >= 0, got {req.gpu_index}", ExitCode.USAGE)
    from peft_advisor.core.catalog import METHOD_IDS
    from peft_advisor.core.distributed import Parallel
    from peft_advisor.core.estimate import Settings
    from peft_advisor.core.recommend import check_priority

    check_priority(req.priority)
    for method in req.methods or METHOD_IDS:
        Settings(method=method)  # 'unknown method … did you mean'
    from peft_advisor.core.distributed import offload_problem

    Parallel(1, req.strategy)  # the strategy is checked whatever the count
    problem = offload_problem(req.strategy, req.zero_offload)
    if problem:
        raise UserError(f"{name['zero_offload']} {problem}", ExitCode.USAGE)
    return req


def check_columns(label: str, text: str) -> str:
    """field=column pairs, checked by the recipe's own rule (data.columns)."""
    from peft_advisor.core.recipe_fields import _as_columns

    try:
        return _as_columns(text)
    except ValueError as err:
        raise UserError(f"{label}: {err}", ExitCode.USAGE) from None


def _positive_float(label: str, value: float, ceiling: float, unit: str) -> None:
    if not value > 0:  # also NaN
        raise UserError(f"{label} must be a positive number of {unit}, got {value:g}", ExitCode.USAGE)
    if value > ceiling:  # also inf
        raise UserError(f"{label} {value:g} is absurd (more than {ceiling:,g} {unit})", ExitCode.USAGE)


def _whole(label: str, value, ceiling: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{label} must be a whole number, got {value!r}", ExitCode.USAGE)
    if value < 1:
        raise UserError(f"{label} must be >= 1, got {value}", ExitCode.USAGE)
    if value > ceiling:
        raise UserError(f"{label} {value} is absurd (more than {ceiling:,})", ExitCode.USAGE)


# ---------------------------------------------------------------- the card


def card_for(req: AdviceRequest, probe: Callable | None, labels: dict | None = None, required: bool = True) -> Card:
    """The budget and card size: a typed budget is the card's size; otherwise the probed GPU's
    free memory and size. With no GPU, `required` (or a GPU named by index) raises the probe's
    message (NO_GPU, no hint: the front end adds its own); otherwise the reference card, said as such."""
    name = {**LABELS, **(labels or {})}
    if req.vram_gib is not None:
        size = int(req.vram_gib * GIB)
        return Card(size, size, f"{name['vram_gib']} {req.vram_gib:g}")
    result = probe() if probe is not None else None
    if result is None or not result.ok or not result.gpus:
        if required or req.gpu_index is not None:
            from peft_advisor.core.hardware import NO_GPU_MESSAGE

            raise UserError(getattr(result, "message", None) or NO_GPU_MESSAGE, ExitCode.NO_GPU)
        return Card(None, None, f"no card given: CUDA context of a {REFERENCE_CARD_GIB} GiB card", cuda=False)
    gpu = result.gpu(req.gpu_index or 0)
    if gpu is None:
        found = ", ".join(str(g.index) for g in result.gpus)
        raise UserError(f"{name['gpu_index']} {req.gpu_index}: no such GPU (found {found})", ExitCode.USAGE)
    free = gpu.free_bytes if gpu.free_bytes is not None else gpu.total_bytes
    if free is None:
        raise UserError(f"GPU {gpu.index} reports no memory size", ExitCode.NO_GPU)
    same = sum(1 for g in result.gpus if g.name == gpu.name)
    return Card(None if free is None else int(free), gpu.total_bytes, f"GPU {gpu.index} {gpu.name}: free memory",
                gpu.name, same)


def _calibrate(req: AdviceRequest, card: Card, spec_id: str, gpus: int, calibration: Callable | None):
    """The local calibration of this GPU and model (one GPU only: a per-GPU peak under DDP/FSDP
    is no calibration for one GPU's settings), or None."""
    gpu_name = req.gpu_name or card.name
    if calibration is None or not gpu_name or gpus != 1:
        return None
    return calibration(gpu_name, spec_id)


# ---------------------------------------------------------------- the calls


def advise(req: AdviceRequest, probe: Callable | None = None, calibration: Callable | None = None,
           labels: dict | None = None, profile: Callable | None = None, ram: Callable | None = None):
    """The advice (`recommend.Advice`) for a request. `probe() -> ProbeResult` is called only
    when no budget is typed; `calibration(gpu_name, model_id) -> (est -> est) | None` applies
    local measurements (calibration_store.calibrator); `profile(data, model) -> DataProfile`
    counts the data's tokens when the request names data (default `data_scan.profile`);
    `ram() -> free bytes | None` is the machine's free RAM, which offloaded activations must fit
    (None or not given: not checked)."""
    from peft_advisor.core.catalog import METHOD_IDS
    from peft_advisor.core.distributed import Parallel
    from peft_advisor.core.estimate import resolve_targets
    from peft_advisor.core.model_spec import load_model_spec
    from peft_advisor.core.recommend import Budget, available_techniques, recommend

    check(req, labels)
    spec = load_model_spec(req.model)
    resolve_targets(spec, req.targets)  # a typo is named before the GPUs are probed
    card = card_for(req, probe, labels)
    par = Parallel(req.gpus or card.same_gpus, req.strategy, req.zero_offload)
    adapter = int(req.adapter_mb * MB) if req.adapter_mb else None
    techniques = available_techniques(spec, card.cuda, req.techniques)
    offloads = "offload_activations" in techniques or par.offload != "none"
    budget = Budget(card.budget_bytes, adapter, card.source, card.total_bytes, ram_per_process(ram, par, offloads))
    prof = data_profile(req, profile)
    seq_len, evaluation = data_shape(prof, req, par)
    advice = recommend(spec, budget, seq_len=seq_len, batch_size=req.batch_size, priority=req.priority,
                       methods=req.methods or METHOD_IDS, rank=req.rank, targets=req.targets, parallel=par,
                       calibrate=_calibrate(req, card, spec.id, par.gpus, calibration), evaluation=evaluation,
                       techniques=techniques)
    return with_data_reasons(advice, prof, req)


def ram_per_process(ram: Callable | None, par, needed: bool) -> int | None:
    """The free CPU RAM each GPU process may pin (each pins its own), asked of `ram()` only when
    something is offloaded; None when not asked or not known."""
    free = ram() if ram is not None and needed else None
    return None if free is None else free // par.gpus


def estimate_one(req: AdviceRequest, settings, probe: Callable | None = None, calibration: Callable | None = None,
                 labels: dict | None = None, profile: Callable | None = None,
                 ram: Callable | None = None) -> EstimateResult:
    """One method with given settings (`estimate.Settings`) on the request's card: the CUDA
    context is sized for the typed budget, else the probed GPU, else the reference card (said).
    With data, its sequence length and evaluation pass replace the settings' (see `advise`);
    with offloading, its CPU RAM is checked against `ram()`, the machine's free RAM, as `advise` does."""
    from peft_advisor.core.distributed import Parallel, per_gpu_estimate
    from peft_advisor.core.model_spec import load_model_spec
    from peft_advisor.core.recommend import fit_of, settings_words, without_techniques

    check(req, labels)
    spec = load_model_spec(req.model)
    card = card_for(req, probe, labels, required=False)
    if not req.techniques:
        settings = without_techniques(settings)
    par = Parallel(req.gpus or 1, req.strategy, req.zero_offload)
    refuse_unrunnable(settings, par)
    if settings.grad_ckpt_layers >= spec.num_layers:  # as many as the model has or more: all of them,
        settings = replace(settings, grad_ckpt_layers=0)  # as the estimate and the trainer take it
    prof = data_profile(req, profile)
    if prof is not None:
        seq_len, evaluation = data_shape(prof, req, par)
        settings = replace(settings, seq_len=seq_len, **evaluation)
    est = per_gpu_estimate(spec, settings, par, card.total_bytes)
    calibrate = _calibrate(req, card, spec.id, par.gpus, calibration)
    if calibrate is not None:
        est = calibrate(est)
    fit = "" if card.budget_bytes is None else fit_of(est, card.budget_bytes)
    data_words = [prof.words(req.seq_len, req.packing), evaluation_words(est)] if prof is not None else []
    return EstimateResult(est, card, par, fit, card_note(card), settings_words(settings), data_words,
                          ram_per_process(ram, par, bool(est.cpu_bytes)))


TECHNIQUE_FLAGS = {"train.optimizer": "--optimizer", "train.fused_loss": "--fused-loss",
                   "train.grad_ckpt_layers": "--grad-ckpt-layers"}


def refuse_unrunnable(settings, par) -> None:
    """No figure for a run that `train` would refuse (the same rule, `core.techniques.recipe_refusals`):
    one line naming the option, as the recipe check names the key."""
    from peft_advisor.core.techniques import checkpointing_refusal, recipe_refusals

    ckpt = checkpointing_refusal(settings.grad_ckpt, settings.grad_ckpt_layers, par.strategy, par.gpus)
    refusals = recipe_refusals(settings.method, settings.targets, settings.optimizer, settings.fused_loss,
                               par.strategy, par.gpus, settings.method == "qlora") + ([ckpt] if ckpt else [])
    if refusals:
        key, why = refusals[0]  # the optimizer's reason starts with its value: --optimizer "adamw_8bit" cannot ...
        raise UserError(f"{TECHNIQUE_FLAGS.get(key, key)} {why}", ExitCode.USAGE)


# ---------------------------------------------------------------- the data


DATA_CHOICE = {"data.columns": "data_columns", "data.config": "data_config", "data.split": "data_split"}
"""Which rows of the data: recipe key -> `AdviceRequest` field."""


def data_choice(req: AdviceRequest) -> dict[str, str]:
    """The request's data.columns, data.config and data.split that are set, as recipe keys (what an
    exported recipe writes)."""
    return {key: getattr(req, name) for key, name in DATA_CHOICE.items() if getattr(req, name)}


def data_profile(req: AdviceRequest, profile: Callable | None):
    """The request's data in tokens (`core.data_profile.DataProfile`), or None without data."""
    if not req.data:
        return None
    if profile is None:
        from peft_advisor.data_scan import profile
    return profile(req.data, req.model, **{key.split(".")[1]: value for key, value in data_choice(req).items()})


def data_shape(prof, req: AdviceRequest, par) -> tuple[int, dict]:
    """(tokens per row of the longest training batch, the evaluation fields of `Settings`): eval
    rows are never packed; exact match generates on one GPU or under DDP, not under FSDP."""
    from peft_advisor.core.distributed import shards_forward

    if prof is None:
        return req.seq_len, {}
    generate = 0 if par.gpus > 1 and shards_forward(par.strategy) else prof.generate_len()
    evaluation = {"eval_seq_len": prof.seq_len_for(req.seq_len, packing=False), "generate_len": generate}
    return prof.seq_len_for(req.seq_len, req.packing), evaluation


def evaluation_words(est) -> str:
    """Whether the evaluation pass (its micro-batch, exact match's generation) sets the peak."""
    from peft_advisor.core.data_profile import EVAL_GENERATE_BATCH

    s = est.settings
    gen = f"; exact match generates {EVAL_GENERATE_BATCH} × {s.generate_len} tokens" if s.generate_len else ""
    what = f"evaluation (micro-batch {s.batch_size} × {s.eval_seq_len} tokens{gen})"
    if "evaluation" in est.breakdown:
        return f"peak: the {what}, {fmt_bytes(est.breakdown['evaluation'])}, outweighs the training step"
    return f"{what} counted: below the training step's peak"


def with_data_reasons(advice, prof, req: AdviceRequest):
    """The advice with what the data changed said first among each recommendation's reasons."""
    if prof is None:
        return advice
    from dataclasses import replace as copy

    head = prof.words(req.seq_len, req.packing)
    recs = tuple(copy(r, reasons=_after_fit(r.reasons, (head, evaluation_words(r.estimate))))
                 for r in advice.recommendations)
    return copy(advice, recommendations=recs, data=prof.to_dict(req.seq_len, req.packing))


def _after_fit(reasons: tuple, extra: tuple) -> tuple:
    """`extra` right after the 'fits' line (the first reason that starts with 'fits' or 'tight')."""
    at = next((i + 1 for i, r in enumerate(reasons) if r.startswith(("fits", "tight"))), 0)
    return reasons[:at] + extra + reasons[at:]


def card_note(card: Card) -> str:
    """Which card the CUDA context is for, in words."""
    if card.total_bytes is None:
        return card.source
    return f"for a {card.total_bytes / GIB:.4g} GiB card ({card.source})"


def needs(req: AdviceRequest, profile: Callable | None = None) -> dict:
    """Before a budget is known: what each method needs at least at the requested rank and
    targets (the memory ladder walked to its cheapest setting: the techniques, checkpointing,
    micro-batch 1, …), as the smallest card on which it fits with room
    (`recommend.card_needed_bytes`); the budget to come is an NVIDIA card, so the techniques count
    unless the request turns them off; method id -> (bytes, Estimate)."""
    from peft_advisor.core.catalog import METHOD_IDS
    from peft_advisor.core.distributed import Parallel, per_gpu_estimate
    from peft_advisor.core.estimate import Settings
    from peft_advisor.core.model_spec import load_model_spec
    from peft_advisor.core.catalog import multi_gpu_refusal
    from peft_advisor.core.recommend import available_techniques, card_needed_bytes, memory_ladder, runnable_techniques

    check(req)
    spec = load_model_spec(req.model)
    par = Parallel(req.gpus or 1, req.strategy, req.zero_offload)
    techniques = available_techniques(spec, cuda=True, enabled=req.techniques)
    seq_len, evaluation = data_shape(data_profile(req, profile), req, par)  # with data: as `advise`
    out = {}
    for method in req.methods or METHOD_IDS:
        if multi_gpu_refusal(method, par.gpus, par.strategy):
            continue
        s = Settings(method=method, rank=req.rank, targets=req.targets, batch_size=req.batch_size, seq_len=seq_len,
                     **evaluation)
        ladder = memory_ladder(s, par.gpus > 1, runnable_techniques(s, par, techniques))
        est = min((per_gpu_estimate(spec, c, par) for c, _ in ladder),
                  key=lambda e: e.total_bytes)
        out[method] = (card_needed_bytes(est), est)
    return out


# ---------------------------------------------------------------- recipes


DEMO_FAST = {"data.max_seq_len": 128, "data.eval_split": 32, "train.max_steps": 40, "train.warmup_ratio": 0.05,
             "train.eval_every": 20}
"""The shipped demo recipes' fast settings (recipes/demo/*.toml; a test keeps them equal): a
recipe made for the demo model trains in minutes on a CPU."""


def demo_fast(recipe, given=(), estimate: bool = True):
    """For the demo model, the shipped demo recipes' fast settings (DEMO_FAST), with the estimate
    following them unless `estimate` is off: a recipe made for it in the app, by `recommend
    --export` or by `export` trains in minutes on a CPU, as the shipped ones do. Keys in `given`
    (typed by the person) are kept."""
    if recipe.model.id != "demo":
        return recipe
    from peft_advisor.core import recipe as rc

    fast = rc.updated(recipe, {k: v for k, v in DEMO_FAST.items() if k not in given})
    return with_estimate(fast)[0] if estimate else fast


def with_estimate(recipe):
    """The recipe with its [estimate] recomputed for its settings and [distributed] table (per
    GPU); unchanged, with the reason, when the model's shapes are not known offline.
    Returns (recipe, note)."""
    from peft_advisor.core import recipe as rc
    from peft_advisor.core.distributed import Parallel, per_gpu_estimate
    from peft_advisor.core.model_spec import load_model_spec

    try:
        spec = load_model_spec(recipe.model.id)
        d = recipe.distributed
        par = Parallel(rc.world_size(d), d.strategy, d.zero_offload)
        est = per_gpu_estimate(spec, rc.settings_from_recipe(recipe), par)
    except UserError as err:
        return recipe, f"no estimate ({err})"
    return rc.updated(recipe, {"estimate.peak_bytes": int(est.peak_bytes), "estimate.adapter_bytes": int(est.adapter_bytes),
                               "estimate.trainable_params": int(est.trainable_params)}), ""


def recipe_fit(recipe) -> tuple[str | None, str]:
    """How the recipe's estimate fits the card it was advised for ([budget] vram_gib, taken as
    the card's size): ("ok" | "tight" | None, words); ("", "") when it names no budget or has no
    estimate. The launch guard asks first unless "ok"."""
    from peft_advisor.core.estimate import BAND, context_bytes

    budget_gib, peak = recipe.budget.vram_gib, recipe.estimate.peak_bytes
    if not budget_gib or not peak:
        return "", ""
    from peft_advisor.core.recommend import fit_for, tight_words
    from peft_advisor.core.units import fmt_bytes

    budget, context, high = int(budget_gib * GIB), context_bytes(int(budget_gib * GIB)), int(peak * BAND[1])
    fit = fit_for(peak, high, context, budget)
    if fit is None:
        return None, f"its estimate {fmt_bytes(peak + context)} is over the {fmt_bytes(budget)} budget"
    return fit, tight_words(high + context, budget) if fit == "tight" else ""
