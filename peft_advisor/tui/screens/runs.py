"""The runs: every run folder under the output root side by side; open one, or compare several.
Bench folders (holding `peft-advisor bench`'s bench.json) are listed too; Enter opens their table.

The folders are read in a thread worker (a long run's events file can be megabytes), and again
whenever the screen is shown, so a run launched meanwhile appears.
"""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import WorkerState
from textual_plotext import PlotextPlot

from peft_advisor.core.events import finite_points
from peft_advisor.core.units import fmt_bytes, fmt_file_bytes
from peft_advisor.tui.messages import MonitorRequested
from peft_advisor.tui.run_index import BenchInfo, RunInfo, scan_benches, scan_runs
from peft_advisor.tui.widgets.nav_bar import NavBar

COLUMNS = ("", "Run", "Method", "Status", "Step", "Loss", "Eval", "Peak mem", "Adapter")
STATUS_STYLE = {"ok": "green", "running": "cyan", "cancelled": "yellow"}


class RunsScreen(Screen):
    """A table of runs and a plot of the loss curves of the marked (or highlighted) runs."""

    CSS_PATH = "runs.tcss"
    BINDINGS = [
        Binding("enter", "open", "Open", show=False),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare marked"),
        Binding("r", "rescan", "Rescan"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.runs: dict[str, RunInfo] = {}
        self.benches: dict[str, BenchInfo] = {}
        self.marked: set[str] = set()
        self.plotted: list[str] = []
        """Run names whose curves the plot shows now."""

    def compose(self) -> ComposeResult:
        yield NavBar("runs")
        yield Static("", id="runs-root")
        table = DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        table.add_columns(*COLUMNS)
        yield table
        yield PlotextPlot(id="compare-plot")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()

    def on_screen_resume(self) -> None:
        self.action_rescan()

    def action_rescan(self) -> None:
        root = self.app.services.output_root
        self.query_one("#runs-root", Static).update(
            Content.from_markup("Runs under [b]$root[/b] · Enter opens · Space marks · c compares", root=str(root)))
        self._scan(Path(root))

    @work(thread=True, exclusive=True, group="scan", exit_on_error=False, description="read run folders")
    def _scan(self, root: Path) -> tuple[list[RunInfo], list[BenchInfo]]:
        return scan_runs(root), scan_benches(root)

    def on_worker_state_changed(self, event) -> None:
        worker = event.worker
        if worker.group != "scan":
            return
        if worker.state == WorkerState.SUCCESS:
            self._show(*worker.result)
        elif worker.state == WorkerState.ERROR:
            self.notify(f"Could not read the runs: {worker.error}", severity="error")

    def _show(self, runs: list[RunInfo], benches: list[BenchInfo] = ()) -> None:
        table = self.query_one(DataTable)
        current = self._current_key()
        self.runs = {str(r.path): r for r in runs}
        self.benches = {str(b.path): b for b in benches}
        self.marked &= set(self.runs)
        table.clear()
        for info in benches:
            table.add_row(*self._bench_cells(info), key=str(info.path))
        for run in runs:
            table.add_row(*self._cells(run), key=str(run.path))
        if not runs and not benches:
            self.query_one("#runs-root", Static).update(Content.from_markup(
                "No runs under [b]$root[/b] yet: launch one from the Recipe screen (F3).",
                root=str(self.app.services.output_root)))
        if current in self.runs or current in self.benches:
            table.move_cursor(row=table.get_row_index(current))
        self._draw()

    def _cells(self, run: RunInfo) -> tuple:
        s = run.summary
        status = run.status
        step = f"{s.step}/{s.total_steps}" if s.total_steps else str(s.step)
        ev = "—" if s.best_eval_loss is None and not s.eval_losses else f"{(s.best_eval_loss or s.last_eval_loss):.3f}"
        if run.eval_accuracy is not None:
            ev += f" {run.eval_accuracy:.0%}"
        loss = s.final_loss if s.final_loss is not None else s.last_loss
        return (
            "●" if str(run.path) in self.marked else " ",
            run.path.name,
            run.method or "?",
            f"[{STATUS_STYLE.get(status, 'red')}]{status}[/]",
            step,
            "—" if loss is None else f"{loss:.3f}",
            ev,
            fmt_bytes(s.mem_peak_bytes),
            fmt_file_bytes(run.adapter_bytes),
        )

    @staticmethod
    def _bench_cells(info: BenchInfo) -> tuple:
        """A bench as one row: how many methods ran, its budget and its lowest eval loss."""
        r = info.result
        if r is None:
            return (" ", info.path.name, "bench", "[red]unreadable[/]", "—", "—", "—", "—", "—")
        ran = [row for row in r.rows if row.ran]
        evals = [row.eval_loss for row in ran if row.eval_loss is not None]
        return (
            " ",
            info.path.name,
            f"bench ×{len(r.rows)}",
            f"[magenta]bench {len(ran)}/{len(r.rows)} ok[/]",
            str(r.budget.steps) if r.budget.steps else r.budget.describe(),
            "—",
            f"{min(evals):.3f}" if evals else "—",
            fmt_bytes(max((row.peak_measured_bytes or 0 for row in r.rows), default=0) or None),
            "—",
        )

    def _current_key(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def on_data_table_row_highlighted(self, _event) -> None:
        if not self.marked:
            self._draw()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self._open(event.row_key.value)

    def action_open(self) -> None:
        self._open(self._current_key())

    def _open(self, key: str | None) -> None:
        if key in self.benches:
            from peft_advisor.tui.screens.bench import BenchScreen

            self.app.push_screen(BenchScreen(Path(key)))
        elif key in self.runs:
            self.post_message(MonitorRequested(Path(key)))

    def action_mark(self) -> None:
        key = self._current_key()
        if key not in self.runs:
            return  # a bench is compared on its own screen (Enter)
        self.marked ^= {key}
        table = self.query_one(DataTable)
        table.update_cell(key, table.ordered_columns[0].key, "●" if key in self.marked else " ")
        self._draw()

    def action_compare(self) -> None:
        if len(self.marked) < 2:
            self.notify("Mark two or more runs with Space to compare their loss curves.", severity="warning")
        self._draw()

    def _draw(self) -> None:
        """Loss curves of the marked runs, or of the highlighted run when none is marked."""
        plot = self.query_one(PlotextPlot)
        current = self._current_key()
        if not self.marked and current in self.benches and self.benches[current].result is not None:
            from peft_advisor.tui.screens.bench import draw_curves

            self.plotted = draw_curves(plot, f"train loss: bench {Path(current).name}", self.benches[current].result.rows)
            return
        plt = plot.plt
        plt.clear_figure()
        keys = [k for k in self.runs if k in self.marked] or [k for k in [self._current_key()] if k in self.runs]
        plt.title("loss: " + ("compare " if len(keys) > 1 else "") + ", ".join(Path(k).name for k in keys))
        plt.xlabel("step")
        self.plotted = [Path(k).name for k in keys]
        for key in keys:
            losses = finite_points(self.runs[key].summary.losses)
            if losses:
                xs, ys = zip(*losses[-2000:])
                plt.plot(list(xs), list(ys), label=Path(key).name, marker="hd")
        plot.refresh()
