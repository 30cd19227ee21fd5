"""A stacked bar of memory parts drawn against a limit (a VRAM budget, or the estimate).

Used by the advisor (a method's breakdown vs the budget) and the monitor (memory in use vs the
estimate made at launch). It draws what it is given and computes nothing about memory itself.
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from peft_advisor.core.units import fmt_bytes

# Colours readable on both the light and the dark theme (Tableau 10).
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")
OVER = "#e15759"


def render_bar(parts: list[tuple[str, int]], limit_bytes: int | None, width: int) -> Text:
    """One line: each part a coloured run of cells, a `┃` where the limit falls.

    The scale is the larger of the total and the limit, so an over-budget bar visibly runs past
    the marker instead of being squeezed under it.
    """
    width = max(width, 4)
    total = sum(max(0, b) for _, b in parts)
    scale = max(total, limit_bytes or 0, 1)
    cells: list[tuple[str, str]] = []
    for i, (_, nbytes) in enumerate(parts):
        n = round(max(0, nbytes) / scale * width)
        cells += [("█", PALETTE[i % len(PALETTE)])] * n
    cells = cells[:width] + [("░", "dim")] * (width - len(cells))
    if limit_bytes:
        at = min(width - 1, round(limit_bytes / scale * width))
        cells[at] = ("┃", "bold " + (OVER if total > limit_bytes else "default"))
    text = Text()
    for char, style in cells:
        text.append(char, style)
    return text


def render_legend(parts: list[tuple[str, int]]) -> Text:
    text = Text()
    for i, (label, nbytes) in enumerate(parts):
        if nbytes <= 0:
            continue
        text.append("■ ", PALETTE[i % len(PALETTE)])
        text.append(f"{label} {fmt_bytes(nbytes)}  ")
    return text


class BudgetBar(Widget):
    """Title line, bar, legend. Set `data` to `(parts, limit_bytes, caption)`."""

    DEFAULT_CSS = """
    BudgetBar { height: auto; min-height: 2; }
    """

    data: reactive[tuple[tuple[tuple[str, int], ...], int | None, str]] = reactive(((), None, ""))

    def show(self, parts: list[tuple[str, int]], limit_bytes: int | None, caption: str = "") -> None:
        self.data = (tuple((str(k), int(v)) for k, v in parts), limit_bytes, caption)

    def watch_data(self, old, new) -> None:
        """A layout pass only when the number of lines changes (the monitor updates often)."""
        width = self.content_region.width or 40
        if self.get_content_height(None, None, width) != self.content_region.height:
            self.refresh(layout=True)

    def render(self) -> Text:
        parts, limit_bytes, caption = self.data
        width = self.content_region.width or self.size.width or 40
        if not parts:
            return Text(caption or "—", style="dim")
        out = Text()
        if caption:
            out.append(caption + "\n")
        out.append_text(render_bar(list(parts), limit_bytes, width))
        out.append("\n")
        out.append_text(render_legend(list(parts)))
        return out

    def get_content_height(self, container, viewport, width: int) -> int:
        parts, _, caption = self.data
        if not parts:
            return 1
        legend = render_legend(list(parts))
        legend_lines = max(1, len(legend.wrap(self.app.console, max(width, 1))))
        return (1 if caption else 0) + 1 + legend_lines
