"""The runs list: canned folders side by side, open one in the monitor, compare loss curves."""

from __future__ import annotations

from pathlib import Path

from tui_support import make_app, switch_mode, wait_until
from textual.widgets import DataTable


def row_texts(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_runs_lists_every_folder_with_its_figures(workdir):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await switch_mode(pilot, "f5", "runs")
        table = app.screen.query_one(DataTable)
        await wait_until(pilot, lambda: table.row_count == 3)
        rows = {r[1]: r for r in row_texts(table)}
        assert set(rows) == {"demo-lora", "demo-dora", "demo-vera"}
        assert rows["demo-lora"][2] == "lora" and "ok" in rows["demo-lora"][3]
        assert "cancelled" in rows["demo-dora"][3] and "died" in rows["demo-vera"][3]
        assert rows["demo-lora"][4] == "60/60" and rows["demo-lora"][5] == "0.821"
        assert rows["demo-lora"][7] == "2.85 GiB" and rows["demo-lora"][8] == "19.5 MB"


async def test_open_a_run_in_the_monitor(workdir):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await switch_mode(pilot, "f5", "runs")
        table = app.screen.query_one(DataTable)
        await wait_until(pilot, lambda: table.row_count == 3)
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        await pilot.press("enter")
        # following a run: the monitor is switched to first, mounted, then told which run
        await wait_until(pilot, lambda: app.current_mode == "monitor" and app.screen.run_dir is not None)
        monitor = app.screen
        assert str(monitor.run_dir) == key
        await wait_until(pilot, lambda: monitor.view.step > 0)


async def test_compare_two_runs_in_one_plot(workdir):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await switch_mode(pilot, "f5", "runs")
        screen = app.screen
        table = screen.query_one(DataTable)
        await wait_until(pilot, lambda: table.row_count == 3 and app.focused is table)  # "down" moves the table's cursor
        await pilot.press("space", "down", "space", "c")
        # each key's binding runs once the key has bubbled up to the app; the second mark redraws
        await wait_until(pilot, lambda: len(screen.marked) == 2 and len(screen.plotted) == 2)
        assert len(screen.marked) == 2
        assert sorted(screen.plotted) == sorted(Path(k).name for k in screen.marked)
        svg = app.export_screenshot()
        assert all(name in svg for name in screen.plotted) and "compare" in svg
