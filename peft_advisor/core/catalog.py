"""The trade-off matrix: one `Method` per fine-tuning method, read strictly from data/methods.toml.

Judgments and citations live in the data file so they can be reviewed like prose; the schema
lives here so a typo in the data fails loudly (unknown key, wrong type, missing key) instead of
silently dropping a fact. Figures come from the huggingface/peft method-comparison study
(reference STUDY.md); `bench/study_figures.py` recomputes them from the raw result files.
"""

from __future__ import annotations

import functools
import types
import typing
from dataclasses import MISSING, asdict, dataclass, fields
from importlib import resources

from peft_advisor.core.errors import ExitCode, UserError, did_you_mean

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# The method ids, in the order every front end lists them. Must equal core.estimate.METHODS
# (a test checks it); kept here too so the catalog does not depend on the estimator.
METHOD_IDS = ("full", "lora", "rslora", "dora", "loraplus", "vera", "galore", "qlora",
              "oft", "lokr", "loha", "ia3", "miss", "c3a", "shira", "lorafa", "pissa", "olora")

FAMILIES = ("lora", "vera", "full", "oft", "lokr", "loha", "ia3", "miss", "c3a", "shira")
"""Adapter kinds: rank-r LoRA matrices (LoRA-FA, PiSSA and OLoRA too: same matrices, other
optimizer or start), VeRA's scaling vectors, none (every weight trains), and one per other peft
adapter type, whose parameter counts differ (core.adapters)."""
ALPHA_FAMILIES = ("lora", "lokr", "loha")
"""Adapters with a scale alpha / rank: `alpha_per_rank` is required for "lora", allowed for these."""

TIE_PP = 2.0
"""Accuracy gaps of at most this many points count as ties: the same experiment's GSM8K accuracy
varies by a median 2.0 pp across the study's three run generations (STUDY.md §3.5)."""


@dataclass(frozen=True)
class Method:
    """One row of the trade-off matrix. Optional fields (typed `… | None`) may be left out of the
    TOML, which has no null; leaving them out means "not measured"."""

    id: str
    """Method id, from the table name `[methods.<id>]` (not written inside the table)."""
    name: str
    """Display name, e.g. "LoRA+"."""
    summary: str
    """One sentence: what the method does."""
    quality: int
    """Ordinal 1–5 relative to LoRA = 3; see `quality_from_delta` for the rule on measured gaps."""
    quality_evidence: str
    """The measured numbers behind `quality`, with task and model, or why there are none."""
    speed: int
    """Ordinal 1–5 relative to LoRA = 3 (higher = faster); see `speed_from_time_ratio`."""
    cost_evidence: str
    """The memory and time numbers behind `memory_vs_lora`, `time_vs_lora` and `speed`."""
    adapter_size: str
    """What the saved artefact holds, short (the estimator computes the bytes)."""
    high_rank_stability: str
    """How quality behaves as the rank grows, short, with the evidence."""
    requires: tuple[str, ...]
    """What it needs beyond the base stack, e.g. ("cuda", "bitsandbytes")."""
    enable: str
    """How it is switched on in peft / transformers."""
    caveats: tuple[str, ...]
    """Known problems, each with its source in parentheses."""
    sources: tuple[str, ...]
    """Citations: result files `… @ 5d602fd`, papers as arXiv ids, issues and PRs."""
    family: str
    """lora | vera | full: the kind of adapter (rank-r LoRA matrices, VeRA vectors, or none: every
    weight trains). The estimator's terms and the trainer's builders branch on it."""
    trains_all_weights: bool
    """Every weight gets a gradient (full, GaLore): full-size checkpoints, no adapter."""
    default_lr: float
    """Starting learning rate (peft's method_comparison defaults, STUDY.md)."""
    needs_cuda: bool
    """Runs only on an NVIDIA GPU with CUDA, whatever its switches."""
    fsdp: bool
    """Runs under FSDP on several GPUs; when false, `fsdp_refusal` says why."""
    fsdp_version: int
    """0 = any FSDP version (FSDP2 where installed), 1 = FSDP1 only."""
    in_study: bool
    """True when the huggingface/peft method-comparison study measured it; False means every
    figure here is from the method's paper or third parties."""
    quality_delta_pp: float | None = None
    """Measured GSM8K accuracy gap in points vs `study_baseline` (rounded figures, as STUDY.md)."""
    memory_vs_lora: float | None = None
    """Peak reserved memory of `study_run` / `study_baseline`; None when not measured."""
    time_vs_lora: float | None = None
    """Train time of `study_run` / `study_baseline`; None when not measured."""
    study_run: str | None = None
    """MetaMathQA result file stem at 5d602fd the figures come from, e.g. "lora--llama-3.2-3B-rank32"."""
    study_baseline: str | None = None
    """The LoRA result file stem it is compared with (same rank where the study has one)."""
    fsdp_refusal: str | None = None
    """Why it cannot run under FSDP (needed when `fsdp` is false), e.g. "needs whole weight matrices"."""
    cuda_switches: tuple[str, ...] = ()
    """Method switches (recipe `method.<switch>` / Settings fields) that need CUDA when on."""
    single_gpu_switches: tuple[str, ...] = ()
    """Method switches that run on one GPU only (not under DDP or FSDP)."""
    evidence_rank: int | None = None
    """The value of its size knob (`size_knob`: a rank, VeRA's rank, OFT's block size) its quality
    figure was measured at; below it the claim is not carried over."""
    alpha_per_rank: float | None = None
    """The recipe's alpha = alpha_per_rank × rank (LoRA family); None for methods without alpha."""
    memory_measured: bool = True
    """Its peak memory has been measured on a GPU through `peft-advisor train`; false: only its
    saved activations were checked (on the CPU, bench/saved_audit.py), and the advice says so.
    Independent of the speed figure (`data/speed.json`), which needs a LoRA run at the same shape."""

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


