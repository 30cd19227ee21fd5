"""Every method side by side: fits or not, peak against the budget, adapter size, trainable
parameters, quality evidence and the one speed figure (step time × LoRA's, as the CLI and the
matrix give it). The recommended row is starred; a tight fit says so; each ruled-out row says
why. Before a budget is known, each row says what the method needs.

`rows_from_advice` turns the core's `Advice` (plus the catalog) into plain rows, so the table
itself only draws. "On card" is what the budget is checked against: peak plus CUDA context.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable

from peft_advisor.core.units import fmt_bytes, fmt_count, fmt_file_bytes

COLUMNS = ("#", "Method", "Fits", "On card", "Adapter", "Trainable", "Quality", "Speed", "Why")


@dataclass
class MethodRow:
    """One method as the advisor shows it."""

    method: str
    name: str
    rank: int | None
    """1 = recommended; None when ruled out."""
    peak_bytes: int | None
    """On the card: the allocator's peak plus the CUDA context (what the budget is checked against)."""
    budget_bytes: int | None
    adapter_bytes: int | None
    trainable_params: int | None
    quality: int | None
    """1–5 relative to LoRA = 3 (catalog)."""
    speed: int | None
    time_vs_lora: float | None
    why: str
    """The first reason it ranks where it does, or why it is ruled out."""
    fit: str = "no"
    """"ok", "tight", "no" (ruled out) or "?" (no budget yet: `need_bytes` says what it needs)."""
    step_time: float | None = None
    """Step time × LoRA's at these settings (`recommend.speed_figure`)."""
    need_bytes: int | None = None
    """The smallest card on which it fits with room (no budget yet)."""
    reasons: list[str] = field(default_factory=list)
    settings: object = None
    """The `estimate.Settings` that fit (or the plain ones, when ruled out)."""
    estimate: object = None
    method_info: object = None
    """The catalog's `Method` (evidence, sources)."""

    @property
    def fits(self) -> bool:
        return self.rank is not None


def rows_from_advice(advice, catalog: dict) -> list[MethodRow]:
    """Recommended methods best first, then the ruled-out ones (closest miss first)."""
    budget = advice.budget.vram_bytes
    rows = []
    for rank, rec in enumerate(advice.recommendations, start=1):
        why = rec.reasons[0] if rank == 1 else ("to fit: " + "; ".join(rec.adjustments) if rec.adjustments else "fits as asked")
        if rec.fit == "tight":
            why = next(r for r in rec.reasons if r.startswith("tight"))
        row = _row(rec.method, rec.name, catalog, rank, rec.estimate, budget, why, list(rec.reasons), rec.settings)
        rows.append(replace(row, fit=rec.fit))
    for out in advice.ruled_out:
        est = out.closest
        rows.append(_row(out.method, out.name, catalog, None, est, budget, out.reason, [out.reason],
                         getattr(est, "settings", None)))
    return rows


def rows_from_needs(needs: dict, catalog: dict) -> list[MethodRow]:
    """No budget yet: every method with what it needs at least (`core.advise.needs`), least first."""
    rows = []
    for method, (need, est) in sorted(needs.items(), key=lambda item: item[1][0]):
        why = f"needs {fmt_bytes(need)}"
        reasons = [f"needs a card of {fmt_bytes(need)} at least, with checkpointing and the smallest micro-batch "
                   "if that is what it takes; type the budget to rank the methods"]
        row = _row(method, catalog[method].name, catalog, None, est, None, why, reasons, est.settings)
        rows.append(replace(row, fit="?", need_bytes=need))
    return rows


def _row(method, name, catalog, rank, est, budget_bytes, why, reasons, settings) -> MethodRow:
    info = catalog.get(method)
    return MethodRow(
        method=method,
        name=name,
        rank=rank,
        peak_bytes=getattr(est, "total_bytes", None),
        budget_bytes=budget_bytes,
        adapter_bytes=getattr(est, "adapter_bytes", None),
        trainable_params=getattr(est, "trainable_params", None),
        quality=_quality(info, settings),
        speed=getattr(info, "speed", None),
        time_vs_lora=getattr(info, "time_vs_lora", None),
        step_time=_step_time(method, settings, est),
        why=why,
        reasons=reasons,
        settings=settings,
        estimate=est,
        method_info=info,
    )


def _quality(info, settings) -> int | None:
    """The claim the evidence supports at the row's settings (`recommend.quality_at`), as the CLI
    counts it; the catalog's own figure for a row without settings (ruled out, or no budget yet)."""
    from peft_advisor.core.recommend import quality_at

    if info is None:
        return None
    return info.quality if settings is None else quality_at(info, settings)


def _step_time(method: str, settings, est) -> float | None:
    from peft_advisor.core.recommend import speed_figure

    return None if settings is None else speed_figure(method, settings, getattr(est, "checkpointed_share", None))


def dots(score: int | None) -> str:
    return "?" if score is None else "●" * score + "○" * (5 - score)


def cells(row: MethodRow) -> tuple:
    mark = Text("★", "bold yellow") if row.rank == 1 else Text(str(row.rank)) if row.rank else Text("✗", "red")
    fits = {"ok": Text("ok", "green"), "tight": Text("tight", "yellow"), "?": Text("?", "dim")}.get(row.fit, Text("no", "red"))
    if row.peak_bytes is not None and row.budget_bytes:
        share = row.peak_bytes / row.budget_bytes
        peak = Text(f"{fmt_bytes(row.peak_bytes)} {share:4.0%}", "red" if share > 1 else "")
    else:
        peak = Text(fmt_bytes(row.peak_bytes))
    name = Text(row.name, "bold" if row.rank == 1 else "")
    why = Text(row.why, "red" if row.fit == "no" else "yellow" if row.fit == "tight" else "dim")
    speed = "?" if row.step_time is None else f"{row.step_time:.2f}×"
    if row.fit == "?":
        mark, peak = Text("·", "dim"), Text(fmt_bytes(row.need_bytes))
    return (mark, name, fits, peak, fmt_file_bytes(row.adapter_bytes), fmt_count(row.trainable_params),
            dots(row.quality), speed, why)


class TradeoffTable(DataTable):
    """Row keys are method ids; the cursor stays on the same method when the rows change, and the
    columns are sized afresh (a DataTable's columns only ever widen: one wide advice would otherwise
    leave its widths behind)."""

    DEFAULT_CSS = """
    TradeoffTable { height: auto; max-height: 12; scrollbar-size-horizontal: 0; }
    """

    @dataclass
    class MethodHighlighted(Message):
        row: MethodRow

    @dataclass
    class MethodChosen(Message):
        row: MethodRow

    def __init__(self, **kwargs):
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.rows_by_method: dict[str, MethodRow] = {}

    def on_mount(self) -> None:
        self.add_columns(*COLUMNS)

    def show_rows(self, rows: list[MethodRow]) -> None:
        current = self.current_method()
        self.rows_by_method = {r.method: r for r in rows}
        self.clear(columns=True)
        self.add_columns(*COLUMNS)
        for row in rows:
            self.add_row(*cells(row), key=row.method)
        target = current if current in self.rows_by_method else (rows[0].method if rows else None)
        if target is not None:
            self.move_cursor(row=self.get_row_index(target))
            self.post_message(self.MethodHighlighted(self.rows_by_method[target]))

    def current_method(self) -> str | None:
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        row = self.rows_by_method.get(event.row_key.value)
        if row is not None:
            self.post_message(self.MethodHighlighted(row))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        row = self.rows_by_method.get(event.row_key.value)
        if row is not None:
            self.post_message(self.MethodChosen(row))
