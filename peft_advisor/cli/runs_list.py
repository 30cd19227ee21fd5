"""`peft-advisor runs [FOLDER] [--json]`: the run folders under a folder, one line each.

The same folders the app's Runs screen lists (by default `runs`, where recipes send their runs),
found by the run-folder protocol (`core.run_folder.is_run_folder`) and read with the same fold of
events as `monitor` (`core.events.summarize`), so the three never disagree about a run. Reading
only: nothing here writes, and torch is never imported.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from peft_advisor.core import run_folder as rf
from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.events import RunSummary
from peft_advisor.core.units import fmt_bytes, fmt_file_bytes

DEFAULT_FOLDER = "runs"
"""Where runs go unless a recipe says otherwise (recipes' output.dir, the app's output root)."""
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors")


def register(sub) -> None:
    p = sub.add_parser("runs", help="list the run folders under a folder: status, steps, losses, memory, adapter")
    p.add_argument("folder", nargs="?", default=DEFAULT_FOLDER, metavar="FOLDER",
                   help=f"folder whose sub-folders are runs, or one run folder (default: {DEFAULT_FOLDER})")
    p.add_argument("--json", action="store_true", help="print JSON (a list, newest run first)")
    p.set_defaults(func=run_runs)


@dataclass
class RunRow:
    """One run folder, as the listing shows it."""

    path: Path
    summary: RunSummary
    status: str
    mtime_s: float
    saved_bytes: int | None

    def to_dict(self) -> dict:
        s = self.summary
        acc = s.eval_accuracies[-1][1] if s.eval_accuracies else None
        return {"run_dir": str(self.path), "name": self.path.name, "method": s.method, "model": s.model,
                "status": self.status, "step": s.step, "total_steps": s.total_steps,
                "last_loss": _finite(s.last_loss), "best_eval_loss": _finite(best_eval_loss(s)),
                "last_eval_loss": _finite(s.last_eval_loss), "eval_accuracy": _finite(acc),
                "peak_bytes": s.mem_peak_bytes, "estimate_peak_bytes": s.estimate_peak_bytes,
                "adapter_bytes": self.saved_bytes, "wall_s": _finite(s.wall_s)}


def run_runs(args) -> int:
    rows = list_runs(Path(args.folder), explicit=args.folder != DEFAULT_FOLDER)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    elif rows:
        print(format_table(rows))
    else:
        import sys

        print(f"peft-advisor: no run folders under {args.folder}", file=sys.stderr)
    return int(ExitCode.OK)


def list_runs(folder: Path, explicit: bool = True) -> list[RunRow]:
    """The run folders directly under `folder` (or `folder` itself when it is one), newest first.
    A FOLDER the user named must exist; the default one may not yet (no run made here)."""
    if not folder.is_dir():
        if explicit or folder.exists():
            raise UserError(f"{folder}: no such folder", ExitCode.USAGE)
        return []
    if rf.is_run_folder(folder):
        return [read_run(folder)]
    try:
        found = [p for p in folder.iterdir() if rf.is_run_folder(p)]
    except OSError as err:
        raise UserError(f"{folder}: cannot list it: {err.strerror or err}", ExitCode.USAGE) from None
    return sorted((read_run(p) for p in found), key=lambda r: r.mtime_s, reverse=True)


def read_run(path: Path) -> RunRow:
    summary = rf.read_summary(path)
    return RunRow(path=path, summary=summary, status=status_of(path, summary),
                  mtime_s=max((_mtime(path / m) for m in rf.MARKERS), default=0.0),
                  saved_bytes=_saved_bytes(path) or summary.adapter_bytes)


def status_of(path: Path, summary: RunSummary) -> str:
    """The end event's status; `running` while its trainer lives; `died` when it is gone without
    an end (the words of the app's Runs screen)."""
    if summary.done:
        return summary.status
    if rf.trainer_alive(rf.read_run_json(path).get("pid") or summary.pid):
        return "running"
    return "died" if summary.events else "empty"


def best_eval_loss(s: RunSummary) -> float | None:
    """The end event's figure, or the best eval so far for a run that has not ended (or died)."""
    if s.best_eval_loss is not None:
        return s.best_eval_loss
    finite = [loss for _, loss in s.eval_losses if _finite(loss) is not None]
    return min(finite) if finite else None


def _saved_bytes(path: Path) -> int | None:
    """The final adapter (or whole model) the run saved in its folder, when it got that far."""
    for name in WEIGHT_FILES:
        try:
            return (path / name).stat().st_size
        except OSError:
            continue
    return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _finite(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


# ---------------------------------------------------------------- the table

HEADER = ("run", "method", "status", "steps", "loss", "best eval", "accuracy", "peak / estimate", "adapter")


def format_table(rows: list[RunRow]) -> str:
    cells = [HEADER] + [_cells(r) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _cells(r: RunRow) -> tuple[str, ...]:
    s = r.summary
    acc = s.eval_accuracies[-1][1] if s.eval_accuracies else None
    steps = f"{s.step}/{s.total_steps}" if s.total_steps else str(s.step)
    peak = "—" if s.mem_peak_bytes is None else fmt_bytes(s.mem_peak_bytes)
    estimate = f" / {fmt_bytes(s.estimate_peak_bytes)}" if s.estimate_peak_bytes else ""
    return (r.path.name, s.method or "?", r.status, steps, _num(s.last_loss, ".4f"), _num(best_eval_loss(s), ".4f"),
            _num(None if acc is None else acc * 100, ".1f", "%"), peak + estimate, fmt_file_bytes(r.saved_bytes))


def _num(value, spec: str, unit: str = "") -> str:
    return format(value, spec) + unit if _finite(value) is not None else "—"
