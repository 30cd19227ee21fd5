"""The whole study as data: every experiment huggingface/peft's method comparison has a result for.

`data/study.json` is derived by `bench/study_table.py` from the raw result files (a test checks
it still is); this module is its schema, so a hand edit that drops or mistypes a field fails
loudly. The eight-method matrix (`catalog.py`) keeps the judgments; this table keeps the
figures, so a reader can see how each offered method sits among the thirty-odd others.

What the figures mean (STUDY.md §2.1): `peak_bytes` is `accelerator_memory_max`, the caching
allocator's peak reserved memory **including evaluation generation at batch 50**, so it is above
what training alone needs; `p99_bytes` is the 99th percentile over training steps only. Scores are
GSM8K test accuracy (0..1) after MetaMathQA on Llama-3.2-3B, or DINOv2 similarity for image-gen
(FLUX.2-klein). All runs: one NVIDIA L40S, one seed per configuration.
"""

from __future__ import annotations

import functools
import json
import typing
from dataclasses import dataclass, fields
from importlib import resources

from peft_advisor.core.catalog import TIE_PP
from peft_advisor.core.errors import ExitCode, UserError

SCHEMA = 1
TASKS = ("MetaMathQA", "image-gen")


class StudyError(UserError):
    """study.json does not match the schema; the message names the run and the key."""

    def __init__(self, message: str):
        super().__init__(message, ExitCode.ERROR)


@dataclass(frozen=True)
class Generation:
    """One run of the same experiment in one snapshot of the results (STUDY.md §2.3)."""

    label: str
    """'2025', 'blog' or 'HEAD'."""
    commit: str
    score: float


@dataclass(frozen=True)
class StudyRun:
    """One experiment's HEAD result file, reduced to what a person compares."""

    experiment: str
    """Result file stem, `<method>--<name>`."""
    method: str
    """The study's method folder, e.g. "miss" (its own names, not peft-advisor's ids)."""
    task: str
    score: float
    """GSM8K accuracy 0..1 (MetaMathQA) or DINOv2 similarity (image-gen)."""
    peak_bytes: int
    """Peak reserved memory, including evaluation generation at batch 50."""
    p99_bytes: int
    """99th percentile of reserved memory over training steps only."""
    train_s: float
    file_bytes: int
    """Saved adapter file (for full fine-tuning the study estimates params × 2 bytes)."""
    trainable_params: int
    source: str
    """Citation of the result file: `huggingface/peft method_comparison/… @ 5d602fd`."""
    generations: tuple[Generation, ...]
    spread: float | None
    """max − min score over the generations (pp for MetaMathQA); None when run once."""

    @property
    def score_display(self) -> float:
        """Accuracy in % to one decimal; DINO similarity to three decimals."""
        return round(self.score * 100, 1) if self.task == "MetaMathQA" else round(self.score, 3)

    @property
    def tie_band(self) -> float:
        """Score gaps within this are ties (2 pp of accuracy, the study's rerun spread; image-gen
        has one run per experiment, so no measured spread: the same 0.02 on its 0..1 scale)."""
        return TIE_PP / 100


_HINTS = typing.get_type_hints(StudyRun)
_KEYS = [f.name for f in fields(StudyRun)]


def _typed(where: str, key: str, value, hint):
    if key == "generations":
        if not isinstance(value, list) or not value:
            raise StudyError(f"{where} generations: expected a non-empty list")
        try:
            return tuple(Generation(str(g["label"]), str(g["commit"]), float(g["score"])) for g in value)
        except (TypeError, KeyError, ValueError):
            raise StudyError(f"{where} generations: each needs label, commit and score") from None
    base = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if value is None and type(None) in typing.get_args(hint):
        return None
    kind = base[0]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise StudyError(f"{where} {key}: expected {kind.__name__}, got {value!r}"[:120])
    return value


def parse_run(doc: dict, n: int) -> StudyRun:
    where = f"study.json runs[{n}]"
    if not isinstance(doc, dict):
        raise StudyError(f"{where}: expected an object")
    unknown = set(doc) - set(_KEYS)
    missing = [k for k in _KEYS if k not in doc]
    if unknown or missing:
        raise StudyError(f"{where}: {'unknown key ' + min(unknown) if unknown else 'missing key ' + missing[0]}")
    run = StudyRun(**{k: _typed(where, k, doc[k], _HINTS[k]) for k in _KEYS})
    if run.task not in TASKS:
        raise StudyError(f"{where} task: expected one of {', '.join(TASKS)}, got {run.task!r}")
    return run


def parse_study(text: str) -> tuple[StudyRun, ...]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise StudyError(f"study.json: not valid JSON: {err}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise StudyError(f"study.json: expected schema {SCHEMA}")
    return tuple(parse_run(r, n) for n, r in enumerate(doc.get("runs") or []))


@functools.lru_cache(maxsize=1)
def load_study() -> tuple[StudyRun, ...]:
    """Every run of the shipped table (both tasks), parsed once per process."""
    return parse_study(resources.files("peft_advisor.data").joinpath("study.json").read_text(encoding="utf-8"))


def runs_of(task: str = "MetaMathQA") -> tuple[StudyRun, ...]:
    return tuple(r for r in load_study() if r.task == task)


def find_run(experiment: str) -> StudyRun | None:
    return next((r for r in load_study() if r.experiment == experiment), None)
