"""`peft-advisor bench`, the pure part: plan the candidates, fold each run's events into a row,
render the side-by-side table.

The study's advice is to compare methods on your own model and data rather than take LoRA by
default. A fair comparison changes one thing: each candidate is the user's recipe with only the
method swapped (same model, data, seed, shapes and step or time budget). The learning rate is the
one knob that must move with the method (VeRA trains a few scaling vectors and needs ~5x LoRA's,
full fine-tuning ~1/20th), so it follows the catalog's `default_lr`, scaled by how far the recipe's own
lr is from its method's default: a recipe tuned to twice LoRA's default gives every candidate
twice its default.

The runner (`cli/bench_cmd.py`) starts the children and hands their events here; nothing in this
module touches a process or a file.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field, fields
from pathlib import PurePath

from peft_advisor.core import recipe as rc
from peft_advisor.core.errors import ExitCode, UserError, did_you_mean
from peft_advisor.core.events import summarize
from peft_advisor.core.limits import MAX_STEPS
from peft_advisor.core.units import fmt_bytes, fmt_file_bytes

VARIANTS = {
    "galore-8bit": {"method.name": "galore", "method.galore_8bit": True},
    "galore-layerwise": {"method.name": "galore", "method.galore_layerwise": True},
}
"""Candidates that are a method plus one of its switches, named for the table."""
DEFAULT_STEPS = 50
LAST_LOSSES = 5
"""Train loss "at the end" is the mean of the last few step losses: one step's loss is noisy."""
STATUSES = ("ok", "oom", "error", "needs-cuda", "cancelled", "not-run")
STATUS_TEXT = {"needs-cuda": "needs CUDA", "not-run": "not run"}


def known_candidates() -> tuple[str, ...]:
    return tuple(rc.methods()) + tuple(VARIANTS)


