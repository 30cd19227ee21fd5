"""The monitor: one run folder, live (or finished), drawn from its events.jsonl and train.log.

A thread worker polls a `core.watch.RunWatcher` (the one watcher `peft-advisor monitor` and
`bench` use too) every 0.3 s, or at once while a large file is still being read, and posts one
batch per poll; the handler folds the batch into a `core.events.RunSummary` (the same fold the
CLI's `monitor` uses) and redraws inside `batch_update()`. The watcher decides when the run is
over. The plot is redrawn at most every few seconds however fast events arrive; the numbers
every tick. GPU memory comes from NVML once
a second while the run is live. The trainer is never our responsibility to keep alive: quitting
the UI leaves it running, and `follow()` re-attaches to it later.
"""

from __future__ import annotations

import time
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import get_current_worker
from textual_plotext import PlotextPlot

from peft_advisor.core.events import RunSummary, finite_points
from peft_advisor.core.units import fmt_bytes
from peft_advisor.core.watch import RunWatcher, check_folder, overlong_note
from peft_advisor.tui.messages import GpusProbed, TrainingEnded, TrainingEventsReceived
from peft_advisor.tui.run_text import downsample, escape, fmt, fmt_duration, summary_text
from peft_advisor.tui.widgets.budget_bar import BudgetBar
from peft_advisor.tui.widgets.log_tail import LogTail
from peft_advisor.tui.widgets.metric_panel import Metric, MetricPanel
from peft_advisor.tui.widgets.progress_line import ProgressLine
from peft_advisor.tui.widgets.nav_bar import NavBar

NO_RUN = "No run yet: launch one from the Recipe screen (F3) or open one from Runs (F5)."
POLL_S = 0.3  # ~0.25 s: each event on screen within ~0.35 s, ~3 frames a second at most
PLOT_EVERY_S = 3.0  # a plotext redraw costs ~20-40 ms: at most every 3 s while live; the numbers every tick
PLOT_POINTS = 400  # more points than this are averaged into bins: plotext slows with thousands


