"""A one-line choice among a few words (the advisor's priority): Enter, Space or a click picks
the next one, Left/Right move either way. Lighter than a Select, whose overlay list costs time
on the first paint, and enough for four options."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget


class Choice(Widget, can_focus=True):
    """`value` is one of `options`; changing it posts `Choice.Changed`."""

    DEFAULT_CSS = """
    Choice { height: 1; width: auto; min-width: 12; padding: 0 1; background: $boost; }
    Choice:focus { background: $accent 40%; }
    """
    BINDINGS = [
        Binding("enter,space,right", "step(1)", "Next", show=False),
        Binding("left", "step(-1)", "Previous", show=False),
    ]

    value: reactive[str] = reactive("", init=False)

    @dataclass
    class Changed(Message):
        choice: "Choice"
        value: str

    def __init__(self, options: tuple[str, ...], value: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.options = tuple(options)
        self.set_reactive(Choice.value, value or self.options[0])

    def render(self) -> Text:
        return Text.assemble("◂ ", (self.value, "bold"), " ▸")

    def get_content_width(self, container, viewport) -> int:
        return max(len(o) for o in self.options) + 4

    def watch_value(self, value: str) -> None:
        self.post_message(self.Changed(self, value))

    def action_step(self, delta: int) -> None:
        i = self.options.index(self.value)
        self.value = self.options[(i + delta) % len(self.options)]

    def on_click(self, event) -> None:
        self.action_step(-1 if event.x < 2 else 1)
