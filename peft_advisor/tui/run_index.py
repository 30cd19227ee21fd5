"""The run folders under an output root, each summarised from its events (no Textual here).

A run folder is any sub-folder holding `events.jsonl`, `run.json` or `recipe.toml`. Reading is
the same fold the monitor and `peft-advisor monitor` use (`core.events.summarize`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from peft_advisor.core.events import RunSummary, read_events, summarize
from peft_advisor.tui.services import run_pid, trainer_alive

MARKERS = ("events.jsonl", "run.json", "recipe.toml")


@dataclass
class RunInfo:
    """One run folder as the Runs screen lists it."""

    path: Path
    summary: RunSummary
    alive: bool
    mtime: float
    method: str | None
    adapter_bytes: int | None

    @property
    def status(self) -> str:
        """The end status, `running` while the trainer lives, `died` when it is gone without one."""
        if self.summary.done:
            return self.summary.status
        return "running" if self.alive else ("died" if self.summary.events else "empty")

    @property
    def eval_accuracy(self) -> float | None:
        acc = self.summary.eval_accuracies
        return acc[-1][1] if acc else None


def scan_runs(root: Path) -> list[RunInfo]:
    """Every run folder directly under `root`, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [read_run(p) for p in root.iterdir() if p.is_dir() and any((p / m).exists() for m in MARKERS)]
    return sorted(runs, key=lambda r: r.mtime, reverse=True)


def read_run(path: Path) -> RunInfo:
    summary = summarize(read_events(path / "events.jsonl")[0])
    mtimes = [(path / m).stat().st_mtime for m in MARKERS if (path / m).exists()]
    return RunInfo(
        path=path,
        summary=summary,
        alive=trainer_alive(run_pid(path) or summary.pid) if not summary.done else False,
        mtime=max(mtimes, default=0.0),
        method=summary.method or _recipe_method(path / "recipe.toml"),
        adapter_bytes=summary.adapter_bytes or _file_size(path / "adapter_model.safetensors"),
    )


def _recipe_method(path: Path) -> str | None:
    """The method named in a recipe, read loosely: a broken recipe still lists its run."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        name = tomllib.loads(path.read_text(encoding="utf-8")).get("method", {}).get("name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None
