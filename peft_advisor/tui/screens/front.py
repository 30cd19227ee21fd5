"""The study's Pareto front in the app (issue 17): what `peft-advisor matrix --front` prints, the
table of runs no other beats on score, memory and file size at once, and the same plotext drawing
of score against peak memory (cli/front_plot.draw), redrawn to the plot's size.

Opened from the advisor (Ctrl+B); `t` switches between the study's two tasks, Escape closes.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from peft_advisor.core.study import TASKS


class FrontScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    FrontScreen { align: center middle; background: $background 60%; }
    FrontScreen > Vertical { width: 100%; height: 100%; border: thick $primary; background: $surface; padding: 0 1; }
    FrontScreen #front-title { height: 1; color: $text-muted; }
    FrontScreen #front-plot { height: 2fr; min-height: 12; }
    FrontScreen VerticalScroll { height: 1fr; border-top: solid $secondary; }
    """
    BINDINGS = [Binding("escape", "close", "Close"), Binding("t", "next_task", "Other task")]

    def __init__(self, task: str = TASKS[0]):
        super().__init__()
        self.study_task = task
        self.plotted = ""
        """The text last drawn into the plot (tests read it)."""

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("", id="front-title", markup=False)
            yield Static("", id="front-plot", markup=False)
            with VerticalScroll():
                yield Static("", id="front-table", markup=False)

    def on_mount(self) -> None:
        self.show_task()
        self.call_after_refresh(self.draw_plot)

    def runs(self):
        from peft_advisor.core.study import runs_of

        return runs_of(self.study_task)

    def show_task(self) -> None:
        """Title and table for `self.study_task`; the plot follows at the size it has been given."""
        from peft_advisor.core.study_view import render_front

        others = [t for t in TASKS if t != self.study_task]
        self.query_one("#front-title", Static).update(
            f"Study front: {self.study_task}   (t: {', '.join(others)}   Escape: close)")
        self.query_one("#front-table", Static).update(render_front(self.runs()))
        self.draw_plot()

    def draw_plot(self) -> None:
        """cli/front_plot.draw at the plot widget's size, less the key line it adds below."""
        from peft_advisor.cli.front_plot import draw

        plot = self.query_one("#front-plot", Static)
        width, height = plot.size.width, plot.size.height
        if width < 20 or height < 6:  # not laid out yet: on_resize draws it
            return
        self.plotted = draw(self.runs(), width=width, height=height - 1)
        plot.update(self.plotted.rstrip("\n"))

    def on_resize(self) -> None:
        self.call_after_refresh(self.draw_plot)

    def action_next_task(self) -> None:
        self.study_task = TASKS[(TASKS.index(self.study_task) + 1) % len(TASKS)]
        self.show_task()

    def action_close(self) -> None:
        self.dismiss(None)
