"""The tail of a run's `train.log` (the trainer child's stdout and stderr).

A plain widget over a bounded deque rather than a RichLog: a RichLog's every write changes its
virtual size and costs a layout pass of the whole screen, which at 10 log lines a second was
most of the monitor's CPU. This one only repaints itself. Up/Down/PgUp/PgDn (or the wheel) look
back; End follows again. Plain text only: a log line containing `[red]` is not markup.
"""

from __future__ import annotations

from collections import deque

from textual.content import Content
from textual.binding import Binding
from textual.reactive import reactive
from textual.widget import Widget


REPAINT_S = 1.0


class LogTail(Widget, can_focus=True):
    """The last lines of a log; `back` lines scrolled back from the end (0 = following)."""

    DEFAULT_CSS = """
    LogTail { height: 6; border: round $panel; background: $surface; padding: 0 1;
              text-wrap: nowrap; text-overflow: ellipsis; }
    LogTail:focus { border: round $accent; }
    """
    BINDINGS = [
        Binding("up", "back(1)", show=False),
        Binding("down", "back(-1)", show=False),
        Binding("pageup", "back(5)", show=False),
        Binding("pagedown", "back(-5)", show=False),
        Binding("end", "follow", show=False),
    ]

    back: reactive[int] = reactive(0)

    def __init__(self, max_lines: int = 1000, **kwargs):
        super().__init__(**kwargs)
        self.lines: deque[str] = deque(maxlen=max_lines)
        self._repaint = None

    def append_lines(self, lines: list[str], now: bool = False) -> None:
        """Add lines; the repaint waits up to `REPAINT_S` so a chatty log costs one frame a second."""
        for line in lines:
            self.lines.append(line.rstrip("\n").replace("\r", "").expandtabs())
        if self.back:  # keep the view still while the person reads back
            self.back = min(self.back + len(lines), self._max_back())
        if now:
            self.refresh()
        elif self._repaint is None:
            self._repaint = self.set_timer(REPAINT_S, self._do_repaint)

    def _do_repaint(self) -> None:
        self._repaint = None
        self.refresh()

    def clear(self) -> None:
        self.lines.clear()
        self.back = 0
        self.refresh()

    def text(self) -> str:
        return "\n".join(self.lines)

    def _max_back(self) -> int:
        return max(0, len(self.lines) - max(1, self.content_region.height))

    def render(self) -> Content:
        height = max(1, self.content_region.height)
        end = len(self.lines) - self.back
        shown = list(self.lines)[max(0, end - height) : end]
        return Content("\n".join(shown))  # plain: never markup

    def watch_back(self, back: int) -> None:
        self.border_subtitle = f"{back} lines back · End follows" if back else ""

    def action_back(self, lines: int) -> None:
        self.back = max(0, min(self.back + lines, self._max_back()))

    def action_follow(self) -> None:
        self.back = 0

    def on_mouse_scroll_up(self, event) -> None:
        event.stop()
        self.action_back(2)

    def on_mouse_scroll_down(self, event) -> None:
        event.stop()
        self.action_back(-2)