def parse_methods(text: str | None) -> list[str]:
    """`lora,dora, vera` -> ["lora", "dora", "vera"]: known names, in order, each once. None or ""
    is every method, as `recommend --methods ""` has always been: `--methods "$LIST"` with LIST
    unset means the default; a list of only separators (" , ") is refused, as recommend does."""
    if not text:
        return list(rc.methods())
    names = list(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    if not names:
        raise UserError("--methods: give at least one method, e.g. --methods lora,dora", ExitCode.USAGE)
    known = known_candidates()
    for name in names:
        if name not in known:
            raise UserError(f"--methods: unknown method {name!r}{did_you_mean(name, known)} "
                            f"(choose from {', '.join(known)})", ExitCode.UNKNOWN_METHOD)
    return names


# ---------------------------------------------------------------- the budget


@dataclass(frozen=True)
class Budget:
    """Every candidate gets the same: `steps` optimizer steps, or `time_s` seconds of training."""

    steps: int | None = None
    time_s: float | None = None

    def describe(self) -> str:
        if self.time_s is not None:
            return f"{self.time_s / 60:.3g} min of training each"
        return f"{self.steps} steps each"

    def to_dict(self) -> dict:
        return {"steps": self.steps, "time_s": self.time_s}


MAX_BENCH_MIN = 7 * 24 * 60.0


def make_budget(recipe: rc.Recipe, steps: int | None, time_budget_min: float | None, runnable: int) -> Budget:
    """`--steps N`, or `--time-budget MIN` split evenly over the candidates that will run, or by
    default the recipe's steps capped at DEFAULT_STEPS (a bench is short by design)."""
    if steps is not None and time_budget_min is not None:
        raise UserError("give --steps or --time-budget, not both", ExitCode.USAGE)
    if steps is not None:
        if steps < 1:
            raise UserError(f"--steps must be >= 1, got {steps}", ExitCode.USAGE)
        if steps > MAX_STEPS:  # refused before the bench folder exists, not a folder of error rows
            raise UserError(f"--steps must be <= {MAX_STEPS}, got {steps}", ExitCode.USAGE)
        return Budget(steps=steps)
    if time_budget_min is not None:
        if not (time_budget_min > 0 and math.isfinite(time_budget_min)):
            raise UserError(f"--time-budget must be a positive number of minutes, got {time_budget_min:g}", ExitCode.USAGE)
        if time_budget_min > MAX_BENCH_MIN:  # 1e300 minutes is a typo, and its seconds overflow a timer
            raise UserError(f"--time-budget must be <= {MAX_BENCH_MIN:g} minutes (a week), got {time_budget_min:g}",
                            ExitCode.USAGE)
        return Budget(time_s=time_budget_min * 60 / max(1, runnable))
    own = recipe.train.max_steps
    return Budget(steps=min(own, DEFAULT_STEPS) if own > 0 else DEFAULT_STEPS)


# ---------------------------------------------------------------- the candidates


def candidate_lr(recipe: rc.Recipe, method: str) -> float:
    """The method's default lr, times the recipe's lr over its own method's default."""
    base = rc.default_lr(recipe.method.name)
    target = rc.default_lr(method)
    if not base or not target:
        return recipe.train.lr
    if method == recipe.method.name:
        return recipe.train.lr
    return float(f"{recipe.train.lr * target / base:.3g}")


def needs_cuda(recipe: rc.Recipe) -> str | None:
    """Why this recipe cannot run without CUDA, or None."""
    from peft_advisor.core.catalog import cuda_reason

    m = recipe.method
    return cuda_reason(m.name, {f: getattr(m, f) for f in ("galore_8bit", "galore_layerwise")})


@dataclass(frozen=True)
class Candidate:
    """One row to be: its recipe, or why it will not run (`skip_status`, `skip_reason`)."""

    name: str
    method: str
    recipe: rc.Recipe | None
    skip_status: str | None = None
    skip_reason: str | None = None

    @property
    def runnable(self) -> bool:
        return self.recipe is not None and self.skip_status is None


def candidate_changes(recipe: rc.Recipe, name: str, budget: Budget, run_dir: str) -> dict:
    """The dotted-key changes that turn the user's recipe into this candidate's."""
    changes = dict(VARIANTS.get(name, {"method.name": name}))
    method = changes["method.name"]
    changes.update({
        "model.load_in_4bit": method == "qlora",
        "train.lr": candidate_lr(recipe, method),
        "train.eval_every": 0,  # the baseline and the final eval only: equal, and cheap
        "train.save_every": 0,  # the final save only (its size is the adapter column)
        "train.log_every": 1,  # a point per step: the loss curves and the tokens/s median
        "output.dir": run_dir,
    })
    if budget.steps is not None:
        changes["train.max_steps"] = budget.steps
    return changes  # a time budget keeps the recipe's schedule; the clock stops the run


def plan(recipe: rc.Recipe, names: list[str], cuda: bool, budget: Budget, out_dir: str) -> list[Candidate]:
    """A candidate per name, run in `out_dir/<name>`: the recipe with that method, or why it
    cannot run here."""
    out = []
    for name in names:
        method = VARIANTS.get(name, {"method.name": name})["method.name"]
        try:
            cand = rc.updated(recipe, candidate_changes(recipe, name, budget, str(PurePath(out_dir) / name)))
        except UserError as err:
            out.append(Candidate(name, method, None, "error", f"recipe: {err}"))
            continue
        reason = None if cuda else needs_cuda(cand)
        out.append(Candidate(name, method, cand, "needs-cuda" if reason else None, reason))
    return out


# ---------------------------------------------------------------- one row per candidate


@dataclass
class Row:
    """One candidate's measured result (None: not measured)."""

    name: str
    method: str
    status: str = "not-run"
    reason: str | None = None
    lr: float | None = None
    device: str | None = None
    steps: int = 0
    total_steps: int | None = None
    peak_measured_bytes: int | None = None
    """Highest reserved or peak-reserved bytes of PyTorch's allocator in any event (GPU only)."""
    peak_estimated_bytes: int | None = None
    tokens_per_s: float | None = None
    """Median over the step events (the first steps warm up)."""
    train_loss: float | None = None
    """Mean of the last LAST_LOSSES step losses."""
    eval_loss_start: float | None = None
    eval_loss: float | None = None
    eval_accuracy: float | None = None
    eval_step: int | None = None
    adapter_bytes: int | None = None
    trainable_params: int | None = None
    wall_s: float | None = None
    stopped_at_budget: bool = False
    run_dir: str | None = None
    losses: list = field(default_factory=list)
    """(step, loss) points, for the loss curves of all candidates in one plot."""

    @property
    def ran(self) -> bool:
        return self.status == "ok"

    @property
    def estimate_error(self) -> float | None:
        """(estimated - measured) / measured: the convention of bench/error_report.md (+ = over-estimate)."""
        if not self.peak_measured_bytes or not self.peak_estimated_bytes:
            return None
        return (self.peak_estimated_bytes - self.peak_measured_bytes) / self.peak_measured_bytes

    def to_dict(self) -> dict:
        out = asdict(self)
        out["losses"] = [[s, v if math.isfinite(v) else None] for s, v in self.losses]
        out["estimate_error"] = self.estimate_error
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Row:
        names = {f.name for f in fields(cls)}
        row = cls(**{k: v for k, v in data.items() if k in names})
        row.losses = [(int(s), float("nan") if v is None else float(v)) for s, v in row.losses]
        return row


def _finite(values) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def _number(value) -> float | None:
    found = _finite([value])
    return found[0] if found else None


def measured_peak(events) -> int | None:
    """Max of mem_reserved_bytes and mem_peak_bytes over step and end events."""
    values = [e.get(key) for e in events if e.get("kind") in ("step", "end")
              for key in ("mem_reserved_bytes", "mem_peak_bytes")]
    values = [int(v) for v in _finite(values) if v > 0]
    return max(values) if values else None


def fold(name: str, method: str, events, *, lr: float | None = None, adapter_bytes: int | None = None,
         stopped_at_budget: bool = False, run_dir: str | None = None) -> Row:
    """A candidate's events (start ... end) as one row.

    A run the bench stopped at its time budget ends `cancelled` in its events but is a finished
    candidate here (`stopped_at_budget`); so is one that stopped itself at the time limit its
    start event announces (`time_limit_s`), which ends `ok` short of its steps. A run with no
    `end` event died: an error.
    """
    events = list(events)
    s = summarize(events)
    limited = any(e.get("time_limit_s") for e in events if e.get("kind") == "start")
    if limited and s.status == "ok" and s.total_steps and s.step < s.total_steps:
        stopped_at_budget = True
    steps = [e for e in events if e.get("kind") == "step"]
    evals = [(e.get("step") or 0, e) for e in events if e.get("kind") == "eval"]
    final = [(step, e) for step, e in evals if step > 0]
    row = Row(name=name, method=method, lr=lr, device=s.device, steps=s.step, total_steps=s.total_steps,
              run_dir=run_dir, trainable_params=s.trainable_params, losses=list(s.losses),
              stopped_at_budget=stopped_at_budget)
    row.peak_measured_bytes = measured_peak(events)
    row.peak_estimated_bytes = s.estimate_peak_bytes
    speeds = [v for v in _finite(e.get("tokens_per_s") for e in steps) if v > 0]
    row.tokens_per_s = statistics.median(speeds) if speeds else None
    losses = _finite(v for _, v in s.losses)[-LAST_LOSSES:]
    row.train_loss = sum(losses) / len(losses) if losses else None
    if evals and evals[0][0] == 0:
        row.eval_loss_start = _number(evals[0][1].get("eval_loss"))
    if final:
        row.eval_step, last = final[-1]
        row.eval_loss, row.eval_accuracy = _number(last.get("eval_loss")), _number(last.get("eval_accuracy"))
    row.adapter_bytes = adapter_bytes if adapter_bytes is not None else s.adapter_bytes
    row.wall_s = s.end_wall_s
    row.status, row.reason = _status(s, stopped_at_budget)
    return row


def _status(s, stopped_at_budget: bool) -> tuple[str, str | None]:
    if s.status == "cancelled" and stopped_at_budget:
        return "ok", None
    if s.status in ("ok", "oom", "error", "cancelled"):
        return s.status, s.message
    return "error", "the trainer exited without an end event"


def skipped_row(candidate: Candidate, status: str | None = None, reason: str | None = None) -> Row:
    lr = candidate.recipe.train.lr if candidate.recipe is not None else None
    return Row(name=candidate.name, method=candidate.method, lr=lr,
               status=status or candidate.skip_status or "not-run", reason=reason or candidate.skip_reason)


# ---------------------------------------------------------------- the whole bench


@dataclass
class BenchResult:
    recipe: str
    model: str
    data: str
    budget: Budget
    gpu: str | None = None
    started: float | None = None
    finished: float | None = None
    interrupted: bool = False
    rows: list[Row] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "version": 1,
            "recipe": self.recipe,
            "model": self.model,
            "data": self.data,
            "gpu": self.gpu,
            "budget": self.budget.to_dict(),
            "started": self.started,
            "finished": self.finished,
            "interrupted": self.interrupted,
            "rows": [r.to_dict() for r in self.rows],
        }

    @classmethod
    def from_dict(cls, data: dict) -> BenchResult:
        """For the TUI and for tests: a bench.json read back."""
        budget = Budget(**{k: data.get("budget", {}).get(k) for k in ("steps", "time_s")})
        return cls(recipe=data["recipe"], model=data["model"], data=data["data"], budget=budget,
                   gpu=data.get("gpu"), started=data.get("started"), finished=data.get("finished"),
                   interrupted=bool(data.get("interrupted")), rows=[Row.from_dict(r) for r in data.get("rows", [])])


