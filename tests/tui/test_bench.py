"""The bench screen: `peft-advisor bench`'s table (the same cells as bench.md) and the train loss
curves of every candidate in one plot; reached from the Runs screen and from `bench --tui`."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest
from textual.widgets import DataTable
from tui_support import FIXTURES, make_app, switch_mode, wait_until

from peft_advisor.cli import bench_cmd
from peft_advisor.core.errors import UserError
from peft_advisor.tui.screens.bench import BenchScreen

METHODS = ["lora", "rslora", "dora", "vera", "qlora", "full"]


def md_rows() -> list[list[str]]:
    """The data rows of the committed bench.md's table, cell by cell."""
    lines = (FIXTURES / "bench" / "bench.md").read_text(encoding="utf-8").splitlines()
    table = [line for line in lines if line.startswith("|")][2:]
    return [[c.strip() for c in line.strip("|").split("|")] for line in table]


def screen_text(app) -> str:
    return app.export_screenshot().replace("&#160;", " ")


def row_texts(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def bench_screen(pilot) -> BenchScreen:
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, BenchScreen) and pilot.app.screen.result)
    return pilot.app.screen


async def test_bench_screen_shows_bench_md_table_and_one_curve_per_method(workdir):
    app = make_app(bench="bench-h200")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await bench_screen(pilot)
        rows = row_texts(screen.query_one(DataTable))
        assert [r[0] for r in rows] == METHODS
        assert rows == md_rows()  # every cell as bench.md shows it
        assert rows[2][:5] == ["dora", "ok", "10.78 GiB", "12.70 GiB", "+17.8%"]
        assert screen.plotted == METHODS
        text = screen_text(app)
        assert "rslora" in text and "Lowest eval loss" in text


async def test_a_row_that_could_not_run_shows_its_reason(workdir):
    path = workdir / "bench-h200" / "bench.json"
    text = path.read_text(encoding="utf-8").replace('"status": "ok"', '"status": "needs-cuda"', 1)
    path.write_text(text.replace('"reason": null', '"reason": "qlora needs an NVIDIA GPU with CUDA"', 1))
    app = make_app(bench="bench-h200")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await bench_screen(pilot)
        first = row_texts(screen.query_one(DataTable))[0]
        assert first[:2] == ["lora", "needs CUDA"]
        assert "qlora needs an NVIDIA GPU with CUDA" in screen_text(app)


async def test_runs_screen_lists_a_bench_and_enter_opens_it(workdir):
    shutil.move(workdir / "bench-h200", workdir / "runs" / "bench-h200")
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await switch_mode(pilot, "f5", "runs")
        runs = app.screen
        table = runs.query_one(DataTable)
        await wait_until(pilot, lambda: table.row_count == 4)
        key = str(Path("runs") / "bench-h200")
        assert key in runs.benches
        row = table.get_row_at(table.get_row_index(key))
        assert row[1] == "bench-h200" and "6/6 ok" in str(row[3]) and row[6] == "6.534"
        table.move_cursor(row=table.get_row_index(key))
        # a highlight is drawn when the table's RowHighlighted message reaches the screen
        await wait_until(pilot, lambda: runs.plotted == METHODS)
        assert runs.plotted == METHODS  # the highlighted bench's curves, before opening it
        await pilot.press("enter")
        screen = await bench_screen(pilot)
        assert screen.bench_dir == Path(key) and screen.plotted == METHODS
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is runs)


def bench_args(recipe: str) -> argparse.Namespace:
    return argparse.Namespace(recipe=recipe, tui=True, methods=None, steps=None, time_budget=None, out=None, force=False)


def test_bench_tui_on_a_bench_folder_opens_it_without_running(workdir, monkeypatch):
    opened = []
    monkeypatch.setattr("peft_advisor.cli._open_tui", lambda **kw: opened.append(kw) or 0)
    assert bench_cmd.run_bench(bench_args("bench-h200")) == 0
    assert opened == [{"bench": "bench-h200"}]
    with pytest.raises(UserError, match="holds no bench.json"):
        bench_cmd.run_bench(bench_args("runs"))
    assert len(opened) == 1
