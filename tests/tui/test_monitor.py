"""The monitor: canned runs, a live fake trainer, stop, a trainer that dies, re-attaching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tui_support import FakeLauncher, make_app, on_top, switch_mode, wait_until
from textual.widgets import Static

from peft_advisor.core.events import read_events
from peft_advisor.core.recipe import Recipe, updated
from peft_advisor.tui.launching import launch_recipe
from peft_advisor.tui.widgets.log_tail import LogTail
from peft_advisor.tui.widgets.metric_panel import MetricPanel
from peft_advisor.tui.widgets.progress_line import ProgressLine


def text_of(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).content)


def log_text(screen) -> str:
    return screen.query_one(LogTail).text()


async def test_monitor_shows_a_canned_run(workdir):
    app = make_app(monitor="runs/demo-lora")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.view.done)
        await pilot.pause(0.4)  # pacing only: a finished run's last batch updates every panel and the plot at once
        assert len(screen.view.losses) == 60 and len(screen.view.eval_losses) == 6
        progress = screen.query_one(ProgressLine)
        assert "step 60/60" in progress.caption and progress.fraction == 1.0
        assert "ok" in text_of(screen, "#run-title")
        summary = text_of(screen, "#summary")
        assert "final loss 0.8206" in summary and "19.5 MB" in summary and "(95%)" in summary
        metrics = screen.query_one(MetricPanel)
        assert metrics.value_of("loss") == "0.8206" and metrics.value_of("eval loss") == "0.9206 · acc 60%"
        assert "step 60/60" in log_text(screen)


async def test_monitor_survives_a_trainer_that_died_without_end(workdir):
    app = make_app(monitor="runs/demo-vera")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.exit_note is not None)
        assert "died" in text_of(screen, "#run-title")
        assert "without an end event" in text_of(screen, "#summary")  # the one wording (core.watch)
        assert "RuntimeError: CUDA error" in log_text(screen)
        assert screen.view.step == 30  # the half-written last line is not a step


async def test_live_run_updates_then_ends(workdir):
    """The fake trainer holds at step 5 until the test has seen the run mid-way: on a loaded
    machine the watcher may otherwise first read the file after the last step (a race, not a bug)."""
    gate = Path("runs/live.go").absolute()
    fake = FakeLauncher("--steps", "30", "--interval", "0.05", "--hold-at", "5", "--gate", str(gate))
    app = make_app(fake)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await _live_run_updates_then_ends(app, pilot, gate)
    finally:
        fake.cleanup()


async def _live_run_updates_then_ends(app, pilot, gate: Path) -> None:
    recipe = updated(Recipe(), {"output.dir": "runs/live"})
    run_dir, launched = launch_recipe(app.services, recipe)
    await app.open_monitor(run_dir, launched)
    screen = app.screen
    await wait_until(pilot, lambda: screen.view.step == 5)
    progress_mid = screen.query_one(ProgressLine).fraction
    gate.touch()
    await wait_until(pilot, lambda: screen.view.done)
    assert 0 < progress_mid < 1.0 and screen.query_one(ProgressLine).fraction == 1.0
    assert screen.view.status == "ok" and len(screen.view.losses) == 30
    assert "ETA" not in screen.query_one(ProgressLine).caption
    assert Path("runs/live.toml").is_file()  # the recipe it launched from


async def test_stop_asks_then_sends_sigint(workdir):
    from peft_advisor.tui.screens.confirm import ConfirmScreen

    fake = FakeLauncher("--steps", "400", "--interval", "0.05")
    app = make_app(fake)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            run_dir, launched = launch_recipe(app.services, updated(Recipe(), {"output.dir": "runs/stopme"}))
            await app.open_monitor(run_dir, launched)
            process = launched.process
            screen = app.screen
            await wait_until(pilot, lambda: screen.view.step >= 3)
            await pilot.press("s")
            await wait_until(pilot, lambda: on_top(app, ConfirmScreen))  # "n" before it is the monitor's key
            await pilot.press("n")  # asked, and declined: still running
            await wait_until(pilot, lambda: app.screen is screen)
            await pilot.pause(0.3)  # pacing, not waiting: a SIGINT wrongly sent would have ended the trainer by now
            assert process.poll() is None
            await pilot.press("s")
            await wait_until(pilot, lambda: on_top(app, ConfirmScreen))
            await pilot.press("y")
            await wait_until(pilot, lambda: screen.view.done)
            assert screen.view.status == "cancelled"
            assert process.wait(5) == 130
            assert "cancelled" in text_of(screen, "#summary") and screen.view.checkpoints
    finally:
        fake.cleanup()


async def test_trainer_dying_shows_exit_code_and_log(workdir):
    fake = FakeLauncher("--steps", "50", "--interval", "0.02", "--die-at", "5", "--exit-code", "3")
    app = make_app(fake)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            run_dir, launched = launch_recipe(app.services, updated(Recipe(), {"output.dir": "runs/dies"}))
            await app.open_monitor(run_dir, launched)
            process = launched.process
            screen = app.screen
            await wait_until(pilot, lambda: screen.exit_note is not None)
            assert "exit code 3" in text_of(screen, "#summary")
            await wait_until(pilot, lambda: "RuntimeError: fake trainer died" in log_text(screen))
    finally:
        fake.cleanup()


async def test_partial_and_malformed_lines_are_survived(workdir):
    fake = FakeLauncher("--steps", "20", "--interval", "0.03", "--partial", "--garbage")
    app = make_app(fake)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            run_dir, launched = launch_recipe(app.services, updated(Recipe(), {"output.dir": "runs/messy"}))
            await app.open_monitor(run_dir, launched)
            process = launched.process
            screen = app.screen
            await wait_until(pilot, lambda: screen.view.done)
            assert [s for s, _ in screen.view.losses] == list(range(1, 21))
    finally:
        fake.cleanup()


async def test_reattach_to_a_run_started_earlier(workdir):
    fake = FakeLauncher("--steps", "60", "--interval", "0.05")
    try:
        first = make_app(fake)
        async with first.run_test(size=(100, 30)) as pilot:
            run_dir, launched = launch_recipe(first.services, updated(Recipe(), {"output.dir": "runs/bg"}))
            await first.open_monitor(run_dir, launched)
            process = launched.process
            await wait_until(pilot, lambda: first.screen.view.step >= 3)
        assert process.poll() is None  # closing the UI left the trainer running
        second = make_app(monitor=str(run_dir))  # `peft-advisor monitor runs/bg`: no Popen, only run.json
        async with second.run_test(size=(100, 30)) as pilot:
            screen = second.screen
            await wait_until(pilot, lambda: screen.view.step >= 3)
            seen = screen.view.step
            await wait_until(pilot, lambda: screen.view.done, timeout=15)
            assert screen.view.status == "ok" and screen.view.step == 60 > seen
            assert [s for s, _ in screen.view.losses] == list(range(1, 61))  # history from step 1
    finally:
        fake.cleanup()


async def test_gpu_memory_against_the_estimate_while_live(workdir):
    fake = FakeLauncher("--steps", "200", "--interval", "0.05", "--device", "cuda:0")
    app = make_app(fake)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            run_dir, launched = launch_recipe(app.services, updated(Recipe(), {"output.dir": "runs/gpu"}))
            await app.open_monitor(run_dir, launched)
            screen = app.screen
            await wait_until(pilot, lambda: screen.gpu is not None and screen.view.step > 0, timeout=15)
            await pilot.pause(0.3)
            assert screen.query_one(MetricPanel).value_of("GPU") == "12% 45°C 62 W"  # the fake RTX 4090
            parts, limit, caption = screen.query_one("#mem-bar").data
            labels = dict(parts)
            assert limit == 3 * 1024**3 and "est. 3.00 GiB" in caption
            assert labels["torch reserved"] == int(3 * 1024**3 * 0.9) and "other (NVML)" in labels
    finally:
        fake.cleanup()


async def test_reopening_a_run_launched_here_keeps_its_exit_code(workdir):
    fake = FakeLauncher("--steps", "50", "--interval", "0.03", "--die-at", "20", "--exit-code", "7")
    app = make_app(fake)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            run_dir, launched = launch_recipe(app.services, updated(Recipe(), {"output.dir": "runs/again"}))
            await app.open_monitor(run_dir, launched)
            await switch_mode(pilot, "f5", "runs")  # before reopening: a late F5 would leave the monitor after it
            await app.open_monitor(Path("runs/again"))  # as the Runs screen does: no Popen passed
            screen = app.screen
            await wait_until(pilot, lambda: screen.exit_note is not None)
            assert "exit code 7" in screen.exit_note
    finally:
        fake.cleanup()


async def drawn_with_the_losses(pilot, screen) -> None:
    """Wait until the monitor's plot has been redrawn from the losses it holds, then render it:
    while a run is live (or died) the plot is redrawn only on its timer (every PLOT_EVERY_S,
    3 s), so a short pause checked the plot before it ever saw the NaN or inf points."""
    await wait_until(pilot, lambda: not screen._plot_dirty)
    screen.app.export_screenshot()  # renders every widget now, the plot too (plotext draws here)


async def test_a_nan_loss_is_shown_not_fatal(workdir):
    """Training in bf16 logs a NaN loss as NaN (no filter): the panels and the plot carry on."""
    run = workdir / "runs" / "demo-nan"
    run.mkdir()
    events, _ = read_events(workdir / "runs" / "demo-lora" / "events.jsonl")
    events = [e for e in events if e["kind"] != "end"]
    steps = [e for e in events if e["kind"] == "step"]
    for e in steps[-5:]:
        e["loss"] = float("nan")
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    app = make_app(monitor="runs/demo-nan")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: len(screen.view.losses) == len(steps))
        await drawn_with_the_losses(pilot, screen)
        assert screen.query_one(MetricPanel).value_of("loss") == "nan"
        assert app.is_running


async def test_a_diverging_run_and_odd_times_do_not_break_the_screens(workdir):
    """An infinite loss (a run that diverged), then NaN: the monitor and the runs screen draw what
    they can; a non-finite time in a hand-edited file is dropped when read."""
    run = workdir / "runs" / "demo-inf"
    run.mkdir()
    events, _ = read_events(workdir / "runs" / "demo-lora" / "events.jsonl")
    events = [e for e in events if e["kind"] != "end"]
    steps = [e for e in events if e["kind"] == "step"]
    steps[-2]["loss"], steps[-1]["loss"], events[0]["t"] = float("inf"), float("nan"), float("inf")
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    app = make_app(monitor="runs/demo-inf")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: len(screen.view.losses) == len(steps))
        await drawn_with_the_losses(pilot, screen)
        assert screen.query_one(MetricPanel).value_of("loss") == "nan" and app.is_running
        await switch_mode(pilot, "f5", "runs")  # the runs screen plots the highlighted run's losses
        runs = app.screen
        await wait_until(pilot, lambda: runs.plotted)  # its folders read (a worker), the highlighted run drawn
        app.export_screenshot()  # and rendered: plotext draws the curve here
        assert app.is_running


async def test_an_unreadable_events_file_is_said_and_the_run_still_listed(workdir):
    run = workdir / "runs" / "demo-odd"
    (run / "events.jsonl").mkdir(parents=True)  # unreadable as a file, whoever runs the test
    (run / "run.json").write_text(json.dumps({"pid": -1}))
    app = make_app(monitor="runs/demo-odd")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.exit_note is not None)
        assert "cannot read events.jsonl: Is a directory" in screen.exit_note
        await switch_mode(pilot, "f5", "runs")
        table = app.screen.query_one("#runs-table")
        await wait_until(pilot, lambda: table.row_count >= 4)
        assert app.is_running


@pytest.mark.parametrize("where, words", [("runs/nope", "no such run folder"), ("runs", "not a run folder")])
async def test_monitor_on_a_folder_that_is_not_a_run_says_so(where, words, workdir):
    app = make_app(monitor=where)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.exit_note is not None)
        assert words in screen.exit_note


async def test_the_baseline_evaluation_has_its_state_progress_and_a_running_clock(workdir):
    """Before step 1 the trainer evaluates the base model, which can take minutes: the monitor says
    so with its own progress, and its clock runs though no event comes."""
    gate = Path("runs/eval.go").absolute()
    fake = FakeLauncher("--steps", "3", "--interval", "0.05", "--baseline", "50", "--hold-at", "-1", "--gate", str(gate))
    app = make_app(fake)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            run_dir, launched = launch_recipe(app.services, updated(Recipe(), {"output.dir": "runs/baseline"}))
            await app.open_monitor(run_dir, launched)
            screen = app.screen
            progress = screen.query_one(ProgressLine)
            await wait_until(pilot, lambda: screen.view.eval_done == 12)
            await pilot.pause(0.1)
            assert progress.caption.startswith("evaluating (baseline) 12/50 · ")
            assert progress.fraction == pytest.approx(12 / 50)
            assert "[cyan]evaluating[/]" in text_of(screen, "#run-title")
            clock = progress.caption
            await wait_until(pilot, lambda: progress.caption != clock, timeout=3)  # no event came: the clock moved
            gate.touch()
            await wait_until(pilot, lambda: screen.view.done)
            assert progress.caption.startswith("step 3/3") and "[green]ok[/]" in text_of(screen, "#run-title")
    finally:
        fake.cleanup()


FAKE_TRY = ("import json, sys; print(json.dumps({'prompt': sys.argv[1], 'tuned': 'The answer is 42.', "
            "'base': 'I think it is forty.'}))")


async def test_try_shows_the_tuned_answer_beside_the_base(workdir):
    """`t` on a finished run: the prompt goes to `peft-advisor try ... --json` in a child (here a
    stand-in printing what that command prints), and both answers show side by side."""
    import sys

    from peft_advisor.tui.screens.try_it import TryScreen

    app = make_app(monitor="runs/demo-lora")
    seen = []
    app.services.try_argv = lambda run_dir, prompt: seen.append((run_dir, prompt)) or [sys.executable, "-c", FAKE_TRY, prompt]
    async with app.run_test(size=(100, 30)) as pilot:
        monitor = app.screen
        await wait_until(pilot, lambda: monitor.view.done)
        await pilot.press("t")
        # mounted, its prompt focused (on mount, deferred): keys typed before that are lost
        await wait_until(pilot, lambda: on_top(app, TryScreen) and app.focused is app.screen.query_one("#try-prompt"))
        await pilot.press(*"What is 17 plus 25?", "enter")
        await wait_until(pilot, lambda: "42" in text_of(app.screen, "#try-tuned"))
        assert "forty" in text_of(app.screen, "#try-base")
        assert [(Path(run_dir).name, prompt) for run_dir, prompt in seen] == [("demo-lora", "What is 17 plus 25?")]
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, TryScreen))  # a dismissed screen is popped after
        assert app.screen is monitor


async def test_try_is_refused_for_a_run_that_died(workdir):
    app = make_app(monitor="runs/demo-vera")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.exit_note is not None)
        await pilot.press("t")
        # the key handled: refused in a notification (no public accessor for them in Textual)
        await wait_until(pilot, lambda: any("Try needs a run" in n.message for n in app._notifications))
        assert app.screen is screen  # no dialog: nothing was saved to try
