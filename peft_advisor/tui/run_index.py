"""The run folders under an output root, each summarised from its events (no Textual here).

A run folder is what `core.run_folder.is_run_folder` says (it holds `events.jsonl` or
`run.json`), the same test `peft-advisor monitor` and the monitor screen apply. Reading is
the same fold the monitor and `peft-advisor monitor` use (`core.events.summarize`). A bench
folder is one holding `bench.json` (`peft-advisor bench`'s output).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from peft_advisor.core import run_folder as rf
from peft_advisor.core.bench import BenchResult
from peft_advisor.core.events import RunSummary
from peft_advisor.tui.services import run_pid, trainer_alive

TIMED = (rf.EVENTS, rf.RUN_JSON, rf.RECIPE)  # the newest of these dates a run in the list


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
    runs = [read_run(p) for p in root.iterdir() if rf.is_run_folder(p)]
    return sorted(runs, key=lambda r: r.mtime, reverse=True)


def read_run(path: Path) -> RunInfo:
    summary = rf.read_summary(path)
    mtimes = [(path / m).stat().st_mtime for m in TIMED if (path / m).exists()]
    return RunInfo(
        path=path,
        summary=summary,
        alive=trainer_alive(run_pid(path) or summary.pid) if not summary.done else False,
        mtime=max(mtimes, default=0.0),
        method=summary.method or _recipe_method(path / rf.RECIPE),
        adapter_bytes=summary.adapter_bytes or _file_size(path / "adapter_model.safetensors"),
    )


def _recipe_method(path: Path) -> str | None:
    """The method named in a recipe, read loosely: a broken recipe still lists its run."""
    from peft_advisor.core.recipe import toml_loads  # deep nesting is a ValueError there

    try:
        name = toml_loads(path.read_text(encoding="utf-8")).get("method", {}).get("name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


# ---------------------------------------------------------------- bench folders

BENCH_FILE = "bench.json"


@dataclass
class BenchInfo:
    """A folder `peft-advisor bench` wrote (it holds bench.json), as the Runs screen lists it."""

    path: Path
    result: BenchResult | None
    error: str | None
    mtime: float


def load_bench(path: Path) -> BenchResult:
    """bench.json in `path`, read back; OSError, ValueError, KeyError or TypeError when it is not one."""
    try:
        data = json.loads((Path(path) / BENCH_FILE).read_text(encoding="utf-8"))
    except RecursionError:  # nested past Python's stack: as unreadable as any other bad JSON
        raise ValueError("nested too deeply") from None
    if not isinstance(data, dict):
        raise ValueError("not a bench result")
    return BenchResult.from_dict(data)


def scan_benches(root: Path) -> list[BenchInfo]:
    """`root` itself and every folder directly under it that holds bench.json, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in (root, *root.iterdir()) if p.is_dir() and (p / BENCH_FILE).is_file()]
    return sorted((read_bench(p) for p in found), key=lambda b: b.mtime, reverse=True)


def read_bench(path: Path) -> BenchInfo:
    try:
        result, error = load_bench(path), None
    except (OSError, ValueError, KeyError, TypeError) as err:
        result, error = None, str(err) or type(err).__name__
    mtime = _mtime(path / BENCH_FILE)
    return BenchInfo(path=path, result=result, error=error, mtime=mtime)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