class MonitorScreen(Screen):
    """Live panels for one run folder."""

    CSS_PATH = "monitor.tcss"
    BINDINGS = [
        Binding("s", "stop", "Stop run"),
        Binding("l", "toggle_log", "Show/hide log"),
        Binding("t", "try_it", "Try it"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.run_dir: Path | None = None
        self.launched = None
        """The `launch.Launched` when this UI started the run (it knows the exit code)."""
        self.view = RunSummary()
        self.exit_note: str | None = None
        """Set when the trainer died without an `end` event."""
        self.gpu = None
        self._plot_dirty = False
        self._texts: dict[str, str] = {}
        """Last text of each Static, so unchanged ones are not redrawn."""

    def compose(self) -> ComposeResult:
        yield NavBar("monitor")
        yield Static(NO_RUN, id="run-title")
        yield ProgressLine(id="progress")
        with Horizontal(id="main"):
            yield PlotextPlot(id="loss-plot")
            with Vertical(id="side"):
                yield MetricPanel(id="metrics")
                yield BudgetBar(id="mem-bar")
        yield Static("", id="summary")
        log = LogTail(id="log")
        log.border_title = "train.log"
        yield log
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(PLOT_EVERY_S, self._redraw_plot_if_dirty)
        self.set_interval(1.0, self._maybe_probe_gpu)
        self.set_interval(1.0, self._tick)
        self._draw_plot()

    # ------------------------------------------------------------------ following a run

    def follow(self, run_dir: Path, launched=None) -> None:
        """Show `run_dir` from its first event; `launched` is set when this UI started the run."""
        self.workers.cancel_group(self, "trainer")
        self.run_dir, self.launched = Path(run_dir), launched
        self.view, self.exit_note, self.gpu = RunSummary(), None, None
        self.query_one(LogTail).clear()
        self._texts.clear()
        self.query_one("#summary", Static).update("")
        self.query_one("#summary").display = False
        self._refresh_panels()
        self._draw_plot()
        self._tail_events(self.run_dir, launched)

    @work(thread=True, group="trainer", exclusive=True, exit_on_error=False, description="watch the run")
    def _tail_events(self, run_dir: Path, launched) -> None:
        """Post each tick's new events and log lines until the watcher says the run is over."""
        worker = get_current_worker()
        problem = None if launched is not None else check_folder(run_dir)
        if problem:
            self.post_message(TrainingEnded(run_dir, None, problem))
            return
        watcher = RunWatcher(run_dir, launched, log=True, calibrate="tui" if launched is not None else None)
        while not worker.is_cancelled:
            try:
                batch = watcher.poll()
            except OSError as err:  # events.jsonl unreadable, or a folder or a FIFO in its place
                self.post_message(TrainingEnded(run_dir, watcher.returncode, f"cannot read events.jsonl: {err.strerror or err}"))
                return
            if batch.events or batch.log_lines:
                self.post_message(TrainingEventsReceived(run_dir, batch.events, batch.log_lines))
            if batch.outcome is not None:
                self._ended(watcher, batch.outcome)
                return
            if not batch.more:
                time.sleep(POLL_S)

    def _ended(self, watcher: RunWatcher, outcome) -> None:
        """From the worker thread: a died run's note, and the watcher's remarks (each said once)."""
        if outcome.died:
            note = _death_note(watcher, outcome)
            self.post_message(TrainingEnded(watcher.run_dir, outcome.returncode, note))
        for remark in filter(None, [*outcome.notes, overlong_note(watcher.overlong)]):
            self.notify(remark[:1].upper() + remark[1:], severity="warning")  # thread-safe

    def on_training_events_received(self, message: TrainingEventsReceived) -> None:
        if message.run_dir != self.run_dir:
            return  # a late batch from a run we stopped following
        with self.app.batch_update():
            for event in message.events:
                self.view.apply(event)
            if message.log_lines:
                self.query_one(LogTail).append_lines(message.log_lines, now=self.view.done)
            if message.events:
                self._refresh_panels()
                self._plot_dirty = True
                if self.view.done:
                    self._redraw_plot_if_dirty()

    def on_training_ended(self, message: TrainingEnded) -> None:
        if message.run_dir != self.run_dir or self.view.done:
            return
        self.exit_note = message.message
        self._refresh_panels()
        self.query_one(LogTail).refresh()

    # ------------------------------------------------------------------ drawing

    def _refresh_panels(self) -> None:
        v = self.view
        self._set_text("#run-title", self._title())
        self._refresh_progress()
        acc = v.eval_accuracies[-1][1] if v.eval_accuracies else None
        gpu = self.gpu if self._live() else None
        gpu_text = "—" if gpu is None else (f"{fmt(gpu.utilization_pct, '{}%')} {fmt(gpu.temperature_c, '{}°C')} "
                                           f"{fmt(gpu.power_w, '{:.0f} W')}")
        self.query_one(MetricPanel).rows = (
            Metric("loss", fmt(v.last_loss, "{:.4f}"), tuple(loss for _, loss in v.losses[-120:])),
            Metric("eval loss", fmt(v.last_eval_loss, "{:.4f}") + (f" · acc {acc:.0%}" if acc is not None else "")),
            Metric("lr", fmt(v.lr, "{:.2e}")),
            Metric("grad norm", fmt(v.grad_norm, "{:.3f}")),
            Metric("tokens/s", fmt(v.tokens_per_s, "{:,.0f}")),
            Metric("GPU", gpu_text),
        )
        self._refresh_memory()
        self._refresh_summary()

    def _refresh_progress(self) -> None:
        """The progress line; also every second while the run is live, so its clock keeps running
        through an evaluation or a slow step (events come only at their end)."""
        v = self.view
        progress = self.query_one(ProgressLine)
        live = self._live()
        if v.evaluating:  # the evaluation's own progress: the baseline can take minutes before step 1
            progress.fraction = min(1.0, v.eval_done / v.eval_total) if v.eval_total and v.eval_done is not None else None
            step_text = f"evaluating ({v.eval_label}) {fmt(v.eval_done, '{}')}/{fmt(v.eval_total, '{}')}"
        else:
            progress.fraction = v.progress
            step_text = f"step {v.step}/{v.total_steps}" if v.total_steps else f"step {v.step}"
        eta = f" · ETA {fmt_duration(v.eta_s)}" if live else ""
        wall = v.elapsed_s(time.time()) if live else v.wall_s
        progress.caption = f"{step_text} · {fmt_duration(wall)}{eta}"

    def _tick(self) -> None:
        if self._live() and self.view.start_t is not None:
            self._refresh_progress()

    def _title(self) -> str:
        if self.run_dir is None:
            return NO_RUN
        v = self.view
        status = "died" if self.exit_note else "evaluating" if v.evaluating else v.status
        colour = {"ok": "green", "running": "cyan", "evaluating": "cyan", "cancelled": "yellow", "waiting": "cyan"}.get(status, "red")
        head = " · ".join(str(p) for p in (self.run_dir, v.method, v.model, v.device) if p)
        return f"[b]{escape(head)}[/b] · [{colour}]{status}[/]"

    def _refresh_memory(self) -> None:
        v = self.view
        membar = self.query_one("#mem-bar", BudgetBar)
        if not str(v.device or "").startswith("cuda"):
            membar.show([], None, "memory: " + ("CPU run, no GPU memory" if v.device else "—"))
            return
        reserved = v.mem_reserved_bytes or 0
        parts = [("torch reserved", reserved)]
        gpu = self.gpu if self._live() else None
        if gpu is not None and gpu.used_bytes is not None:
            parts.append(("other (NVML)", max(0, gpu.used_bytes - reserved)))
        caption = f"peak {fmt_bytes(v.mem_peak_bytes)} / est. {fmt_bytes(v.estimate_peak_bytes)}"
        membar.show(parts, v.estimate_peak_bytes, caption)

    def _refresh_summary(self) -> None:
        text = summary_text(self.view, self.exit_note)
        if text != self._texts.get("#summary"):
            self._texts["#summary"] = text
            summary = self.query_one("#summary", Static)
            summary.display = bool(text)
            summary.update(text)

    def _set_text(self, selector: str, text: str) -> None:
        """Update a one-line Static only when its text changed, without a layout pass (its size
        is fixed by CSS): at 10 events a second, layout passes would cost most of the CPU."""
        if self._texts.get(selector) != text:
            self._texts[selector] = text
            self.query_one(selector, Static).update(text, layout=False)

    def _redraw_plot_if_dirty(self) -> None:
        if self._plot_dirty:
            self._plot_dirty = False
            self._draw_plot()

    def _draw_plot(self) -> None:
        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_figure()
        plt.title("loss")
        plt.xlabel("step")
        width = max(10, plot.size.width)
        losses, evals = finite_points(self.view.losses), finite_points(self.view.eval_losses)
        if losses:
            xs, ys = downsample(losses, min(PLOT_POINTS, 2 * width))
            plt.plot(xs, ys, label="train", marker="hd")
        if evals:
            xs, ys = zip(*evals)
            plt.scatter(list(xs), list(ys), label="eval", marker="●")
        plot.refresh()

    # ------------------------------------------------------------------ GPU and stop

    def _live(self) -> bool:
        return self.run_dir is not None and not self.view.done and not self.exit_note

    def _maybe_probe_gpu(self) -> None:
        device = str(self.view.device or "")
        if self._live() and device.startswith("cuda"):
            index = int(device.partition(":")[2] or 0)
            self._probe_gpu(index)

    @work(thread=True, group="gpu", exclusive=True, exit_on_error=False, description="NVML snapshot")
    def _probe_gpu(self, index: int) -> None:
        result = self.app.services.prober.snapshot()
        gpu = next((g for g in result.gpus if g.index == index), None)
        self.post_message(GpusProbed(gpu))

    def on_gpus_probed(self, message: GpusProbed) -> None:
        message.stop()
        self.gpu = message.result
        self._refresh_panels()

    def action_toggle_log(self) -> None:
        log = self.query_one(LogTail)
        log.display = not log.display

    def action_try_it(self) -> None:
        """The tuned model beside its base, for a run that saved its weights (ended ok or cancelled)."""
        from peft_advisor.tui.screens.try_it import TryScreen

        if self.run_dir is None or self.view.status not in ("ok", "cancelled"):
            self.notify("Try needs a run that ended ok or cancelled.", severity="warning")
            return
        self.app.push_screen(TryScreen(self.run_dir))

    def action_stop(self) -> None:
        from peft_advisor.tui.screens.confirm import ConfirmScreen

        if not self._live():
            self.notify("No live run to stop.", severity="warning")
            return
        question = f"Stop the run in {self.run_dir}?\nThe trainer saves a checkpoint and ends as 'cancelled'."
        self.app.push_screen(ConfirmScreen(question), self._stop_confirmed)

    def _stop_confirmed(self, yes: bool | None) -> None:
        if not yes or self.run_dir is None:
            return
        try:
            sent = self.app.services.stop_run(self.run_dir)
        except OSError as err:  # the OS refused the signal
            self.notify(f"Could not stop: {err}", severity="error")
            return
        if sent is False:
            self.notify("The trainer is not running any more.", severity="warning")
        else:
            self.notify("Stop requested: waiting for the checkpoint and the end event…")


# ---------------------------------------------------------------------- helpers


def _death_note(watcher: RunWatcher, outcome) -> str:
    """Why the trainer is gone without an `end` event, in one line: a child of ours that failed
    during setup never made the run folder, and its log says why."""
    launched = watcher.launched
    if not watcher.run_dir.exists() and getattr(launched, "staging_dir", None) is not None:
        from peft_advisor.core.errors import UserError
        from peft_advisor.launch import check_started

        try:
            check_started(launched)  # raises the child's one-line reason, and removes its staging folder
        except UserError as err:
            return f"not started (exit code {outcome.returncode}): {err}"
    return f"{outcome.message}; see the log below"
