"""The screens as the snapshot tests and the README screenshots show them: one app and one
`run_before` per scenario, deterministic (fake GPUs, canned runs, fixed clocks in the events).

Run from a folder holding the canned runs under `runs/` and the canned bench in `bench-h200/` (the `workdir` fixture, or
`make_screenshots.py`, which writes assets/*.svg from these same scenarios).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable

from textual.widgets import DataTable, Input
from tui_support import make_app, recipe_ready, switch_mode, wait_until

from peft_advisor.tui.widgets.tradeoff_table import TradeoffTable


@dataclass
class Scenario:
    make: Callable
    run_before: Callable[..., Awaitable[None]]


async def advice_shown(pilot, model: str = "llama-3.1-8b") -> None:
    app = pilot.app
    await wait_until(pilot, lambda: getattr(app.screen, "inputs", None) is not None
                     and app.screen.inputs.model == model and app.screen.query(TradeoffTable)
                     and app.screen.query_one(TradeoffTable).row_count)
    await pilot.pause(0.2)


async def _advisor(pilot) -> None:
    await advice_shown(pilot)
    pilot.app.screen.query_one(TradeoffTable).focus()
    await pilot.pause(0.1)


async def _advisor_no_gpu(pilot) -> None:
    field = pilot.app.screen.query_one("#in-vram", Input)
    field.focus()
    await pilot.press(*"16")
    screen = pilot.app.screen
    # typing "1" may be computed before "16": wait for the advice of the full budget
    await wait_until(pilot, lambda: screen.inputs is not None and screen.inputs.vram_bytes == 16 * 1024**3
                     and screen.query(TradeoffTable) and screen.query_one(TradeoffTable).row_count)
    await pilot.pause(0.2)
    table = pilot.app.screen.query_one(TradeoffTable)
    table.focus()
    table.move_cursor(row=table.get_row_index("full"))  # a ruled-out row, with its reason below
    await pilot.pause(0.2)


async def _recipe(pilot) -> None:
    await advice_shown(pilot)
    pilot.app.screen.query_one(TradeoffTable).focus()
    await pilot.press("enter")  # the recommended method, on to its recipe
    # the advisor's recipe, loaded (the screen mounts with the default one, which has no budget): a
    # value set before that would be overwritten by the advisor's
    await wait_until(pilot, lambda: recipe_ready(pilot.app) and pilot.app.screen.recipe.budget.vram_gib > 0)
    field = pilot.app.screen.query_one("#f-method-rank", Input)
    field.focus()
    field.value = "x8"  # a bad value: its message shows under the field
    await pilot.pause(0.3)


async def _monitor(pilot) -> None:
    await wait_until(pilot, lambda: pilot.app.screen.view.done or pilot.app.screen.exit_note)
    pilot.app.screen._draw_plot()
    await pilot.pause(0.3)


async def _runs(pilot) -> None:
    await switch_mode(pilot, "f5", "runs")  # mounted: its table exists
    table = pilot.app.screen.query_one(DataTable)
    await wait_until(pilot, lambda: table.row_count == 3 and pilot.app.focused is table)  # "down" moves its cursor
    await pilot.press("space", "down", "space", "down", "space", "c")
    await pilot.pause(0.3)


async def _bench(pilot) -> None:
    from peft_advisor.tui.screens.bench import BenchScreen

    await wait_until(pilot, lambda: isinstance(pilot.app.screen, BenchScreen) and pilot.app.screen.plotted)
    await pilot.pause(0.3)


async def _study_front(pilot) -> None:
    from peft_advisor.tui.screens.front import FrontScreen

    await pilot.press("ctrl+b")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, FrontScreen) and pilot.app.screen.plotted)
    await pilot.pause(0.3)


async def _help(pilot) -> None:
    await _monitor(pilot)
    await pilot.press("f1")
    await pilot.pause(0.2)


async def _light(pilot) -> None:
    await _monitor(pilot)
    await pilot.press("ctrl+t")
    await pilot.pause(0.2)


SCENARIOS: dict[str, Scenario] = {
    "advisor": Scenario(lambda: make_app(), _advisor),
    "advisor_no_gpu": Scenario(lambda: make_app(gpu=False), _advisor_no_gpu),
    "recipe": Scenario(lambda: make_app(), _recipe),
    "monitor": Scenario(lambda: make_app(monitor="runs/demo-lora"), _monitor),
    "monitor_died": Scenario(lambda: make_app(monitor="runs/demo-vera"), _monitor),
    "runs": Scenario(lambda: make_app(monitor="runs/demo-lora"), _runs),
    "bench": Scenario(lambda: make_app(bench="bench-h200"), _bench),
    "study_front": Scenario(lambda: make_app(), _study_front),
    "help": Scenario(lambda: make_app(monitor="runs/demo-lora"), _help),
    "monitor_light": Scenario(lambda: make_app(monitor="runs/demo-lora"), _light),
}
