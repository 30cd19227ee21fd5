"""Try a finished run: one prompt, the tuned model's answer beside its base's.

The app never imports the training stack (it takes seconds and gigabytes), so the answers come from
`peft-advisor try RUN_DIR PROMPT --json` in a child process, run from a worker thread; the command
is `app.services.try_argv`, which tests replace with a stand-in.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

TRY_TIMEOUT_S = 600


class TryScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    TryScreen { align: center middle; background: $background 60%; }
    TryScreen > Vertical { width: 90%; height: 80%; border: thick $primary; background: $surface; padding: 0 1; }
    TryScreen Horizontal { height: 1fr; }
    TryScreen .answer { width: 1fr; height: 1fr; border: round $secondary; padding: 0 1; overflow-y: auto; }
    TryScreen #try-status { height: auto; color: $text-muted; }
    """
    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, run_dir: Path):
        super().__init__()
        self.run_dir = Path(run_dir)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"Try {self.run_dir.name}: type a prompt, Enter (greedy; Escape closes)", markup=False)
            yield Input(placeholder="What is 17 plus 25?", id="try-prompt")
            yield Static("", id="try-status", markup=False)
            with Horizontal():
                yield Static("tuned", id="try-tuned", classes="answer", markup=False)
                yield Static("base", id="try-base", classes="answer", markup=False)

    def on_mount(self) -> None:
        self.query_one("#try-prompt", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        prompt = event.value.strip()
        if not prompt:
            return
        self.query_one("#try-status", Static).update("generating with both models… (loading takes a while)")
        self.generate(prompt)

    @work(thread=True, exclusive=True, group="try", exit_on_error=False)
    def generate(self, prompt: str) -> None:
        argv = self.app.services.try_argv(self.run_dir, prompt)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=TRY_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as err:
            self.app.call_from_thread(self.show_error, f"could not run try: {err}")
            return
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            self.app.call_from_thread(self.show_error, lines[-1] if lines else f"try exited {done.returncode}")
            return
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            self.app.call_from_thread(self.show_error, "try printed no answer")
            return
        self.app.call_from_thread(self.show_answer, answer)

    def show_answer(self, answer: dict) -> None:
        self.query_one("#try-status", Static).update(f"prompt: {answer.get('prompt', '')}")
        self.query_one("#try-tuned", Static).update(f"tuned\n\n{answer.get('tuned', '')}")
        self.query_one("#try-base", Static).update(f"base\n\n{answer.get('base', '')}")

    def show_error(self, message: str) -> None:
        self.query_one("#try-status", Static).update(message)

    def action_close(self) -> None:
        self.dismiss(None)
