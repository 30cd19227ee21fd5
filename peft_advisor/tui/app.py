"""`peft-advisor` with no arguments: the Textual app and its screen routing.

Each screen owns its state and handlers; this file only wires screens together (advisor →
recipe → monitor, runs → monitor), holds the global bindings and the theme, and starts the app.
Screens are imported when first shown, so the first paint does not wait for plotext.

Usage:
    peft-advisor                      # opens the advisor
    peft-advisor monitor RUN_DIR --tui  # opens the monitor on a run folder (via run_app(monitor=…))
    peft-advisor bench BENCH_DIR --tui  # opens a bench's table and curves (via run_app(bench=…))
"""

from __future__ import annotations

from pathlib import Path

from textual.app import App
from textual.binding import Binding

from peft_advisor.tui.messages import MonitorRequested, RecipeRequested
from peft_advisor.tui.services import Services

DARK_THEME = "textual-dark"
LIGHT_THEME = "textual-light"


def _advisor():
    from peft_advisor.tui.screens.advisor import AdvisorScreen

    return AdvisorScreen()


def _recipe():
    from peft_advisor.tui.screens.recipe import RecipeScreen

    return RecipeScreen()


def _monitor():
    from peft_advisor.tui.screens.monitor import MonitorScreen

    return MonitorScreen()


def _runs():
    from peft_advisor.tui.screens.runs import RunsScreen

    return RunsScreen()


class PeftAdvisorApp(App[int]):
    """Four screens as modes (each keeps its own state while you switch) plus a help overlay."""

    CSS_PATH = "app.tcss"
    TITLE = "peft-advisor"
    MODES = {"advisor": _advisor, "recipe": _recipe, "monitor": _monitor, "runs": _runs}
    BINDINGS = [
        Binding("f1", "help", "Help"),
        Binding("f2", "switch_mode('advisor')", "Advisor", show=False),
        Binding("f3", "switch_mode('recipe')", "Recipe", show=False),
        Binding("f4", "switch_mode('monitor')", "Monitor", show=False),
        Binding("f5", "switch_mode('runs')", "Runs", show=False),
        Binding("ctrl+t", "toggle_theme", "Theme"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, services: Services | None = None, monitor: str | Path | None = None,
                 bench: str | Path | None = None, data: str | None = None, packing: bool = False,
                 data_choice: dict | None = None):
        # The first screen is the first mode's, so no blank default screen is built and painted.
        self.DEFAULT_MODE = "monitor" if monitor else "runs" if bench else "advisor"
        super().__init__()
        self.services = services or Services()
        """Probe, launcher and output root; tests pass fakes."""
        self.start_run_dir = Path(monitor) if monitor else None
        """Open the monitor on this folder instead of the advisor."""
        self.start_bench_dir = Path(bench) if bench else None
        """Open this bench folder's table over the Runs screen (Escape goes back to the runs)."""
        self.advice_data = data
        """The training data the advisor estimates from (`peft-advisor --data PATH`), as recommend --data."""
        self.advice_packing = packing
        """Its rows packed into seq-len-token rows (`--packing`), as recommend --packing."""
        self.advice_data_choice = {k: v for k, v in (data_choice or {}).items() if v}
        """Which rows of it (`--columns`, `--data-config`, `--data-split`), as the recipe keys they set."""
        self.launched: dict[Path, object] = {}
        """Runs this UI started (`launch.Launched`), so reopening one still knows its exit code."""

    async def on_mount(self) -> None:
        if self.start_run_dir is not None:
            await self.open_monitor(self.start_run_dir)
        elif self.start_bench_dir is not None:
            from peft_advisor.tui.screens.bench import BenchScreen

            await self.push_screen(BenchScreen(self.start_bench_dir))

    # ------------------------------------------------------------------ routing

    def action_help(self) -> None:
        from peft_advisor.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.current_mode, self.screen.BINDINGS))

    def action_toggle_theme(self) -> None:
        self.theme = LIGHT_THEME if self.theme == DARK_THEME else DARK_THEME

    async def on_recipe_requested(self, message: RecipeRequested) -> None:
        await self.switch_mode("recipe")
        self.get_screen_stack("recipe")[0].set_recipe(message.recipe)

    async def on_monitor_requested(self, message: MonitorRequested) -> None:
        await self.open_monitor(message.run_dir, message.launched)

    async def open_monitor(self, run_dir: Path, launched=None) -> None:
        """Show the monitor following `run_dir`; `launched` is set when this UI started the run."""
        key = Path(run_dir).absolute()
        if launched is not None:
            self.launched[key] = launched
        await self.switch_mode("monitor")
        self.get_screen_stack("monitor")[0].follow(Path(run_dir), self.launched.get(key))


def run_app(monitor: str | Path | None = None, output_root: str | Path | None = None,
            bench: str | Path | None = None, data: str | None = None, packing: bool = False,
            data_choice: dict | None = None, **_) -> int:
    """Entry point for the console script (`peft_advisor.cli` calls it with keyword arguments)."""
    services = Services()
    if output_root is not None:
        services.output_root = Path(output_root)
    elif monitor is not None or bench is not None:
        services.output_root = Path(monitor or bench).resolve().parent
    app = PeftAdvisorApp(services=services, monitor=monitor, bench=bench, data=data, packing=packing,
                         data_choice=data_choice)
    return int(app.run() or 0)