class CatalogError(UserError):
    """methods.toml does not match the schema; the message names the table and the key."""

    def __init__(self, message: str):
        super().__init__(message, ExitCode.ERROR)


def quality_from_delta(delta_pp: float) -> int:
    """Map a measured accuracy gap vs LoRA to the 1–5 scale: ties within TIE_PP are 3, gaps up to
    5 pp are one step, larger gaps two steps."""
    if abs(delta_pp) <= TIE_PP:
        return 3
    step = 1 if abs(delta_pp) <= 5.0 else 2
    return 3 + step if delta_pp > 0 else 3 - step


def speed_from_time_ratio(ratio: float) -> int:
    """Map a train-time ratio vs LoRA to the 1–5 scale (3 = within 15 % of LoRA)."""
    for bound, score in ((0.67, 5), (0.87, 4), (1.15, 3), (1.5, 2)):
        if ratio < bound:
            return score
    return 1


# ---- strict loading ----------------------------------------------------------------------------

_SCHEMA = {f.name: f for f in fields(Method) if f.name != "id"}
_HINTS = typing.get_type_hints(Method)
_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _optional(hint) -> tuple[object, bool]:
    """(inner type, True) for `X | None`, else (hint, False)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return inner[0], True
    return hint, False


def _coerce(where: str, key: str, value, hint):
    """Check one value against its declared type; TOML lists become tuples, ints become floats."""
    hint, _ = _optional(hint)
    if typing.get_origin(hint) is tuple:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise CatalogError(f"{where} {key}: expected a list of strings, got {_show(value)}")
    ok = isinstance(value, hint) and not (hint in (int, float) and isinstance(value, bool))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise CatalogError(f"{where} {key}: expected {_TYPE_WORDS[hint]}, got {_show(value)}")
    return value


def _show(value) -> str:
    return f"{type(value).__name__} {value!r}"[:60]


def _parse_method(method_id: str, table, source: str) -> Method:
    where = f"{source}: [methods.{method_id}]"
    if not isinstance(table, dict):
        raise CatalogError(f"{where}: expected a table, got {_show(table)}")
    for key in table:
        if key not in _SCHEMA:
            raise CatalogError(f"{where} unknown key '{key}'{did_you_mean(key, _SCHEMA)}")
    values = {"id": method_id}
    for name in _SCHEMA:
        hint = _HINTS[name]
        if name not in table:
            if _SCHEMA[name].default is MISSING:
                raise CatalogError(f"{where} missing key '{name}'")
            continue
        values[name] = _coerce(where, name, table[name], hint)
    method = Method(**values)
    _check_values(where, method)
    return method


def _check_values(where: str, m: Method) -> None:
    """Rules across fields that types alone cannot state."""
    for key in ("quality", "speed"):
        if not 1 <= getattr(m, key) <= 5:
            raise CatalogError(f"{where} {key}: must be 1–5, got {getattr(m, key)}")
    if not m.sources:
        raise CatalogError(f"{where} sources: needs at least one citation")
    if m.family not in FAMILIES:
        raise CatalogError(f"{where} family: expected one of {', '.join(FAMILIES)}, got {m.family!r}")
    if m.trains_all_weights != (m.family == "full"):
        raise CatalogError(f"{where} trains_all_weights: must be true exactly for family \"full\"")
    if not m.default_lr > 0:
        raise CatalogError(f"{where} default_lr: must be > 0, got {m.default_lr}")
    if m.fsdp_version not in (0, 1, 2):
        raise CatalogError(f"{where} fsdp_version: must be 0, 1 or 2, got {m.fsdp_version}")
    if not m.fsdp and not m.fsdp_refusal:
        raise CatalogError(f"{where}: fsdp = false needs fsdp_refusal (why)")
    if (m.family == "lora" and m.alpha_per_rank is None) or (
            m.family not in ALPHA_FAMILIES and m.alpha_per_rank is not None):
        raise CatalogError(f"{where} alpha_per_rank: needed for family \"lora\", allowed for lokr and loha only")
    measured = (m.study_run, m.study_baseline, m.quality_delta_pp)
    if m.in_study and None in measured:
        raise CatalogError(f"{where}: in_study = true needs study_run, study_baseline and quality_delta_pp")
    if not m.in_study and any(v is not None for v in (*measured, m.memory_vs_lora, m.time_vs_lora)):
        raise CatalogError(f"{where}: in_study = false must not carry study figures")


def parse_catalog(text: str, source: str = "methods.toml") -> dict[str, Method]:
    """Parse and validate a whole catalog; every id in METHOD_IDS exactly once, in that order."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise CatalogError(f"{source}: not valid TOML: {err}") from None
    for key in doc:
        if key != "methods":
            raise CatalogError(f"{source}: unknown top-level key '{key}' (only [methods.<id>] tables)")
    tables = doc.get("methods", {})
    for method_id in tables:
        if method_id not in METHOD_IDS:
            hint = did_you_mean(method_id, METHOD_IDS)
            raise CatalogError(f"{source}: [methods.{method_id}] unknown method id{hint}")
    missing = [m for m in METHOD_IDS if m not in tables]
    if missing:
        raise CatalogError(f"{source}: missing [methods.{missing[0]}]")
    return {m: _parse_method(m, tables[m], source) for m in METHOD_IDS}


