"""The `events.jsonl` stream between the trainer child and its watchers (TUI, `monitor`).

One JSON object per line, append-only, flushed per line; every line has `v` (schema version),
`kind` and `t` (unix seconds). A file is the channel because it survives crashes, lets a watcher
re-attach to a run, and library noise on stdout cannot corrupt it. Readers follow four rules:
skip malformed lines (and count them), tolerate unknown kinds and fields, drop a known field whose
value has the wrong type (the TypedDicts below are the schema), buffer partial lines.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, TypedDict, get_type_hints

from peft_advisor.core.tail import CHUNK_BYTES, MAX_LINE_BYTES, LineBuffer, LineTail  # noqa: F401 (LineBuffer re-exported)

SCHEMA_VERSION = 1
# The last two are optional: a trainer before them never wrote them, and a reader before them skips
# them as unknown kinds (rule two above), so the schema version stays 1. They give an evaluation,
# which can take minutes before the first step (the baseline), a state and a progress of its own.
OPTIONAL_KINDS = ("eval_start", "eval_progress")
KINDS = ("start", "step", "eval", "checkpoint", "end", *OPTIONAL_KINDS)
END_STATUSES = ("ok", "cancelled", "oom", "error")

Event = dict[str, Any]


class StartEvent(TypedDict, total=False):
    v: int
    kind: str  # "start"
    t: float
    method: str
    model: str
    trainable_params: int
    total_params: int
    total_steps: int
    estimate_peak_bytes: int
    estimate_adapter_bytes: int
    device: str  # "cuda:0" | "cpu"
    pid: int  # the process to signal: the trainer, or torchrun/accelerate for several GPUs
    run_dir: str
    gpus: int  # training processes (GPUs) in the run; 1 = one GPU
    strategy: str  # "ddp" | "fsdp"; absent on one GPU
    global_batch: int  # sequences per optimizer step, all GPUs together
    # estimate_peak_bytes is per GPU (core.distributed.per_gpu_estimate) when gpus > 1
    train_rows: int  # training rows (examples) read, after the eval split
    truncated_rows: int  # of those, rows cut at max_seq_len: their end (the answer's) is not trained on
    max_seq_len: int  # data.max_seq_len, in tokens
    # the [train] techniques as run (also in run.json):
    loss_impl: str  # "liger" | "chunked" (train.fused_loss) | "full" (the model's own loss)
    liger_kernels: str  # the model type Liger's kernels were patched into; absent when off
    offload_activations: str  # "pinned" (CUDA) | "cpu, no-op" (no GPU: activations are on the CPU already); absent when off
    optimizer: str  # train.optimizer
    cuda_alloc_conf: str  # PYTORCH_CUDA_ALLOC_CONF as the trainer ran (launch.allocator_env); absent on the CPU
    checkpointed_layers: str  # "k of n" decoder blocks checkpointed (train.grad_ckpt_layers); absent without it


class StepEvent(TypedDict, total=False):
    v: int
    kind: str  # "step"
    t: float
    step: int
    loss: float
    lr: float
    grad_norm: float
    tokens_per_s: float
    samples: int
    mem_allocated_bytes: int
    mem_reserved_bytes: int
    mem_peak_bytes: int  # with several GPUs: the largest over the ranks (as mem_allocated/reserved_bytes)
    mem_peak_allocated_bytes: int  # the peak of what tensors held (mem_peak_bytes: of what the allocator reserved)
    epoch: float
    mem_reserved_bytes_by_rank: list  # several GPUs only: one entry per rank (None where not measured)
    mem_peak_bytes_by_rank: list


class EvalEvent(TypedDict, total=False):
    v: int
    kind: str  # "eval"
    t: float
    step: int
    eval_loss: float
    eval_accuracy: float  # exact match, where the data defines answers


class EvalStartEvent(TypedDict, total=False):
    v: int
    kind: str  # "eval_start": an evaluation begins; an `eval` event (or `eval_progress` stopped) ends it
    t: float
    step: int  # 0: the baseline (the model before training)
    rows: int  # eval rows scored (the baseline's may be capped by train.baseline_eval_rows)
    batches: int  # forward passes to go, on each process


class EvalProgressEvent(TypedDict, total=False):
    v: int
    kind: str  # "eval_progress": at most about once a second while an evaluation runs
    t: float
    step: int
    done: int  # batches done
    total: int
    status: str  # "stopped" when a stop request ended the evaluation early (no `eval` event follows)


class CheckpointEvent(TypedDict, total=False):
    v: int
    kind: str  # "checkpoint"
    t: float
    step: int
    path: str
    adapter_bytes: int


class EndEvent(TypedDict, total=False):
    v: int
    kind: str  # "end"
    t: float
    status: str  # one of END_STATUSES
    message: str  # when status is not "ok"
    final_loss: float
    best_eval_loss: float
    wall_s: float
    mem_peak_bytes: int
    estimate_peak_bytes: int


SCHEMAS = {"start": StartEvent, "step": StepEvent, "eval": EvalEvent, "checkpoint": CheckpointEvent, "end": EndEvent,
           "eval_start": EvalStartEvent, "eval_progress": EvalProgressEvent}
_ACCEPTS = {int: (int,), float: (int, float), str: (str,), list: (list,)}


def _field_types(kind: str) -> dict[str, tuple[type, ...]]:
    schema = SCHEMAS.get(kind)
    return {name: _ACCEPTS[hint] for name, hint in get_type_hints(schema).items()} if schema else {}


_FIELD_TYPES = {kind: _field_types(kind) for kind in KINDS}


_FINITE = frozenset({"t", "wall_s", "tokens_per_s", "epoch"})  # a NaN loss means something; a NaN time does not


def _typed(event: Event) -> Event:
    """The event without the known fields whose value has the wrong type (a list for a count, a
    string for a loss), or is not finite where only a finite number makes sense (a time): a
    hand-edited or foreign file must not break a watcher."""
    types = _FIELD_TYPES.get(event["kind"], {})

    def ok(k, v) -> bool:
        if k not in types:
            return True
        good = isinstance(v, types[k]) and not isinstance(v, bool)
        if good and k == "eval_accuracy":
            return 0 <= v <= 1  # a fraction (shown as a percentage)
        return good and (k not in _FINITE or math.isfinite(v))

    return {k: v for k, v in event.items() if ok(k, v)}


TRUNCATION_FEW_ROWS = 3  # this many cut rows or fewer ...
TRUNCATION_FEW_SHARE = 0.01  # ... that are also at most this share of the rows stay in train.log only


def truncation_note(event: Event) -> str:
    """'; 12 of 640 rows cut at max_seq_len 512' for a start event whose data had more than a handful
    of rows cut, else ''. A cut row trains on an answer that stops mid-way, with no end-of-text: worth
    a look when it is more than 3 rows or more than 1 % of them (1 of 20 is; 3 of 100,000 is noise)."""
    cut, rows, limit = (_int(event.get(key)) for key in ("truncated_rows", "train_rows", "max_seq_len"))
    if not cut or not rows or (cut <= TRUNCATION_FEW_ROWS and cut <= rows * TRUNCATION_FEW_SHARE):
        return ""
    return f"; {cut} of {rows} rows cut at max_seq_len {limit}" if limit else f"; {cut} of {rows} rows cut"


def eval_name(step) -> str:
    """'baseline' for the evaluation before training (step 0), else 'step N'."""
    return "baseline" if step == 0 else f"step {step if step is not None else '?'}"


def finite_points(series: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """The points a plot can draw: a NaN or infinite loss stays in the summary (and is shown as
    such) but has no place on an axis."""
    return [(step, value) for step, value in series if math.isfinite(value)]


def make_event(kind: str, *, t: float | None = None, **fields) -> Event:
    """An event with `v`, `kind` and `t` first; fields that are None are left out."""
    event: Event = {"v": SCHEMA_VERSION, "kind": kind, "t": time.time() if t is None else t}
    event.update((k, v) for k, v in fields.items() if v is not None)
    return event


def to_line(event: Event) -> str:
    """One line of JSON ending in a newline. A NaN loss is written as NaN (Python reads it back)."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n"


