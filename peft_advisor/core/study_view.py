"""Text tables of the whole study (`peft-advisor matrix --study` and `--front`).

Pure string building, like core/matrix.py: the figures come from data/study.json (core.study),
the front and the tie bands from core.pareto. Units are spelled out because the study's blog mixes
them (STUDY.md §2.1): GB = 10^9 bytes, MB = 10^6 bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from peft_advisor.core.catalog import TIE_PP
from peft_advisor.core.pareto import SCORE, FILE, front, label, tie_bands
from peft_advisor.core.study import StudyRun

HEADER = ("Run", "Score", "Band", "Peak GB", "p99 GB", "Train s", "File MB", "Params M", "Runs")


def _runs_cell(r: StudyRun) -> str:
    """'3 ±0.9': how often the experiment ran and half its score range (pp); '1' when run once."""
    if r.spread is None:
        return "1"
    return f"{len(r.generations)} ±{r.spread / 2:.1f}"


def _cells(r: StudyRun, band: str, mark: str) -> list[str]:
    score = f"{r.score_display:.1f} %" if r.task == "MetaMathQA" else f"{r.score_display:.3f}"
    return [
        _short(mark + label(r)), score, band, f"{r.peak_bytes / 1e9:.2f}", f"{r.p99_bytes / 1e9:.2f}", f"{r.train_s:.0f}",
        f"{r.file_bytes / 1e6:.2f}", f"{r.trainable_params / 1e6:.2f}", _runs_cell(r),
    ]  # fmt: skip


def _short(text: str, width: int = 32) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _layout(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {1, 3, 4, 5, 6, 7}
    out = []
    for n, row in enumerate(rows):
        cells = [c.rjust(w) if i in right and n else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("─" * w for w in widths))
    return out


def legend(task: str) -> list[str]:
    score = "GSM8K test accuracy after MetaMathQA, Llama-3.2-3B" if task == "MetaMathQA" else \
        "DINOv2 similarity, FLUX.2-klein-4B"
    if task == "MetaMathQA":
        band = f"within {TIE_PP:g} pp of the band's best (the study's rerun noise): ties."
        peak = "Peak GB: peak reserved memory INCLUDING evaluation generation at batch 50 (10^9 bytes);"
    else:
        band = f"within {TIE_PP / 100:g} of the band's best (image-gen has no reruns; the text task's band)."
        peak = "Peak GB: peak reserved memory (the study measures image-gen training only; 10^9 bytes);"
    return [
        f"Score: {score}",
        "(huggingface/peft method_comparison @ 5d602fd, one NVIDIA L40S, one seed per run).",
        f"Band: runs sharing a letter are {band}",
        peak,
        "p99 GB: 99th percentile over training steps only. Params M: trainable, millions.",
        "Runs: generations of the same experiment (2025, blog, HEAD), ± half their score range (pp).",
        "Result file of each row: `peft-advisor matrix --study --json` (source).",
    ]


def render_study(runs: Sequence[StudyRun]) -> str:
    """Every run of one task, best score first."""
    bands = tie_bands(runs)
    ordered = sorted(runs, key=lambda r: -r.score)
    rows = [list(HEADER), *(_cells(r, bands[r.experiment], "") for r in ordered)]
    return "\n".join([*_layout(rows), "", *legend(ordered[0].task if ordered else "MetaMathQA")]) + "\n"


def render_front(runs: Sequence[StudyRun]) -> str:
    """The runs no other beats on score, memory and file size at once; ◆ marks the runs also on
    the two-way score × file-size front."""
    bands = tie_bands(runs)
    file_front = {r.experiment for r in front(runs, (SCORE, FILE))}
    kept = front(runs)
    rows = [list(HEADER)]
    rows += [_cells(r, bands[r.experiment], "◆ " if r.experiment in file_front else "  ") for r in kept]
    head = [f"{len(kept)} of {len(runs)} runs are on the front: no other run has a higher score, less peak memory",
            "and a smaller file at once."]
    return "\n".join([*head, "", *_layout(rows), "", "◆ also on the score × file-size front.",
                      *legend(kept[0].task if kept else "MetaMathQA")]) + "\n"
