"""What the UI needs from the outside world, injectable for tests (httpie's `Environment` idea).

The real app probes NVML and launches the real trainer; tests pass a fake probe and a launcher
that runs `tests/fixtures/fake_trainer.py`. Screens reach these only through `app.services`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


def _real_prober():
    from peft_advisor.probe import NvmlProber

    return NvmlProber()


def _real_start(recipe_path: Path, run_dir: Path) -> Any:
    from peft_advisor import launch

    return launch.start(recipe_path, run_dir)


def _real_stop(run_dir: Path) -> None:
    from peft_advisor import launch

    launch.stop(run_dir)


@dataclass
class Services:
    """The probe, the launcher and where runs live."""

    prober: Any = field(default_factory=_real_prober)
    """A `peft_advisor.probe.Prober`; its `snapshot()` is called from a thread every second."""
    start_run: Callable[[Path, Path], Any] = _real_start
    """`(recipe_path, run_dir) -> Popen`; the child must outlive the UI (its own session)."""
    stop_run: Callable[[Path], None] = _real_stop
    """Asks the run in `run_dir` to stop gracefully (SIGINT to the pid in run.json)."""
    output_root: Path = field(default_factory=lambda: Path("runs"))
    """Folder whose sub-folders are run folders (the Runs screen lists them)."""


def run_pid(run_dir: Path) -> int | None:
    """The trainer's pid as the launcher recorded it in run.json, or None."""
    try:
        data = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
        return int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pid_alive(pid: int | None) -> bool:
    """True while a process with this pid exists (a zombie child counts as gone)."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a finished child we have not reaped yet is a zombie: treat it as gone
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