def parse_line(line: str | bytes) -> Event | None:
    """The event on one line, or None when the line is not a JSON object with a string `kind`."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):  # a line nested past Python's stack is malformed too
        return None
    if not isinstance(event, dict) or not isinstance(event.get("kind"), str):
        return None
    return _typed(event)


class EventTail(LineTail):
    """Follows an events file: each `poll()` reads only bytes after the last offset, at most
    `max_bytes_per_poll` of them (poll again while `at_eof` is False).

    A file that does not exist yet gives no events; a file that shrank or was replaced (a new
    run in the same folder) is read again from the start. Malformed lines are counted in
    `skipped`, over-long ones in `overlong`, never raised. A path that exists but is not a
    regular file (a folder, a FIFO) raises OSError at once.
    """

    def __init__(self, path, max_bytes_per_poll: int = CHUNK_BYTES, max_line_bytes: int | None = MAX_LINE_BYTES) -> None:
        super().__init__(path, max_bytes_per_poll=max_bytes_per_poll, max_line_bytes=max_line_bytes)
        self.skipped = 0

    def poll(self, final: bool = False) -> list[Event]:
        """New events since the last poll; `final=True` also parses an unterminated last line."""
        return self._parse(super().poll(final))

    def _parse(self, lines: list[str]) -> list[Event]:
        events = []
        for line in lines:
            if not line.strip():
                continue
            event = parse_line(line)
            if event is None:
                self.skipped += 1
            else:
                events.append(event)
        return events


def read_events(path) -> tuple[list[Event], int]:
    """Every event of a file (a finished run), read to its end in bounded chunks, and the count
    of lines that could not be used (malformed or over-long)."""
    tail = EventTail(path)
    events: list[Event] = []
    while True:
        events += tail.poll(final=True)
        if tail.at_eof:
            return events, tail.skipped + tail.overlong


# ---------------------------------------------------------------- the summary both front ends show


def _num(value) -> float | None:
    """A finite-or-NaN number from an event field; anything else (a string, a bool) is None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _int(value) -> int | None:
    value = _num(value)
    return None if value is None or not math.isfinite(value) else int(value)


