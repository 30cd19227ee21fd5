"""The one-line bar at the top of every screen: where you are, and where F2–F5 take you.

Each name is clickable, so the mouse can switch screens too.
"""

from __future__ import annotations

from textual.widgets import Static

SCREENS = (("advisor", "F2 Advisor"), ("recipe", "F3 Recipe"), ("monitor", "F4 Monitor"), ("runs", "F5 Runs"))


def nav_markup(current: str) -> str:
    parts = ["[b]peft-advisor[/b] "]
    for mode, label in SCREENS:
        style = "reverse b" if mode == current else "underline"
        parts.append(f" [@click=app.switch_mode('{mode}')][{style}] {label} [/{style}][/]")
    parts.append("  [dim][@click=app.help]F1 Help[/][/dim]")
    return "".join(parts)


class NavBar(Static):
    """Highlights the current screen."""

    DEFAULT_CSS = """
    NavBar { height: 1; background: $panel; color: $foreground; padding: 0 1; }
    """

    def __init__(self, current: str, **kwargs):
        super().__init__(nav_markup(current), **kwargs)
