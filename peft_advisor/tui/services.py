"""What the UI needs from the outside world, injectable for tests (httpie's `Environment` idea).

The real app probes NVML and launches the real trainer; tests pass a fake probe and a launcher
that runs `tests/fixtures/fake_trainer.py`. Screens reach these only through `app.services`.
"""

from __future__ import annotations

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


def _real_try_argv(run_dir: Path, prompt: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "peft_advisor", "try", str(run_dir), prompt, "--json"]


@dataclass
class Services:
    """The probe, the launcher and where runs live."""

    prober: Any = field(default_factory=_real_prober)
    """A `peft_advisor.probe.Prober`; its `snapshot()` is called from a thread every second."""
    start_run: Callable[[Path, Path], Any] = _real_start
    """`(recipe_path, run_dir) -> launch.Launched`; the child must outlive the UI (own session)."""
    stop_run: Callable[[Path], None] = _real_stop
    """Asks the run in `run_dir` to stop gracefully (SIGINT to the pid in run.json)."""
    try_argv: Callable[[Path, str], list[str]] = _real_try_argv
    """The `peft-advisor try RUN_DIR PROMPT --json` command line the Try dialog runs."""
    output_root: Path = field(default_factory=lambda: Path("runs"))
    """Folder whose sub-folders are run folders (the Runs screen lists them)."""


def run_pid(run_dir: Path) -> int | None:
    """The trainer's pid as the launcher recorded it in run.json, or None."""
    from peft_advisor.core.run_folder import read_run_json, valid_pid

    pid = read_run_json(run_dir).get("pid")
    return pid if valid_pid(pid) else None


def trainer_alive(pid: int | None) -> bool:
    """True while that pid is a live trainer (not a zombie, not a reused pid of another program)."""
    from peft_advisor.core.run_folder import trainer_alive as alive

    return alive(pid)
