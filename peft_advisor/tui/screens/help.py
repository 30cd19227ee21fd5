"""The help overlay: what each screen is for and every key, read from the live bindings.

Built from the bindings themselves rather than written by hand, so it cannot drift from them.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

ABOUT = {
    "advisor": "Your GPU, your budgets, and every method side by side. Pick a row to see its "
    "memory breakdown and evidence; Enter turns it into a recipe.",
    "recipe": "Edit the chosen method's recipe, export or import TOML, and launch the fine-tune.",
    "monitor": "A run live: loss, learning rate, speed, memory against the estimate, the log. "
    "The run keeps going if you quit; open it again from Runs to re-attach.",
    "runs": "Every run folder under the output root. Open one in the monitor, or mark several "
    "with Space and compare their loss curves.",
}


class HelpScreen(ModalScreen[None]):
    """Keys of the app and of the screen underneath."""

    CSS_PATH = "help.tcss"
    BINDINGS = [Binding("escape,f1,q", "app.pop_screen", "Close")]

    def __init__(self, mode: str, screen_bindings=()):
        super().__init__()
        self.mode = mode
        self.screen_bindings = list(screen_bindings)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(self._text(), id="help-text")

    def _text(self) -> Table:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row(Text("peft-advisor", style="bold"), Text(ABOUT.get(self.mode, "")))
        grid.add_row("", "")
        sections = [("This screen", self.screen_bindings), ("Everywhere", self.app.BINDINGS)]
        for title, bindings in sections:
            grid.add_row(Text(title, style="underline"), "")
            for key, description in _rows(bindings):
                grid.add_row(key, description)
            grid.add_row("", "")
        grid.add_row("Mouse", "click rows, buttons, fields and the screen names at the top")
        grid.add_row("Esc", "closes this help")
        return grid


def _rows(bindings) -> list[tuple[str, str]]:
    rows = []
    for b in bindings:
        if isinstance(b, Binding):
            key, description = b.key, b.description
        else:
            key, description = b[0], (b[2] if len(b) > 2 else b[1])
        if description:
            rows.append((", ".join(k.strip() for k in key.split(",")), description))
    return rows