def check_speed(catalog: dict[str, Method], source: str = "methods.toml") -> None:
    """Each method's `speed` must be what its step time maps to: this trainer's measured median
    (speed.json) where there is one, else the study's training time (`time_vs_lora`), the figure
    the advice then quotes. The advice, the table and the matrix show one speed, not two."""
    from peft_advisor.core.speed import measured_step_time

    for m in catalog.values():
        ratio = measured_step_time(m.id)
        where = "the measured step time" if ratio is not None else "the study's training time"
        ratio = ratio if ratio is not None else m.time_vs_lora
        if ratio is not None and m.speed != speed_from_time_ratio(ratio):
            raise CatalogError(f"{source}: [methods.{m.id}] speed: {m.speed} disagrees with {where} "
                               f"{ratio:.2f}× LoRA's, which maps to {speed_from_time_ratio(ratio)}")


@functools.lru_cache(maxsize=1)
def _packaged() -> tuple[tuple[str, Method], ...]:
    text = resources.files("peft_advisor.data").joinpath("methods.toml").read_text(encoding="utf-8")
    catalog = parse_catalog(text)
    check_speed(catalog)
    return tuple(catalog.items())


def load_catalog() -> dict[str, Method]:
    """The shipped catalog, ordered as METHOD_IDS. Parsed once per process; each call returns a
    fresh dict so callers cannot change what others see."""
    return dict(_packaged())


# ---- per-method facts, read by the estimator, recommender, recipes, trainer and bench ---------


