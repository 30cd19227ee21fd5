"""Pick a model preset by typing part of its name (the presets ship as config.json files).

`demo` comes first: it is the one model that ships with its weights (SmolLM2-135M), so it is the
one a person can train right away on any machine.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option


DEMO_NOTE = "SmolLM2-135M, ships with the package: trains on a CPU"


def model_ids() -> list[str]:
    """What the picker offers: `demo`, then the presets (ids the model field accepts as typed)."""
    from peft_advisor.core.model_spec import preset_ids

    return ["demo"] + [i for i in preset_ids() if i != "demo"]


class ModelPickerScreen(ModalScreen[str | None]):
    """Dismisses with the chosen preset id, or None on Escape."""

    DEFAULT_CSS = """
    ModelPickerScreen { align: center middle; background: $background 60%; }
    ModelPickerScreen > Vertical { width: 50; max-width: 100%; height: 80%; border: round $accent;
        background: $surface; padding: 0 1; }
    ModelPickerScreen OptionList { height: 1fr; border: none; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("down", "focus_list", show=False)]

    def __init__(self, ids: list[str] | None = None, current: str = ""):
        super().__init__()
        self.ids = model_ids() if ids is None else ids
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Model presets: type to filter, Enter to choose; or type a local folder in the model field")
            yield Input(placeholder="search, e.g. llama 8b", id="model-search", compact=True)
            yield OptionList(*self._options(""), id="model-options")

    def _options(self, query: str) -> list[Option]:
        words = query.lower().split()
        return [Option(_prompt(i), id=i) for i in self.ids if all(w in i for w in words)]

    def on_input_changed(self, event: Input.Changed) -> None:
        options = self.query_one(OptionList)
        options.clear_options()
        options.add_options(self._options(event.value))
        if options.option_count:
            options.highlighted = 0

    def on_input_submitted(self, event: Input.Submitted) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is not None:
            self.dismiss(options.get_option_at_index(options.highlighted).id)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_focus_list(self) -> None:
        self.query_one(OptionList).focus()

    def action_cancel(self) -> None:
        self.dismiss(None)


def _prompt(model_id: str) -> str:
    return f"{model_id}  [dim]({DEMO_NOTE})[/]" if model_id == "demo" else model_id
