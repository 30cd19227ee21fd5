"""One live number with a label and, given room, a sparkline of its recent history.

Panels never read files: the monitor sets `value` and calls `push()` ("attributes down").
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int) -> str:
    """The last `width` values as block characters scaled between their min and max."""
    values = [v for v in values if v == v][-width:]  # drop NaN
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARKS[min(7, int((v - low) / span * 7.999))] for v in values)


class MetricPanel(Widget):
    """`label  value` on the first line; a sparkline under it when the panel is 2+ lines high."""

    DEFAULT_CSS = """
    MetricPanel { height: 1; }
    MetricPanel.-spark { height: 2; }
    """

    value: reactive[str] = reactive("—")
    history: reactive[tuple[float, ...]] = reactive(())

    def __init__(self, label: str, *, spark: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.label = label
        self.set_class(spark, "-spark")

    def push(self, number: float | None, text: str) -> None:
        """Show `text` and remember `number` for the sparkline (kept to the last 200)."""
        self.value = text
        if number is not None:
            self.history = (self.history + (float(number),))[-200:]

    def clear(self) -> None:
        self.value = "—"
        self.history = ()

    def render(self) -> Text:
        width = self.content_region.width or 20
        line = Text(self.label, style="bold")
        pad = max(1, width - len(self.label) - len(self.value))
        line.append(" " * pad + self.value)
        if self.has_class("-spark"):
            line.append("\n")
            line.append(sparkline(list(self.history), width), style="cyan")
        return line
