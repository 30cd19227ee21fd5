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
from dataclasses import asdict, dataclass, fields
from importlib import resources

from peft_advisor.core.errors import ExitCode, UserError, did_you_mean

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# The method ids, in the order every front end lists them. Must equal core.estimate.METHODS
# (a test checks it); kept here too so the catalog does not depend on the estimator.
METHOD_IDS = ("full", "lora", "rslora", "dora", "loraplus", "vera", "galore", "qlora")

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
            if not _optional(hint)[1]:
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


@functools.lru_cache(maxsize=1)
def _packaged() -> tuple[tuple[str, Method], ...]:
    text = resources.files("peft_advisor.data").joinpath("methods.toml").read_text(encoding="utf-8")
    return tuple(parse_catalog(text).items())


def load_catalog() -> dict[str, Method]:
    """The shipped catalog, ordered as METHOD_IDS. Parsed once per process; each call returns a
    fresh dict so callers cannot change what others see."""
    return dict(_packaged())
