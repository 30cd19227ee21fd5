"""Messages that cross screens or threads ("messages up").

Facts are in the past tense (`GpusProbed`), requests end in `Requested`. Workers post these from
threads (`post_message` is thread-safe); handlers run on the UI thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.message import Message


@dataclass
class GpusProbed(Message):
    """One NVML probe finished (`result` is a `core.hardware.ProbeResult`)."""

    result: Any


@dataclass
class RecipeRequested(Message):
    """The advisor chose a method: open the recipe screen with this `core.recipe.Recipe`."""

    recipe: Any


@dataclass
class MonitorRequested(Message):
    """Show this run folder in the monitor (a run just launched, or one picked from the list)."""

    run_dir: Path
    launched: Any = None
    """The `launch.Launched` when this UI started the run (gives the exit code); None to re-attach."""


@dataclass
class TrainingEventsReceived(Message):
    """One tick of the tail worker: every event and log line that arrived since the last tick."""

    run_dir: Path
    events: list[dict]
    log_lines: list[str]


@dataclass
class TrainingEnded(Message):
    """The trainer process is gone. `returncode` is None when it was not our child (re-attached)."""

    run_dir: Path
    returncode: int | None
    message: str
