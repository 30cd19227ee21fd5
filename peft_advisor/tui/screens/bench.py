"""A bench folder (`peft-advisor bench`'s output): its table, as bench.md shows it, and the train
loss curves of all candidates in one plot.

The table's cells come from `core.bench.cells`, the same function bench.md is rendered with, so
the screen and the file cannot disagree. bench.json is small (a few KB), so it is read on mount.
"""

from __future__ import annotations

import re
from pathlib import Path

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual_plotext import PlotextPlot

from peft_advisor.core import bench
from peft_advisor.core.events import finite_points
from peft_advisor.tui.run_index import load_bench
from peft_advisor.tui.widgets.nav_bar import NavBar

STATUS_STYLE = {"ok": "green", "needs-cuda": "yellow", "not-run": "yellow", "cancelled": "yellow"}
NUMERIC_FROM = 2
"""Columns from this one on are numbers, right-aligned as in bench.md."""
COLORS = [(0, 130, 200), (60, 180, 75), (230, 25, 75), (245, 130, 48), (145, 30, 180), (240, 50, 230),
          (0, 128, 128), (170, 110, 40), (128, 128, 128), (128, 0, 0)]
"""Series colours, readable on the dark and the light theme; the legend line uses the same."""
SCREEN_NOTES_SKIP = "Step time relative to LoRA"
"""bench.md's speed note repeats the tokens/s column; at 80x24 the plot needs the line more."""


def draw_curves(plot: PlotextPlot, title: str, rows: list[bench.Row], legend: bool = True) -> list[str]:
    """One train-loss series per row that has points; returns the names plotted, in colour order.

    Plotext draws its legend inside the plot only when the plot is taller than the list of
    names, so the bench screen passes legend=False and shows `legend_text` on a line of its own.
    """
    plt = plot.plt
    plt.clear_figure()
    plt.title(title)
    plt.xlabel("step")
    plotted = []
    for row in rows:
        points = finite_points(row.losses)
        if points:
            xs, ys = zip(*points[-2000:])
            color = COLORS[len(plotted) % len(COLORS)]
            plt.plot(list(xs), list(ys), label=row.name if legend else None, marker="hd", color=color)
            plotted.append(row.name)
    plot.refresh()
    return plotted


def legend_text(names: list[str]) -> Text:
    """`■ lora  ■ dora …`, each square in its curve's colour."""
    text = Text()
    for i, name in enumerate(names):
        r, g, b = COLORS[i % len(COLORS)]
        text.append("■ ", style=f"rgb({r},{g},{b})")
        text.append(name + "  ")
    return text


def note_markup(result: bench.BenchResult) -> str:
    """bench.md's notes (reasons a method could not run, the best eval loss, relative speed)."""
    found = [n.removeprefix("- ") for n in bench.notes(result) if SCREEN_NOTES_SKIP not in n]
    lines = [re.sub(r"\*\*(.+?)\*\*", r"[b]\1[/b]", escape(n)) for n in found]
    if result.interrupted:
        lines.insert(0, "[yellow]Interrupted: the rows after the stopped candidate did not run.[/]")
    return "\n".join(lines)


class BenchScreen(Screen):
    """The side-by-side table of one bench and its candidates' loss curves."""

    CSS_PATH = "bench.tcss"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("r", "reload", "Reload"),
    ]

    def __init__(self, bench_dir: str | Path) -> None:
        super().__init__()
        self.bench_dir = Path(bench_dir)
        self.result: bench.BenchResult | None = None
        self.plotted: list[str] = []
        """Candidate names whose curves the plot shows now."""

    def compose(self) -> ComposeResult:
        yield NavBar("runs")
        yield Static("", id="bench-title")
        table = DataTable(id="bench-table", cursor_type="row", zebra_stripes=True)
        table.fixed_columns = 1  # the method stays in view when the table scrolls sideways
        table.add_columns(*bench.COLUMNS)
        yield table
        yield Static("", id="bench-notes")
        yield Static("", id="bench-legend")
        yield PlotextPlot(id="bench-plot")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.action_reload()

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    def action_reload(self) -> None:
        title = self.query_one("#bench-title", Static)
        try:
            self.result = load_bench(self.bench_dir)
        except (OSError, ValueError, KeyError, TypeError) as err:
            title.update(f"[red]Cannot read {escape(str(self.bench_dir / 'bench.json'))}: {escape(str(err))}[/]")
            return
        r = self.result
        where = r.gpu or "CPU"
        model = "" if "/" in r.model else f" · model {escape(r.model)}"  # a temporary folder says nothing
        title.update(f"Bench [b]{escape(self.bench_dir.name)}[/b] · {escape(r.budget.describe())} on {escape(where)}{model}")
        self._fill(r.rows)
        text = note_markup(r)
        notes = self.query_one("#bench-notes", Static)
        notes.update(text)
        notes.display = bool(text)
        self.plotted = draw_curves(self.query_one(PlotextPlot), "train loss, all candidates", r.rows, legend=False)
        self.query_one("#bench-legend", Static).update(legend_text(self.plotted))

    def _fill(self, rows: list[bench.Row]) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for row in rows:
            values = bench.cells(row)
            styled = [Text(v, justify="right") if i >= NUMERIC_FROM else Text(v) for i, v in enumerate(values)]
            styled[1].stylize(STATUS_STYLE.get(row.status, "red"))
            table.add_row(*styled, key=row.name)
