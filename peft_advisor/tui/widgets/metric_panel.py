"""Live numbers, one per line (`label ... value`), some with a sparkline of recent values.

One widget draws every metric of the monitor: at 10 events a second each extra widget costs its
own render and style work per frame, so the panel is a single render. Panels never read files:
the monitor sets `rows` ("attributes down").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int) -> str:
    """The last `width` values as block characters scaled between their min and max."""
    values = [v for v in values if math.isfinite(v)][-width:]  # a NaN or inf loss has no height
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARKS[min(7, int((v - low) / span * 7.999))] for v in values)


@dataclass(frozen=True)
class Metric:
    label: str
    value: str = "—"
    history: tuple[float, ...] | None = None
    """Recent values for a sparkline line under the metric; None for no sparkline."""


class MetricPanel(Widget):
    """Set `rows` to a tuple of `Metric`; the panel is as high as its lines."""

    DEFAULT_CSS = """
    MetricPanel { height: auto; text-wrap: nowrap; text-overflow: clip; }
    """

    rows: reactive[tuple[Metric, ...]] = reactive(())

    def value_of(self, label: str) -> str | None:
        return next((m.value for m in self.rows if m.label == label), None)

    def watch_rows(self, old: tuple[Metric, ...], new: tuple[Metric, ...]) -> None:
        if _lines(old) != _lines(new):
            self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        return max(1, _lines(self.rows))

    def render(self) -> Content:
        # Textual's own Content, not a Rich Text: no conversion on every frame.
        width = self.content_region.width or 20
        parts: list = []
        for m in self.rows:
            parts += [(m.label, "bold"), " " * max(1, width - len(m.label) - len(m.value)) + m.value, "\n"]
            if m.history is not None:
                parts += [(sparkline(list(m.history), width), "$accent"), "\n"]
        return Content.assemble(*parts[:-1])


def _lines(rows) -> int:
    return sum(2 if m.history is not None else 1 for m in rows)
