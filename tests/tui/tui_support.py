"""Helpers for the terminal UI tests: apps with a fake GPU probe, a launcher that runs the fake
trainer, and a wait helper. Fixtures live in conftest.py."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
FIXTURES = TESTS / "fixtures"
FAKE_TRAINER = FIXTURES / "fake_trainer.py"
sys.path.insert(0, str(TESTS))  # tests/fakes.py

from fakes import FakeProber, fake_no_gpu_result, fake_probe_result  # noqa: E402

from peft_advisor import launch  # noqa: E402
from peft_advisor.tui.app import PeftAdvisorApp  # noqa: E402
from peft_advisor.tui.services import Services  # noqa: E402


class FakeLauncher:
    """Starts tests/fixtures/fake_trainer.py the way `launch.start` starts the real trainer: its
    own session, stdout+stderr to train.log, the pid in run.json, a `launch.Launched` back.
    Stopping goes through the real `launch.stop` (SIGINT to the pid in run.json)."""

    def __init__(self, *extra: str):
        self.extra = list(extra)
        self.started: list[subprocess.Popen] = []

    def start(self, recipe_path: Path, run_dir: Path) -> launch.Launched:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True)
        argv = [sys.executable, str(FAKE_TRAINER), str(recipe_path), "--run-dir", str(run_dir),
                "--label", "peft_advisor.train", *self.extra]
        with open(run_dir / "train.log", "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        launch.write_run_json(run_dir, proc.pid, argv)
        self.started.append(proc)
        return launch.Launched(proc, run_dir, run_dir / "train.log", None)

    @staticmethod
    def stop(run_dir: Path) -> bool:
        return launch.stop(run_dir)

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def make_services(launcher: FakeLauncher | None = None, gpu: bool = True, root: Path = Path("runs")) -> Services:
    prober = FakeProber(fake_probe_result() if gpu else fake_no_gpu_result())
    services = Services(prober=prober, output_root=root)
    if launcher is not None:
        services.start_run, services.stop_run = launcher.start, launcher.stop
    return services


def make_app(launcher=None, gpu: bool = True, monitor=None, bench=None, data=None, packing=False,
             data_choice=None) -> PeftAdvisorApp:
    return PeftAdvisorApp(services=make_services(launcher, gpu), monitor=monitor, bench=bench, data=data,
                          packing=packing, data_choice=data_choice)


async def wait_until(pilot, condition, timeout: float = 30.0, step: float = 0.1) -> None:
    """Let the app run until `condition()` holds; fail with the timeout otherwise (generous: a
    loaded 2-core CI machine runs the advisor's worker threads slowly; passing runs never wait it out)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await pilot.pause(step)


def on_top(app, screen_type) -> bool:
    """`screen_type` is the screen on top and mounted (composed, its on_mount run): a pushed
    screen is on the stack at once, its widgets only once its own message loop has run."""
    return isinstance(app.screen, screen_type) and app.screen.is_mounted


def focused_id(app) -> str | None:
    return app.focused.id if app.focused is not None else None


def recipe_ready(app) -> bool:
    """The Recipe screen is showing and mounted (the field changes its `set_recipe` causes arrive
    later, and are no-ops: they hold what the recipe holds)."""
    from peft_advisor.tui.screens.recipe import RecipeScreen

    return app.current_mode == "recipe" and on_top(app, RecipeScreen)


async def switch_mode(pilot, key: str, mode: str) -> None:
    """Press a mode's key (F3 recipe, F5 runs, ...) and wait until that mode's screen is mounted:
    the binding runs once the key has bubbled up to the app, and a mode's first screen is mounted
    after the switch, so a query right after the key can find the old screen or no widgets."""
    await pilot.press(key)
    app = pilot.app
    await wait_until(pilot, lambda: app.current_mode == mode and app.screen.is_mounted
                     and (mode != "recipe" or recipe_ready(app)))


def file_message(screen) -> str:
    return str(screen.query_one("#file-message").content)


async def press_for_message(pilot, *keys: str) -> None:
    """Press keys on the Recipe screen (export, launch, or a dialog's answer) and wait until its file
    message says their outcome: each says it there, from a binding that runs only once the key has
    bubbled up to the app, or from a dialog's callback after the dialog is dismissed. The outcome
    must differ from the message before (every caller's does)."""
    screen = pilot.app.get_screen_stack("recipe")[0]  # under a dialog, too (y/n to overwrite)
    before = file_message(screen)
    await pilot.press(*keys)
    await wait_until(pilot, lambda: file_message(screen) != before)


async def import_typed(pilot) -> None:
    """Import the path in the Recipe screen's file field: Ctrl+O opens the picker with that path
    in its field; Shift+Tab moves from the tree to the field; Enter imports it. Returns once the
    Recipe screen has said the import's outcome (a message that differs from the one before)."""
    from textual.widgets import DirectoryTree

    from peft_advisor.tui.screens.file_picker import RecipePickerScreen

    app = pilot.app
    screen = app.screen
    before = file_message(screen)
    await pilot.press("ctrl+o")
    # the picker focuses its tree on mount (a deferred focus): Shift+Tab before that lands elsewhere
    await wait_until(pilot, lambda: on_top(app, RecipePickerScreen) and isinstance(app.focused, DirectoryTree))
    await pilot.press("shift+tab")
    await wait_until(pilot, lambda: focused_id(app) == "picker-path")
    await pilot.press("enter")
    # the picker's result reaches the Recipe screen in a callback after it is dismissed
    await wait_until(pilot, lambda: app.screen is screen and file_message(screen) != before)
