"""One GPU at a glance: name, memory used/total as a bar, utilisation, temperature, power, bf16.

Clicking a card (or Enter on it) chooses that GPU for the default VRAM budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from peft_advisor.core.units import fmt_bytes


def _or_dash(value, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


class GpuCard(Widget, can_focus=True):
    """Set `gpu` (a `core.hardware.GpuInfo`) to redraw."""

    DEFAULT_CSS = """
    GpuCard { height: 2; width: 1fr; min-width: 30; padding: 0 1; margin-right: 1;
              text-wrap: nowrap; text-overflow: ellipsis; }
    GpuCard.-chosen { background: $panel; }
    GpuCard:focus { background: $accent 30%; }
    """
    BINDINGS = [Binding("enter,space", "choose", "Use this GPU", show=False)]

    gpu = reactive(None)
    chosen: reactive[bool] = reactive(False)

    @dataclass
    class Chosen(Message):
        index: int

    def __init__(self, gpu, **kwargs):
        super().__init__(**kwargs)
        self.gpu = gpu

    def watch_chosen(self, chosen: bool) -> None:
        self.set_class(chosen, "-chosen")

    def render(self) -> Text:
        g = self.gpu
        if g is None:
            return Text("—")
        width = max(8, (self.content_region.width or 30))
        used, total = g.used_bytes, g.total_bytes
        label = f" {fmt_bytes(used)}/{fmt_bytes(total)}"
        bar_w = max(4, width - len(label))
        frac = (used / total) if used is not None and total else 0.0
        filled = round(frac * bar_w)
        text = Text(no_wrap=True, overflow="ellipsis")
        bf16 = {True: "bf16 ✓", False: "bf16 ✗", None: "bf16 ?"}[g.bf16]
        name = (g.name or "unknown").removeprefix("NVIDIA ")  # every card here is NVIDIA's
        text.append(("▶ " if self.chosen else "  ") + f"GPU {g.index} {name}", "bold")
        text.append(
            f"  {_or_dash(g.utilization_pct, '{}%')} {_or_dash(g.temperature_c, '{}°C')} "
            f"{_or_dash(g.power_w, '{:.0f}W')} {bf16}\n"
        )
        style = "red" if frac > 0.9 else "yellow" if frac > 0.7 else "green"
        text.append("█" * filled, style)
        text.append("░" * (bar_w - filled), "dim")
        text.append(label)
        return text

    def on_click(self) -> None:
        self.action_choose()

    def action_choose(self) -> None:
        if self.gpu is not None:
            self.post_message(self.Chosen(self.gpu.index))
