"""The one run watcher: follows a run folder to its end for every front end (`peft-advisor train`
and `monitor`, the app's monitor screen, `bench`).

Each `poll()` returns what was appended since the last one (events, and train.log lines when
asked) and, once the run is over, its `Outcome`. Over means one of two things, judged only when
the files were read to their end, so a large file or a slow reader never turns a finished run
into a dead one:

* the last event read is an `end` (its status gives the exit code), or
* the trainer is gone (checked before the read, so everything it wrote was read) and wrote no
  `end`: a synthesized "died" outcome with its exit code when known and train.log's last lines.

Liveness comes from the launched child when we started it (its `running()` and return code),
else from the pid in run.json (`run_folder.trainer_alive`). A run we launched that ended is
kept as local calibration here, and only here.

Pure: imports neither torch nor textual.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peft_advisor.core import run_folder as rf
from peft_advisor.core.errors import ExitCode
from peft_advisor.core.events import END_STATUSES, Event, EventTail
from peft_advisor.core.tail import MAX_LINE_BYTES, LineTail, last_lines

LOG_START_BYTES = 16_384  # re-attaching shows the end of a long log, not all of it
REAP_S = 60.0  # a child exits right after its `end` event; wait this long so no zombie is left


@dataclass
class Outcome:
    """How a run ended: its `end` event's status, or "died" when the trainer left none."""

    status: str
    exit_code: int
    returncode: int | None = None  # the child's own exit code, when we launched it
    message: str | None = None  # died: why, in one line
    log_lines: list[str] = field(default_factory=list)  # died: the last lines of train.log
    calibration: Any = None  # the calibration record kept from this run, if any
    notes: list[str] = field(default_factory=list)  # one-line remarks for stderr

    @property
    def died(self) -> bool:
        return self.status == "died"


@dataclass
class Batch:
    """One poll: what arrived, and the outcome once the run is over."""

    events: list[Event]
    log_lines: list[str]
    outcome: Outcome | None
    more: bool  # the files hold more already: poll again without waiting


def died_message(returncode: int | None) -> str:
    """The one wording of a trainer gone without an `end` event."""
    how = f"exited (exit code {returncode})" if returncode is not None else "is gone"
    return f"the trainer {how} without an end event"


def overlong_note(count: int) -> str | None:
    """Said once per watch: lines dropped for their length are no silent loss."""
    if not count:
        return None
    lines = "line" if count == 1 else "lines"
    return f"{count} over-long {lines} skipped in {rf.EVENTS} (longer than {MAX_LINE_BYTES // 2**20} MiB)"


def check_folder(run_dir) -> str | None:
    """Why `run_dir` cannot be watched (one line), or None when it is a run folder. An
    events.jsonl that is there but no regular file (a FIFO) passes: the reader says what it is."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return f"{run_dir}: no such run folder"
    if not rf.is_run_folder(run_dir) and not (run_dir / rf.EVENTS).exists():
        return f"{run_dir}: not a run folder (no {rf.EVENTS} or {rf.RUN_JSON})"
    return None


class RunWatcher:
    """Follows one run folder; see the module's docstring.

    `launched` is our own child (a `launch.Launched`: `running()`, `process`, `log_path`,
    `staging_dir`); `offset` skips the events written before it (a resume); `log=True` also
    returns new train.log lines; `calibrate` names the source ("train", "tui", "bench") under
    which a run we launched that ended is kept as calibration, on `gpu_name` (None: probed).
    """

    def __init__(self, run_dir, launched=None, *, offset: int = 0, log: bool = False,
                 calibrate: str | None = None, gpu_name: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.launched = launched
        self.events = EventTail(self.run_dir / rf.EVENTS)
        self.events.offset = offset
        self.log = LineTail(*self.log_paths(), start_bytes=LOG_START_BYTES, strict=False) if log else None
        self.calibrate, self.gpu_name = calibrate, gpu_name
        self.outcome: Outcome | None = None
        self._end: Event | None = None  # the last `end` read, unless a `start` (a resume) came after

    @property
    def overlong(self) -> int:
        return self.events.overlong

    def log_paths(self) -> list[Path]:
        """train.log in the run folder, else where the launcher put it (its staging folder)."""
        staged = getattr(self.launched, "log_path", None) if getattr(self.launched, "staging_dir", None) else None
        return [self.run_dir / rf.LOG, *([Path(staged)] if staged else [])]

    def alive(self) -> bool:
        if self.launched is not None:
            return self.launched.running()
        return rf.trainer_alive(rf.read_run_json(self.run_dir).get("pid"))

    @property
    def returncode(self) -> int | None:
        return getattr(getattr(self.launched, "process", None), "returncode", None)

    def poll(self) -> Batch:
        """What arrived since the last poll (one bounded read of each file), and the outcome once
        the run is over. Raises OSError when events.jsonl cannot be read (a folder, a FIFO)."""
        if self.outcome is not None:
            return Batch([], [], self.outcome, False)
        alive = self.alive()  # before reading: whatever a dead trainer wrote is read below
        events = self.events.poll(final=not alive)
        for event in events:
            kind = event.get("kind")
            self._end = event if kind == "end" else (None if kind == "start" else self._end)
        lines = self.log.poll(final=not alive) if self.log is not None else []
        drained = self.events.at_eof and (self.log is None or self.log.at_eof)
        if drained and self._end is not None:
            self.outcome = self._ended(self._end)
        elif drained and not alive:
            self.outcome = self._died()
        return Batch(events, lines, self.outcome, not drained)

    def _ended(self, end: Event) -> Outcome:
        status = end.get("status") if end.get("status") in END_STATUSES else "error"
        outcome = Outcome(status, rf.exit_code(status))
        if self.launched is not None:
            self._reap(outcome)
            outcome.returncode = self.returncode
        if self.calibrate and self.launched is not None:
            outcome.calibration = self._keep_as_calibration(outcome)
        return outcome

    def _died(self) -> Outcome:
        code = self.returncode
        return Outcome("died", int(ExitCode.TRAIN_FAILED), code, died_message(code), last_lines(*self.log_paths()))

    def _reap(self, outcome: Outcome) -> None:
        import subprocess

        try:
            self.launched.process.wait(timeout=REAP_S)
        except subprocess.TimeoutExpired:
            outcome.notes.append(f"trainer pid {self.launched.process.pid} still running after its end event")

    def _keep_as_calibration(self, outcome: Outcome):
        """A GPU run that ended becomes local calibration for later estimates (the store decides
        which qualify); it never fails the run, so a store it cannot write is only a note."""
        from peft_advisor.calibration_store import record_from_run_dir

        try:
            return record_from_run_dir(self.run_dir, self.gpu_name, source=self.calibrate)
        except (OSError, ValueError) as err:
            outcome.notes.append(f"note: run not kept as calibration ({err})")
            return None