# ---------------------------------------------------------------- rendering

COLUMNS = ("method", "status", "peak measured", "peak estimated", "est. error", "tokens/s",
           "train loss", "eval loss", "eval acc", "adapter", "steps", "lr")


def _f(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def cells(row: Row) -> list[str]:
    err = row.estimate_error
    eval_loss = _f(row.eval_loss, ".4f")
    if row.eval_loss is not None and row.eval_step is not None and row.eval_step < row.steps:
        eval_loss += f" (step {row.eval_step})"
    return [
        row.name,
        STATUS_TEXT.get(row.status, row.status),
        fmt_bytes(row.peak_measured_bytes),
        fmt_bytes(row.peak_estimated_bytes),
        "—" if err is None else f"{err * 100:+.1f}%",
        _f(row.tokens_per_s, ".0f"),
        _f(row.train_loss, ".4f"),
        eval_loss,
        "—" if row.eval_accuracy is None else f"{row.eval_accuracy * 100:.1f}%",
        fmt_file_bytes(row.adapter_bytes),
        str(row.steps) if row.status not in ("needs-cuda", "not-run") else "—",
        _f(row.lr, ".3g"),
    ]


def table(rows: list[Row]) -> str:
    """A Markdown table with padded columns: readable in a terminal, renders on GitHub."""
    body = [cells(r) for r in rows]
    widths = [max(len(c[i]) for c in [list(COLUMNS), *body]) for i in range(len(COLUMNS))]
    numeric = set(range(2, len(COLUMNS)))

    def line(values):
        return "| " + " | ".join(v.rjust(w) if i in numeric else v.ljust(w)
                                 for i, (v, w) in enumerate(zip(values, widths))) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in numeric else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(COLUMNS), rule, *(line(c) for c in body)])


