"""Text for the monitor's panels and summary, from a `core.events.RunSummary` (no widgets here)."""

from __future__ import annotations

import math

from peft_advisor.core.events import RunSummary
from peft_advisor.core.units import fmt_bytes, fmt_file_bytes


def fmt(value, spec: str) -> str:
    if value is None or isinstance(value, bool):
        return "—"
    try:
        return spec.format(value)
    except (ValueError, TypeError):
        return str(value)


def escape(text: str) -> str:
    return text.replace("[", r"\[")


def downsample(points: list[tuple[int, float]], limit: int) -> tuple[list[float], list[float]]:
    """Average consecutive points into at most `limit` bins (keeps the curve's shape)."""
    if len(points) <= limit:
        return [float(p[0]) for p in points], [p[1] for p in points]
    size = len(points) / limit
    xs, ys = [], []
    for i in range(limit):
        chunk = points[int(i * size) : int((i + 1) * size)] or [points[-1]]
        xs.append(sum(p[0] for p in chunk) / len(chunk))
        ys.append(sum(p[1] for p in chunk) / len(chunk))
    return xs, ys


def fmt_duration(seconds: float | None) -> str:
    """A negative time (clocks that moved back, a hand-edited file) is unknown, not `-1h59m`."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "—"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


def summary_text(v: RunSummary, exit_note: str | None) -> str:
    """The final summary: status, losses, accuracy, adapter size, wall time, peak vs estimate."""
    if exit_note:
        return f"[b red]✗ {escape(exit_note)}[/]"
    if not v.done:
        return ""
    mark = {"ok": "[b green]✓ ok[/]", "cancelled": "[b yellow]■ cancelled[/]"}.get(v.status, f"[b red]✗ {v.status}[/]")
    acc = v.eval_accuracies[-1][1] if v.eval_accuracies else None
    peak, est = v.mem_peak_bytes, v.estimate_peak_bytes
    ratio = f" ({peak / est:.0%})" if peak is not None and est else ""
    lines = [
        f"{mark} · final loss {fmt(v.final_loss, '{:.4f}')} · best eval {fmt(v.best_eval_loss, '{:.4f}')}"
        + (f" · eval acc {acc:.0%}" if acc is not None else ""),
        f"adapter {fmt_file_bytes(v.adapter_bytes)} · wall {fmt_duration(v.wall_s)} · "
        f"peak {fmt_bytes(peak)} vs est. {fmt_bytes(est)}{ratio}",
    ]
    if v.message:
        lines.append(escape(v.message))
    return "\n".join(lines)
