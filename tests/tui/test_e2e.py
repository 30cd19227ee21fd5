"""End to end: the real trainer on a tiny random model, launched from the UI, watched until `end`.

Slow (the child imports torch, transformers and peft: ~10 s on the CPU machines), so marked
`slow`; it needs nothing from the network.
"""

from __future__ import annotations

import os
import time

import pytest
from textual.widgets import Input
from tui_support import import_typed, make_app, press_for_message, switch_mode, wait_until

from peft_advisor.core import recipe as rc
from peft_advisor.tui.services import Services
from peft_advisor.tui.widgets.metric_panel import MetricPanel
from peft_advisor.tui.widgets.progress_line import ProgressLine

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny_recipe(workdir):
    from tests.train.tiny import save_tiny_model, sums, write_jsonl

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = save_tiny_model(workdir / "tiny-llama")
    data = write_jsonl(workdir / "sums.jsonl", sums(96))
    recipe = rc.updated(rc.Recipe(), {
        "model.id": str(model), "model.dtype": "float32", "method.name": "lora", "method.rank": 4,
        "method.alpha": 8, "data.path": str(data), "data.eval_split": 8, "data.max_seq_len": 32,
        "train.max_steps": 40, "train.micro_batch": 4, "train.lr": 1e-3, "train.warmup_ratio": 0.0,
        "train.eval_every": 10, "train.save_every": 0, "output.dir": "runs/e2e",
    })
    return rc.save(recipe, workdir / "tiny.toml")


async def test_launch_the_real_trainer_and_watch_it_to_the_end(tiny_recipe, monkeypatch):
    """The bar must be seen moving: the tiny run is paced at 0.1 s a step (4 s in all), so it cannot
    end between two of the monitor's reads however fast the machine (it once did, seen at 0.5 only)."""
    from peft_advisor.core.run_folder import FAULT_ENV

    monkeypatch.setenv(FAULT_ENV, "step:slow:0.1")  # the child inherits it
    app = make_app(gpu=False)
    real = Services()  # the real launcher: launch.start / launch.stop
    app.services.start_run, app.services.stop_run = real.start_run, real.stop_run
    async with app.run_test(size=(100, 30)) as pilot:
        await switch_mode(pilot, "f3", "recipe")
        recipe_screen = app.screen
        path = recipe_screen.query_one("#file-path", Input)
        path.value = str(tiny_recipe)
        await import_typed(pilot)
        assert recipe_screen.recipe.train.max_steps == 40
        await pilot.press("ctrl+r")
        # following the run: the monitor is switched to first, mounted, then told which run
        await wait_until(pilot, lambda: app.current_mode == "monitor" and app.screen.run_dir is not None)
        monitor = app.screen
        progress, metrics = monitor.query_one(ProgressLine), monitor.query_one(MetricPanel)
        seen_fractions, seen_losses = set(), set()
        deadline = time.monotonic() + 240
        while not monitor.view.done and not monitor.exit_note:
            assert time.monotonic() < deadline, "the trainer did not finish in time"
            if progress.fraction is not None:
                seen_fractions.add(progress.fraction)
            seen_losses.add(metrics.value_of("loss"))
            await pilot.pause(0.05)
        await pilot.pause(0.5)
        assert monitor.exit_note is None, monitor.query_one("#log").text()[-2000:]
        assert monitor.view.status == "ok" and monitor.view.step == 40
        assert len(monitor.view.losses) == 40 and monitor.view.eval_losses
        assert len({f for f in seen_fractions if 0 < f < 1}) >= 2  # the bar moved while it ran
        assert len(seen_losses - {"—", None}) >= 2  # so did the loss panel
        assert progress.fraction == 1.0 and "ok" in str(monitor.query_one("#summary").content)
        await wait_until(pilot, lambda: "run ended ok" in monitor.query_one("#log").text(), timeout=10)


def app_with_real_launcher(workdir, data_path):
    """An app that really starts the trainer, and a recipe file (for the given data) to import."""
    recipe = rc.updated(rc.Recipe(), {"data.path": str(data_path), "output.dir": "runs/bad"})
    path = rc.save(recipe, workdir / "bad-data.toml")
    app = make_app(gpu=False)
    real = Services()
    app.services.start_run, app.services.stop_run = real.start_run, real.stop_run
    return app, path


async def import_and_launch(pilot, path) -> None:
    """Returns once the Recipe screen has said the launch's outcome ("launched ..." or why not)."""
    await switch_mode(pilot, "f3", "recipe")
    pilot.app.screen.query_one("#file-path", Input).value = str(path)
    await import_typed(pilot)
    await press_for_message(pilot, "ctrl+r")


async def test_a_run_that_fails_setup_shows_the_trainers_reason(workdir):
    (workdir / "odd.jsonl").write_text('{"question": "1+1"}\n')  # columns only the trainer's data reader judges
    app, path = app_with_real_launcher(workdir, workdir / "odd.jsonl")
    async with app.run_test(size=(100, 30)) as pilot:
        await import_and_launch(pilot, path)
        await wait_until(pilot, lambda: app.current_mode == "monitor")
        monitor = app.screen
        await wait_until(pilot, lambda: monitor.exit_note is not None, timeout=120)
        assert monitor.exit_note.startswith("not started (exit code 8)")  # ExitCode.BAD_DATA
        assert "question" in monitor.exit_note
        assert not (workdir / "runs" / "bad").exists()
        assert not [p for p in (workdir / "runs").iterdir() if p.name.startswith(".bad")]  # staging removed


async def test_a_missing_data_file_is_said_on_the_recipe_screen_at_once(workdir):
    app, path = app_with_real_launcher(workdir, workdir / "missing.jsonl")
    async with app.run_test(size=(100, 30)) as pilot:
        await import_and_launch(pilot, path)
        message = str(app.screen.query_one("#file-message").content)
        assert app.current_mode == "recipe" and "data: no such file or folder" in message and "missing.jsonl" in message
        assert not (workdir / "runs" / "bad").exists()
