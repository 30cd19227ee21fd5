"""Speed of the terminal UI, measured on a real pseudo-terminal (a script, not a timed test).

1. First paint: `python -m peft_advisor` is started in a pty; the time until the advisor's
   navigation bar has been written to the terminal. Target: < 1 s.
2. Live run: the monitor follows a run whose (fake) trainer emits 10 step events a second.
   Measured: the UI process's CPU time over the window (target < 5 % of one core), and for each
   step the delay from the event's timestamp to the moment the progress line shows that step or
   a later one (target: every one within 0.5 s).

Usage:
    python bench/tui_speed.py [--seconds 20] [--rate 10]
"""

from __future__ import annotations

import argparse
import os
import pty
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROGRESS = re.compile(r"step \d+/\d+ · ")  # the monitor's progress line (log lines read "step N/M loss")
FAKE_TRAINER = ROOT / "tests" / "fixtures" / "fake_trainer.py"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}


class PtyApp:
    """A child process on a pty whose output is read continuously (a terminal never blocks it)."""

    def __init__(self, argv: list[str]):
        self.t0 = time.time()
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child: size the terminal before the app starts (no resize at start-up)
            _set_size(0, 30, 100)
            os.execvpe(argv[0], argv, ENV)
        self.buffer = b""
        self.seen: dict[str, float] = {}
        self.patterns: list[re.Pattern] = []
        self._stop = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self._stop:
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                return
            now = time.time()
            self.buffer = (self.buffer + chunk)[-200_000:]
            text = chunk.decode("utf-8", "replace")
            for pattern in self.patterns:
                for match in pattern.finditer(text):
                    self.seen.setdefault(match.group(0), now)

    def wait_for(self, pattern: str, timeout: float = 20.0) -> float:
        """Seconds from process start until `pattern` was written to the terminal."""
        regex = re.compile(pattern)
        self.patterns.append(regex)
        deadline = time.time() + timeout
        while time.time() < deadline:
            hits = [t for key, t in self.seen.items() if regex.fullmatch(key)]
            if hits:
                return min(hits) - self.t0
            time.sleep(0.01)
        raise TimeoutError(f"{pattern!r} not seen within {timeout} s")

    def cpu_s(self) -> float:
        """User + system CPU seconds of the child so far (from /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def quit(self) -> None:
        try:
            os.write(self.fd, b"\x11")  # ctrl+q
            for _ in range(50):
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    break
                time.sleep(0.1)
            else:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
        except (OSError, ChildProcessError):
            pass
        self._stop = True


def _set_size(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


HELLO = """
from textual.app import App
from textual.widgets import Footer, Static
class Hello(App):
    def compose(self):
        yield Static("F2 Advisor")
        yield Footer()
Hello().run()
"""


def first_paint(argv: list[str] | None = None) -> float:
    app = PtyApp(argv or [sys.executable, "-m", "peft_advisor"])
    try:
        return app.wait_for(r"F2 Advisor")
    finally:
        app.quit()


def live_run(seconds: float, rate: float) -> dict:
    steps = int(seconds * rate) + int(4 * rate)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "bench-run"
        run_dir.mkdir()
        with open(run_dir / "train.log", "wb") as log:
            trainer = subprocess.Popen(
                [sys.executable, str(FAKE_TRAINER), "x", "--run-dir", str(run_dir), "--steps", str(steps),
                 "--interval", str(1 / rate), "--eval-every", "50", "--label", "peft_advisor.train"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        (run_dir / "run.json").write_text(f'{{"pid": {trainer.pid}}}\n')
        code = f"from peft_advisor.tui.app import run_app; run_app(monitor={str(run_dir)!r})"
        app = PtyApp([sys.executable, "-c", code])
        try:
            app.patterns.append(PROGRESS)
            app.wait_for(r"step [1-9]\d*/\d+ · ", timeout=30)
            time.sleep(2.0)  # past start-up: measure the steady state only
            cpu0, wall0 = app.cpu_s(), time.time()
            time.sleep(seconds)
            cpu1, wall1 = app.cpu_s(), time.time()
            time.sleep(1.0)
        finally:
            app.quit()
            trainer.send_signal(signal.SIGINT)
            trainer.wait(10)
        import json

        written = {}
        for line in (run_dir / "events.jsonl").read_text().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("kind") == "step" and wall0 <= ev["t"] <= wall1:
                written[ev["step"]] = ev["t"]
        # An event is shown once the progress line shows its step or a later one (a batch of
        # three steps is drawn once, with the last step's number).
        shown = sorted((t, int(key.split()[1].split("/")[0])) for key, t in app.seen.items() if PROGRESS.fullmatch(key))
        delays, missed = [], 0
        for step, t_written in written.items():
            t_seen = next((t for t, s in shown if s >= step and t >= t_written), None)
            if t_seen is None:
                missed += 1
            else:
                delays.append(t_seen - t_written)
        delays.sort()
        return {
            "cpu_pct_of_one_core": 100 * (cpu1 - cpu0) / (wall1 - wall0),
            "events_in_window": len(written),
            "steps_shown": len(delays),
            "steps_not_shown": missed,
            "delay_median_s": delays[len(delays) // 2] if delays else None,
            "delay_p95_s": delays[int(len(delays) * 0.95)] if delays else None,
            "delay_max_s": delays[-1] if delays else None,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the measured window")
    parser.add_argument("--rate", type=float, default=10.0, help="step events per second")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (other work slows every figure)")
    paints = [first_paint() for _ in range(5)]
    hello = [first_paint([sys.executable, "-c", HELLO]) for _ in range(5)]
    print(f"first paint: {min(paints):.2f} s best, {sorted(paints)[2]:.2f} s median, {max(paints):.2f} s worst of 5 "
          f"(target < 1 s); a two-widget Textual hello-world here: {sorted(hello)[2]:.2f} s median")
    result = live_run(args.seconds, args.rate)
    print(f"live run at {args.rate:g} events/s for {args.seconds:g} s:")
    print(f"  UI CPU: {result['cpu_pct_of_one_core']:.1f} % of one core (target < 5 %)")
    print(f"  step events written {result['events_in_window']}, shown {result['steps_shown']}, "
          f"not shown {result['steps_not_shown']}")
    if result["delay_max_s"] is not None:
        print(f"  event → screen delay: median {result['delay_median_s']:.3f} s, "
              f"p95 {result['delay_p95_s']:.3f} s, max {result['delay_max_s']:.3f} s (target every one < 0.5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