def notes(result: BenchResult) -> list[str]:
    out = []
    for row in result.rows:
        if row.reason and row.status != "ok":
            out.append(f"- **{row.name}** {STATUS_TEXT.get(row.status, row.status)}: {row.reason}")
        elif row.stopped_at_budget:
            missed = "" if row.eval_step == row.steps else "; the bench had to stop it, so it ran no final eval"
            out.append(f"- **{row.name}** stopped at its time budget after {row.steps} steps{missed}.")
    ran = [r for r in result.rows if r.ran]
    scored = [r for r in ran if r.eval_loss is not None]
    if len(scored) > 1:
        best = min(scored, key=lambda r: r.eval_loss)
        out.append(f"- Lowest eval loss after the budget: **{best.name}** ({best.eval_loss:.4f}).")
    fast = [r for r in ran if r.tokens_per_s]
    lora = next((r for r in fast if r.method == "lora"), None)
    if lora and len(fast) > 1:
        rel = ", ".join(f"{r.name} {lora.tokens_per_s / r.tokens_per_s:.2f}x" for r in fast if r is not lora)
        out.append(f"- Step time relative to LoRA (higher is slower): {rel}.")
    return out


def render_markdown(result: BenchResult) -> str:
    budget = result.budget.describe()
    where = result.gpu or "CPU (no GPU: memory is not measured)"
    lines = [
        "# peft-advisor bench",
        "",
        f"Recipe `{result.recipe}`: model `{result.model}`, data `{result.data}`; {budget}; on {where}.",
        "",
        table(result.rows),
        "",
    ]
    if result.interrupted:
        lines += ["Interrupted: the rows after the stopped candidate did not run.", ""]
    found = notes(result)
    if found:
        lines += ["## Notes", "", *found, ""]
    lines += [
        "## How to read it",
        "",
        "- Each method ran as its own process on the recipe's model, data, seed and shapes; only the",
        "  method and its learning rate changed (`lr`: the method's default, scaled like the recipe's lr).",
        "- Peak measured: the most memory PyTorch's allocator reserved (CUDA context excluded), the",
        "  figure the estimate predicts; est. error = (estimated - measured) / measured.",
        "- tokens/s: median over the steps; train loss: mean of the last "
        f"{LAST_LOSSES} steps; eval loss and accuracy: on the held-out rows after the budget.",
        "- Adapter: the saved file (the whole model for full and galore).",
        "",
    ]
    return "\n".join(lines)
