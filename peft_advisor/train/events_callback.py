"""The trainer's side of `events.jsonl`: a `TrainerCallback` that appends one line per event.

Lines are written with `core.events.make_event`/`to_line` and flushed one by one, so a watcher
sees each step as it happens and a crash loses nothing already written. The callback is also
where a stop request (SIGINT/SIGTERM, set by run.py) turns into "save a checkpoint now, then stop"
at the next step boundary, where the training state is consistent.

With several processes every rank runs the callback (its collectives need them all) and only
rank 0 has a writer. A stop is agreed on by all ranks at each step end (signals reach the ranks
at slightly different times), and each step event carries every rank's memory.
"""

from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from peft_advisor.core.events import make_event, to_line

WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors")
EVAL_PROGRESS_S = 1.0  # an evaluation's progress is written at most this often


class EvalStopped(Exception):
    """A stop request seen between two eval batches: `LeanTrainer.evaluate` ends the evaluation."""


def saved_bytes(folder: Path) -> int | None:
    """Size of the adapter (or whole model, with its shards) saved in a folder."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return (folder / name).stat().st_size
    shards = list(folder.glob("model-*-of-*.safetensors"))
    return sum(p.stat().st_size for p in shards) if shards else None


def log_accuracy(history: list[dict], step: int, accuracy: float) -> None:
    """Put exact match beside the eval loss in trainer_state.json's log, where Trainer puts every
    eval metric (it logs them before calling back, so the accuracy joins that entry)."""
    for entry in reversed(history):
        if "eval_loss" in entry and entry.get("step") == step:
            entry["eval_accuracy"] = accuracy
            return


def merge_memory(per_rank: list[dict]) -> dict:
    """Every rank's memory as lists in rank order (None where not measured: the CPU), plus the
    largest of each as the plain fields, which is what one GPU must hold."""
    out = {}
    for key in ("mem_allocated_bytes", "mem_reserved_bytes", "mem_peak_bytes", "mem_peak_allocated_bytes"):
        values = [m.get(key) for m in per_rank]
        known = [v for v in values if v is not None]
        out[key] = max(known) if known else None
        if key in ("mem_reserved_bytes", "mem_peak_bytes"):
            out[f"{key}_by_rank"] = values
    return out


def cuda_memory() -> dict:
    """Allocated, reserved and peak reserved bytes of PyTorch's CUDA allocator, and the peak
    allocated (how far the reserved peak is above what tensors held: the allocator's own cost); {} on CPU.

    One `memory_stats()` read: `memory_allocated()` and its siblings each build the allocator's whole
    table of ~100 counters, and this runs after every logged step, while the GPU waits for the next."""
    import torch

    if not torch.cuda.is_available():
        return {}
    stats = torch.cuda.memory_stats()
    return {
        "mem_allocated_bytes": stats.get("allocated_bytes.all.current", 0),
        "mem_reserved_bytes": stats.get("reserved_bytes.all.current", 0),
        "mem_peak_bytes": stats.get("reserved_bytes.all.peak", 0),
        "mem_peak_allocated_bytes": stats.get("allocated_bytes.all.peak", 0),
    }


class EventWriter:
    """Append-only, line-flushed writer of events."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fh = open(self.path, "a", encoding="utf-8")

    def emit(self, kind: str, **fields) -> dict:
        event = make_event(kind, **fields)
        self._fh.write(to_line(event))
        self._fh.flush()
        return event

    def close(self) -> None:
        self._fh.close()


class EventsCallback(TrainerCallback):
    """start/step/eval/checkpoint events; `end` is written by run.py, which knows how it ended."""

    def __init__(self, writer: EventWriter | None, start_fields: dict, samples_per_step: int, accuracy=None,
                 time_limit_s: float | None = None, ranks=None):
        from peft_advisor.train.dist import Ranks

        self.writer = writer  # None on ranks other than 0
        self.ranks = ranks or Ranks()
        self.peak_by_rank: list | None = None  # each rank's peak at the last step event (several ranks)
        self.time_limit_s = time_limit_s  # a wall-clock budget: stop like max_steps (final eval and save)
        self._clock = None
        self.start_fields = start_fields
        self.samples_per_step = samples_per_step
        self.accuracy = accuracy  # callable(model) -> float, or None when the data has no answers
        self.stop_requested = False
        self.peak_bytes = 0
        self._last = (time.time(), 0)  # (t, tokens seen) at the previous step event
        self._eval: dict | None = None  # the evaluation under way: step, done, total, t of the last progress

    def emit(self, kind: str, **fields) -> None:
        if self.writer is not None:
            self.writer.emit(kind, **fields)

    def on_train_begin(self, args, state, control, **kwargs):
        resumed = state.global_step or None
        self.emit("start", total_steps=state.max_steps, resumed_from_step=resumed, **self.start_fields)
        self._last = (time.time(), state.num_input_tokens_seen or 0)

    def on_step_begin(self, args, state, control, **kwargs):
        if self._clock is None:
            self._clock = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        from peft_advisor.core.run_folder import fault_point
        from peft_advisor.train.dist import any_rank

        fault_point("step")  # tests only: a paced run (step:slow:SECONDS), whatever the machine's speed
        out_of_time = bool(self.time_limit_s and self._clock and time.time() - self._clock >= self.time_limit_s)
        self.stop_requested, out_of_time = any_rank(self.ranks, self.stop_requested, out_of_time)
        if self.stop_requested:
            control.should_save = True
            control.should_training_stop = True
        elif out_of_time:
            control.should_training_stop = True  # the budget is spent: end as ok, with the final eval
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs or "eval_loss" in logs:
            return
        now, tokens = time.time(), state.num_input_tokens_seen or 0
        t0, tokens0 = self._last
        self._last = (now, tokens)
        memory = cuda_memory()
        if self.ranks.distributed:  # a collective: every rank logs at the same steps
            from peft_advisor.train.dist import gather

            memory = merge_memory(gather(self.ranks, memory))
            self.peak_by_rank = memory["mem_peak_bytes_by_rank"]
        self.peak_bytes = max(self.peak_bytes, memory.get("mem_peak_bytes") or 0)
        self.emit(
            "step",
            step=state.global_step,
            loss=logs["loss"],
            lr=logs.get("learning_rate"),
            grad_norm=logs.get("grad_norm"),
            tokens_per_s=round((tokens - tokens0) / (now - t0), 1) if now > t0 and tokens > tokens0 else None,
            samples=state.global_step * self.samples_per_step,
            epoch=round(state.epoch, 4) if state.epoch is not None else None,
            **memory,
        )

    def on_eval_begin(self, state, rows: int, batches: int) -> None:
        """From LeanTrainer.evaluate: an evaluation starts (Trainer has no callback for it)."""
        self._eval = {"step": state.global_step, "done": 0, "total": batches, "t": time.time()}
        self.emit("eval_start", step=state.global_step, rows=rows, batches=batches)

    def on_prediction_step(self, args, state, control, **kwargs):
        """After each eval batch: its progress about once a second, and a stop request ends the
        evaluation here (all ranks agree on it: the next batch would be a collective)."""
        from peft_advisor.core.run_folder import fault_point
        from peft_advisor.train.dist import any_rank

        fault_point("eval_batch")  # tests only: a slow evaluation
        ev = self._eval
        if ev is not None:
            ev["done"] += 1
            if time.time() - ev["t"] >= EVAL_PROGRESS_S or ev["done"] == 1:
                ev["t"] = time.time()
                self.emit("eval_progress", step=ev["step"], done=ev["done"], total=ev["total"])
        (self.stop_requested,) = any_rank(self.ranks, self.stop_requested)
        if self.stop_requested:
            raise EvalStopped

    def on_eval_stopped(self, state) -> None:
        ev, self._eval = self._eval or {}, None
        self.emit("eval_progress", step=state.global_step, done=ev.get("done"), total=ev.get("total"), status="stopped")
        self._last = (time.time(), state.num_input_tokens_seen or 0)

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        self._eval = None
        metrics = metrics or {}
        accuracy = self.accuracy(model) if self.accuracy and model is not None else None
        if accuracy is not None:
            metrics["eval_accuracy"] = accuracy
            log_accuracy(state.log_history, state.global_step, accuracy)
        self.emit("eval", step=state.global_step, eval_loss=metrics.get("eval_loss"), eval_accuracy=accuracy)
        self._last = (time.time(), state.num_input_tokens_seen or 0)  # eval time is not training time

    def on_save(self, args, state, control, **kwargs):
        name = f"checkpoint-{state.global_step}"
        size = saved_bytes(Path(args.output_dir) / name)
        self.emit("checkpoint", step=state.global_step, path=name, adapter_bytes=size)
        self._last = (time.time(), state.num_input_tokens_seen or 0)
