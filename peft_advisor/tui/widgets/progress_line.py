"""One line: a progress bar, the percentage, and a caption (step, elapsed time, ETA).

Drawn as one widget instead of Textual's ProgressBar (three widgets) because the monitor
redraws it on every batch of events; the ETA comes from the run's own timestamps, so it is right
after re-attaching too.
"""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

BAR_WIDTH = 30


class ProgressLine(Widget):
    """`fraction` in [0, 1] or None (unknown total), and a `caption`."""

    DEFAULT_CSS = """
    ProgressLine { height: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    fraction: reactive[float | None] = reactive(None)
    caption: reactive[str] = reactive("")

    def render(self) -> Content:
        width = min(BAR_WIDTH, max(10, (self.content_region.width or 80) // 3))
        if self.fraction is None:
            return Content.assemble(("░" * width, "dim"), "   —  ", self.caption)
        done = round(self.fraction * width)
        return Content.assemble(
            ("█" * done, "$success" if self.fraction >= 1 else "$accent"),
            ("░" * (width - done), "dim"),
            f" {self.fraction:4.0%} ",
            self.caption,
        )
