"""The tail of a run's `train.log` (the trainer child's stdout and stderr).

Plain text only: a log line that happens to contain `[red]` must not be read as markup.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import RichLog


class LogTail(RichLog):
    """A bounded scrollback that follows new lines."""

    DEFAULT_CSS = """
    LogTail { height: 6; border: round $panel; background: $surface; }
    """

    def __init__(self, max_lines: int = 500, **kwargs):
        super().__init__(max_lines=max_lines, wrap=False, markup=False, highlight=False, auto_scroll=True, **kwargs)

    def append_lines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(Text(line.rstrip("\n").replace("\r", "")))