def method_info(method_id: str) -> Method:
    """One method's row of the shipped catalog (no copy: `Method` is frozen)."""
    for key, m in _packaged():
        if key == method_id:
            return m
    raise CatalogError(f"unknown method id {method_id!r}{did_you_mean(method_id, METHOD_IDS)}")


def ids_of_family(family: str) -> tuple[str, ...]:
    return tuple(key for key, m in _packaged() if m.family == family)


SIZE_KNOBS = {"vera": "vera_rank", "oft": "oft_block_size", "c3a": "c3a_block_size", "ia3": None, "full": None}
"""The Settings field (recipe key `method.<field>`) that sizes each family's adapter; the other
families read `rank`."""


def size_knob(method_id: str) -> str | None:
    """The one setting that sizes `method_id`'s adapter: "rank" for the LoRA-like families,
    "vera_rank", "galore_rank" (GaLore's projection), "oft_block_size", "c3a_block_size", or None
    (IA3's scaling vectors, full fine-tuning). A knob the method does not read is never tuned,
    shown or compared with the evidence's rank."""
    if method_id == "galore":
        return "galore_rank"
    return SIZE_KNOBS.get(method_info(method_id).family, "rank")


def trains_all_weights(method_id: str) -> bool:
    return method_info(method_id).trains_all_weights


def default_lr(method_id: str) -> float:
    return method_info(method_id).default_lr


def alpha_for(method_id: str, rank: int) -> int:
    """The one alpha rule: alpha = alpha_per_rank × rank (2 × rank for LoRA; rank for rsLoRA, as
    the study's r64 run, since rsLoRA scales by alpha/√rank). Methods without alpha: 2 × rank,
    which they ignore."""
    per_rank = method_info(method_id).alpha_per_rank or 2
    return max(1, round(per_rank * rank))


def alpha_rule(method_id: str) -> str:
    """The rule in words, for recipes and screens: "alpha = 2 × rank"."""
    per_rank = method_info(method_id).alpha_per_rank or 2
    return "alpha = rank" if per_rank == 1 else f"alpha = {per_rank:g} × rank"


def cuda_reason(method_id: str, switches: dict | None = None) -> str | None:
    """Why this method (with these switches on) needs CUDA, or None: "method qlora needs an
    NVIDIA GPU with CUDA". Front ends add their own ending ("; none found", a hint)."""
    m = method_info(method_id)
    if m.needs_cuda:
        return f"method {method_id} needs an NVIDIA GPU with CUDA ({', '.join(r for r in m.requires if r != 'cuda')})"
    on = [name for name in m.cuda_switches if (switches or {}).get(name)]
    if on:
        return f"method {method_id} with {on[0]} = true needs an NVIDIA GPU with CUDA"
    return None


def multi_gpu_refusal(method_id: str, gpus: int, strategy: str, switches: dict | None = None) -> str | None:
    """Why this method cannot run on `gpus` GPUs with `strategy`, or None (one GPU: always None)."""
    if gpus <= 1:
        return None
    m = method_info(method_id)
    on = [name for name in m.single_gpu_switches if (switches or {}).get(name)]
    if on:
        return f"{method_id} with {on[0]} runs on one GPU only (transformers supports it with neither DDP nor FSDP)"
    if strategy == "fsdp" and not m.fsdp:
        return f"{method_id} is not supported with FSDP (it {m.fsdp_refusal}); use DDP"
    return zero_refusal(method_id, strategy)


# Sharded alike: what cannot run under FSDP (whole matrices, its own optimizer) cannot under ZeRO either.
ZERO_ONLY_REFUSALS = {("qlora", "zero3"): "needs 4-bit weights stored for partitioning, not run by peft-advisor "
                                          "yet; use zero2 or fsdp"}


def zero_refusal(method_id: str, strategy: str) -> str | None:
    """Why this method cannot run under DeepSpeed ZeRO (`strategy` zero2/zero3), or None."""
    if strategy not in ("zero2", "zero3"):
        return None
    m = method_info(method_id)
    if not m.fsdp:
        return f"{method_id} is not supported with DeepSpeed {strategy} (it {m.fsdp_refusal}; ZeRO shards as FSDP does); use ddp"
    why = ZERO_ONLY_REFUSALS.get((method_id, strategy))
    return f"{method_id} is not supported with DeepSpeed {strategy}: it {why}" if why else None
