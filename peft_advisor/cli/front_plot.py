"""Accuracy against peak memory, drawn in the terminal with plotext (`peft-advisor matrix --front`).

Kept apart from the table code so `matrix` without `--front` never imports plotext; plotext is
pure Python (no torch, no textual), so the CLI still starts light.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from peft_advisor.core.pareto import ALL_AXES, FILE, MEMORY, SCORE, front
from peft_advisor.core.study import StudyRun


def _xy(runs: Sequence[StudyRun]) -> tuple[list[float], list[float]]:
    scale = 100 if runs and runs[0].task == "MetaMathQA" else 1
    return [r.peak_bytes / 1e9 for r in runs], [r.score * scale for r in runs]


def draw(runs: Sequence[StudyRun], width: int = 96, height: int = 26, color: bool = False) -> str:
    """The plot as text: every run (·), the score × memory front as a line, the three-way front
    (●) and the runs on the score × file-size front (◆, drawn last so it shows). The key is a
    line below the plot: plotext's legend sits top left, exactly where the best runs are."""
    import plotext as plt

    plt.clear_figure()
    plt.plotsize(width, height)
    if not color:
        plt.theme("clear")
    task = runs[0].task if runs else "MetaMathQA"
    plt.scatter(*_xy(runs), marker="·")
    line = sorted(front(runs, (SCORE, MEMORY)), key=lambda r: r.peak_bytes)
    plt.plot(*_xy(line), marker="braille")
    plt.scatter(*_xy(front(runs, ALL_AXES)), marker="●")
    plt.scatter(*_xy(front(runs, (SCORE, FILE))), marker="◆")
    plt.xlabel("peak GB (incl. eval at batch 50)" if task == "MetaMathQA" else "peak GB (training)")
    plt.ylabel("GSM8K accuracy %" if task == "MetaMathQA" else "DINOv2 similarity")
    plt.title(f"{task}: score against peak memory ({len(runs)} runs)")
    text = plt.build()
    plt.clear_figure()
    if not color:
        text = _ANSI.sub("", text)
    key = "· run  ⡇ score × memory front  ● front: score, memory, file size  ◆ score × file-size front"
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n" + key + "\n"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
"""plotext ends each line with a colour reset even in its colourless theme; a pipe gets plain text."""