@dataclass
class RunSummary:
    """A run as its events describe it so far. Fold events in with `apply` (or `summarize`)."""

    status: str = "waiting"  # waiting | running | ok | cancelled | oom | error
    method: str | None = None
    model: str | None = None
    device: str | None = None
    run_dir: str | None = None
    pid: int | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    total_steps: int | None = None
    step: int = 0
    epoch: float | None = None
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    eval_accuracies: list[tuple[int, float]] = field(default_factory=list)
    lr: float | None = None
    grad_norm: float | None = None
    tokens_per_s: float | None = None
    samples: int | None = None
    mem_allocated_bytes: int | None = None
    mem_reserved_bytes: int | None = None
    mem_peak_bytes: int | None = None  # the highest seen in any event
    gpus: int | None = None
    strategy: str | None = None
    checkpointed_layers: str | None = None  # "k of n", as the trainer applied train.grad_ckpt_layers
    global_batch: int | None = None
    mem_reserved_bytes_by_rank: list | None = None  # several GPUs: the last step's figures, per rank
    mem_peak_bytes_by_rank: list | None = None
    estimate_peak_bytes: int | None = None
    estimate_adapter_bytes: int | None = None
    adapter_bytes: int | None = None  # of the last checkpoint
    checkpoints: list[tuple[int, str]] = field(default_factory=list)
    final_loss: float | None = None
    best_eval_loss: float | None = None
    message: str | None = None
    start_t: float | None = None
    last_t: float | None = None
    end_wall_s: float | None = None
    eval_step: int | None = None  # the step of the evaluation under way (0: the baseline); None: none
    eval_rows: int | None = None
    eval_done: int | None = None  # batches of it done so far
    eval_total: int | None = None
    events: int = 0
    _step_times: deque = field(default_factory=lambda: deque(maxlen=20), repr=False, compare=False)

    @property
    def done(self) -> bool:
        return self.status in END_STATUSES

    @property
    def progress(self) -> float | None:
        """Fraction of the steps done, when the total is known."""
        if not self.total_steps:
            return None
        return min(1.0, self.step / self.total_steps)

    @property
    def last_loss(self) -> float | None:
        return self.losses[-1][1] if self.losses else None

    @property
    def last_eval_loss(self) -> float | None:
        return self.eval_losses[-1][1] if self.eval_losses else None

    @property
    def wall_s(self) -> float | None:
        """The trainer's own figure once it ended, else the time between the first and last event."""
        if self.end_wall_s is not None:
            return self.end_wall_s
        if self.start_t is None or self.last_t is None:
            return None
        return self.last_t - self.start_t

    @property
    def evaluating(self) -> bool:
        """An evaluation is under way: before the first step it can take minutes (the baseline)."""
        return self.eval_step is not None and not self.done

    @property
    def eval_label(self) -> str:
        return eval_name(self.eval_step)

    def elapsed_s(self, now: float) -> float | None:
        """The run's clock at `now`: it keeps running between events (an evaluation, a slow step)
        while the run is live, and stops at the trainer's own figure once it ended."""
        if self.done or self.start_t is None:
            return self.wall_s
        return max(now - self.start_t, self.wall_s or 0.0)

    @property
    def seconds_per_step(self) -> float | None:
        """Over the last steps only, so slow first steps (GaLore's SVDs, warm-up) fade out."""
        if len(self._step_times) < 2:
            return None
        (t0, s0), (t1, s1) = self._step_times[0], self._step_times[-1]
        return (t1 - t0) / (s1 - s0) if s1 > s0 and t1 >= t0 else None

    @property
    def eta_s(self) -> float | None:
        if self.done:
            return 0.0
        per_step = self.seconds_per_step
        if per_step is None or not self.total_steps:
            return None
        return max(0, self.total_steps - self.step) * per_step

    def apply(self, event: Event) -> RunSummary:
        """Fold one event in; unknown kinds only count."""
        self.events += 1
        t = _num(event.get("t"))
        if t is not None:
            self.last_t = t if self.last_t is None else max(self.last_t, t)
        handler = getattr(self, f"_on_{event.get('kind')}", None)
        if handler is not None and event.get("kind") in KINDS:
            handler(event, t)
        return self

    def _peak(self, value) -> None:
        value = _int(value)
        if value is not None:
            self.mem_peak_bytes = value if self.mem_peak_bytes is None else max(self.mem_peak_bytes, value)

    def _by_rank(self, e: Event) -> None:
        for key in ("mem_reserved_bytes_by_rank", "mem_peak_bytes_by_rank"):
            values = e.get(key)
            if isinstance(values, list) and values:
                setattr(self, key, [_int(v) for v in values])

    def _no_eval(self) -> None:
        self.eval_step = self.eval_rows = self.eval_done = self.eval_total = None

    def _on_eval_start(self, e: Event, t: float | None) -> None:
        if self.status == "waiting":
            self.status = "running"
        step = _int(e.get("step"))
        self.eval_step = self.step if step is None else step
        self.eval_rows, self.eval_total, self.eval_done = _int(e.get("rows")), _int(e.get("batches")), 0

    def _on_eval_progress(self, e: Event, t: float | None) -> None:
        if e.get("status") == "stopped":
            self._no_eval()
            return
        if self.eval_step is None:  # its eval_start was before a re-attach's offset
            step = _int(e.get("step"))
            self.eval_step = self.step if step is None else step
        self.eval_done = _int(e.get("done")) if _int(e.get("done")) is not None else self.eval_done
        self.eval_total = _int(e.get("total")) or self.eval_total

    def _on_start(self, e: Event, t: float | None) -> None:
        """A second `start` is a resume: the run is running again; its history is kept."""
        self._no_eval()
        self.status, self.message, self.end_wall_s = "running", None, None
        if self.start_t is None:
            self.start_t = t
        for key in ("method", "model", "device", "run_dir"):
            if isinstance(e.get(key), str):
                setattr(self, key, e[key])
        for key in ("pid", "trainable_params", "total_params", "total_steps", "gpus", "global_batch"):
            if _int(e.get(key)) is not None:
                setattr(self, key, _int(e.get(key)))
        for key in ("strategy", "checkpointed_layers"):
            if isinstance(e.get(key), str):
                setattr(self, key, e[key])
        self.estimate_peak_bytes = _int(e.get("estimate_peak_bytes")) or self.estimate_peak_bytes
        self.estimate_adapter_bytes = _int(e.get("estimate_adapter_bytes")) or self.estimate_adapter_bytes
        self._step_times.clear()

    def _on_step(self, e: Event, t: float | None) -> None:
        step = _int(e.get("step"))
        if step is None:
            return
        if self.status == "waiting":
            self.status = "running"
        self._no_eval()
        self.step = step
        loss = _num(e.get("loss"))
        if loss is not None:
            _append(self.losses, step, loss)
        for key in ("lr", "grad_norm", "tokens_per_s", "epoch"):
            if _num(e.get(key)) is not None:
                setattr(self, key, _num(e.get(key)))
        for key in ("samples", "mem_allocated_bytes", "mem_reserved_bytes"):
            if _int(e.get(key)) is not None:
                setattr(self, key, _int(e.get(key)))
        self._peak(e.get("mem_peak_bytes"))
        self._by_rank(e)
        if t is not None:
            if self._step_times and self._step_times[-1][1] >= step:
                self._step_times.clear()  # resumed from an earlier checkpoint
            self._step_times.append((t, step))

    def _on_eval(self, e: Event, t: float | None) -> None:
        self._no_eval()
        step = _int(e.get("step"))
        step = self.step if step is None else step
        if _num(e.get("eval_loss")) is not None:
            _append(self.eval_losses, step, _num(e.get("eval_loss")))
        if _num(e.get("eval_accuracy")) is not None:
            _append(self.eval_accuracies, step, _num(e.get("eval_accuracy")))

    def _on_checkpoint(self, e: Event, t: float | None) -> None:
        self._no_eval()
        step = _int(e.get("step"))
        if step is not None and isinstance(e.get("path"), str):
            self.checkpoints.append((step, e["path"]))
        self.adapter_bytes = _int(e.get("adapter_bytes")) or self.adapter_bytes

    def _on_end(self, e: Event, t: float | None) -> None:
        self._no_eval()
        status = e.get("status")
        self.status = status if status in END_STATUSES else "error"
        message = e.get("message")
        self.message = message if isinstance(message, str) else None
        if status not in END_STATUSES and not self.message:
            self.message = f"unknown end status {status!r}"
        self.final_loss = _num(e.get("final_loss")) if _num(e.get("final_loss")) is not None else self.last_loss
        best = _num(e.get("best_eval_loss"))
        evals = [loss for _, loss in self.eval_losses if not math.isnan(loss)]
        self.best_eval_loss = best if best is not None else (min(evals) if evals else None)
        self.end_wall_s = _num(e.get("wall_s"))
        self._peak(e.get("mem_peak_bytes"))
        self._by_rank(e)
        self.estimate_peak_bytes = _int(e.get("estimate_peak_bytes")) or self.estimate_peak_bytes

    def to_dict(self) -> dict:
        """JSON-able, for `monitor --json`."""
        from dataclasses import fields

        out = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        out.update(wall_s=self.wall_s, eta_s=self.eta_s, progress=self.progress, evaluating=self.evaluating)
        return out


def _append(series: list[tuple[int, float]], step: int, value: float) -> None:
    """Add a point; points at or after `step` are dropped first, so a resumed run that replays
    steps after its checkpoint does not draw them twice."""
    while series and series[-1][0] >= step:
        series.pop()
    series.append((step, value))


def summarize(events, summary: RunSummary | None = None) -> RunSummary:
    """Fold events into a summary (a new one, or `summary` updated in place)."""
    summary = RunSummary() if summary is None else summary
    for event in events:
        summary.apply(event)
    return summary
