"""The study's Pareto front: the runs no other run beats on accuracy, memory and file size at once.

Pure arithmetic over `core.study` rows, shared by `peft-advisor matrix --front` and any screen.
The front is taken on the figures as measured (one seed each); because reruns of the same
experiment differ by about 2 pp (STUDY.md §3.5), the text marks which front runs are within that
band of each other ("ties") instead of pretending the order among them is known.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from peft_advisor.core.study import StudyRun

Axis = Callable[[StudyRun], float]
# Each axis as "larger is better": score up, memory and file size down.
SCORE: Axis = lambda r: r.score  # noqa: E731
MEMORY: Axis = lambda r: -r.peak_bytes  # noqa: E731
FILE: Axis = lambda r: -r.file_bytes  # noqa: E731
ALL_AXES = (SCORE, MEMORY, FILE)


def dominates(a: StudyRun, b: StudyRun, axes: Sequence[Axis] = ALL_AXES) -> bool:
    """a is at least as good as b on every axis and better on one."""
    pairs = [(axis(a), axis(b)) for axis in axes]
    return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)


def front(runs: Sequence[StudyRun], axes: Sequence[Axis] = ALL_AXES) -> list[StudyRun]:
    """Runs no other run dominates, best score first."""
    kept = [r for r in runs if not any(dominates(o, r, axes) for o in runs if o is not r)]
    return sorted(kept, key=lambda r: -r.score)


def ties(run: StudyRun, others: Sequence[StudyRun]) -> list[StudyRun]:
    """The other runs whose score is within the noise band of this one's."""
    return [o for o in others if o is not run and abs(o.score - run.score) <= run.tie_band]


def label(run: StudyRun) -> str:
    """A short name for a plot or a table: 'miss (default)', 'lora (rank64-rslora)'."""
    name = run.experiment.split("--", 1)[1]
    for prefix in ("llama-3.2-3B-", "flux2-klein-"):
        name = name.removeprefix(prefix)
    return f"{run.method} ({name})"


def tie_bands(runs: Sequence[StudyRun]) -> dict[str, str]:
    """Experiment → band letter, best score first: a band opens at its best run and holds every
    run within the noise band of it, so runs sharing a letter are ties on score."""
    bands: dict[str, str] = {}
    top, letter = None, 0
    for r in sorted(runs, key=lambda r: -r.score):
        if top is not None and top - r.score > r.tie_band:
            letter += 1
            top = None
        top = r.score if top is None else top
        bands[r.experiment] = _letters(letter)
    return bands


def _letters(n: int) -> str:
    """0 → A, 25 → Z, 26 → AA."""
    return chr(65 + n) if n < 26 else _letters(n // 26 - 1) + chr(65 + n % 26)
