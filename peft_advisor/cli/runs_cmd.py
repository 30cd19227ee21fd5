"""`peft-advisor train RECIPE` (run a fine-tune in a child process) and `peft-advisor monitor RUN_DIR`.

Both follow the run's events.jsonl and print a line per step (progress bar, loss, speed, ETA) on
stdout; diagnostics go to stderr. The exit code comes from the run's `end` event: ok 0,
cancelled 130, oom 11, error 10 (also when the trainer died without an `end`). This process
never imports torch: the training stack lives only in the child.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from pathlib import Path

from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.events import RunSummary, eval_name, truncation_note
from peft_advisor.core.run_folder import RunComplete, fault_point
from peft_advisor.core.units import fmt_bytes, fmt_count, fmt_file_bytes
from peft_advisor.core.watch import RunWatcher, check_folder, overlong_note

BAR_WIDTH = 20
EVAL_LINE_EVERY_S = 10.0  # an evaluation's progress: a line at most this often (the events come each second)
SETUP_POLL_S = 0.1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def register(sub) -> None:
    t = sub.add_parser("train", help="fine-tune from a recipe in a child process and follow it")
    t.add_argument("recipe", metavar="RECIPE", help="recipe TOML file")
    t.add_argument("--run-dir", help="run folder (default: the recipe's output.dir)")
    t.add_argument("--resume", action="store_true", help="continue the run folder from its last checkpoint")
    t.add_argument("--detach", action="store_true", help="return once training has started; follow with monitor")
    t.add_argument("--node-rank", type=int, help="this machine's rank in a multi-node run (overrides distributed.node_rank)")
    t.add_argument("--trust-remote-code", action="store_true",
                   help="allow a recipe with model.trust_remote_code = true to run the model's own Python code "
                        "(consent only: it turns nothing on)")
    t.set_defaults(func=run_train)

    m = sub.add_parser("monitor", help="follow a run folder (live or finished): a line per step")
    m.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by peft-advisor train (its events.jsonl)")
    m.add_argument("--poll", type=float, default=0.5, help="seconds between reads (default 0.5)")
    view = m.add_mutually_exclusive_group()
    view.add_argument("--tui", action="store_true", help="open the terminal app's monitor screen")
    view.add_argument("--headless", action="store_true", help="print a line per step (the default when not on a terminal)")
    m.set_defaults(func=run_monitor)


# ---------------------------------------------------------------- train


def run_train(args) -> int:
    from peft_advisor import launch
    from peft_advisor.core import recipe as rc

    recipe = rc.load(args.recipe)  # a bad recipe is one line here, before any process or folder
    rc.check_remote_code(recipe, args.recipe, getattr(args, "trust_remote_code", False))  # no model code unasked
    if args.run_dir is not None and not args.run_dir.strip():
        raise UserError("train: --run-dir is empty; name a folder or leave it out to use output.dir", ExitCode.USAGE)
    run_dir = Path(args.run_dir or recipe.output.dir)
    node_rank = getattr(args, "node_rank", None)
    if node_rank is not None:
        recipe = rc.updated(recipe, {"distributed.node_rank": node_rank})  # checked like the file's value
    if recipe.distributed.node_rank > 0:  # a worker node: node 0 holds the run folder and the events
        print(f"peft-advisor: node {recipe.distributed.node_rank} of {recipe.distributed.nnodes}; "
              f"follow the run on node 0", file=sys.stderr)
        return launch.run_worker_node(args.recipe, run_dir, resume=args.resume, node_rank=node_rank)
    # Ctrl-C, `kill` or `timeout` stop a run: the trainer (in a session of its own, so that a closed
    # terminal does not kill it) is told to checkpoint and end, never left running unwatched. Until
    # the follow loop takes over, a signal is only noted, never raised: a KeyboardInterrupt between
    # the spawn and its handling would leave the trainer running with nobody watching.
    stops: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: stops.append(signum)) for sig in STOP_SIGNALS}
    try:
        return _train(args, recipe, run_dir, node_rank, stops)
    except RunComplete as done:
        print(f"peft-advisor: {done}", file=sys.stderr)
        return int(ExitCode.OK)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _train(args, recipe, run_dir: Path, node_rank, stops: list[int]) -> int:
    from peft_advisor import launch

    launched = launch.start(args.recipe, run_dir, resume=args.resume, node_rank=node_rank)
    fault_point("launched")  # tests only: a stop right after the spawn, the window that once lost it
    print(f"peft-advisor: trainer pid {launched.pid}; setting up {recipe.method.name} on {recipe.model.id}", file=sys.stderr)
    while not launch.check_started(launched):  # raises the child's one-line reason if it fails
        if stops:
            return _stop_during_setup(launched, stops)
        time.sleep(SETUP_POLL_S)
    print(f"peft-advisor: run folder {launched.run_dir}", file=sys.stderr)
    if args.detach:
        print(f"peft-advisor: detached; follow with: peft-advisor monitor {launched.run_dir}", file=sys.stderr)
        return 0
    if stops:  # a stop that came as training began: the follow loop forwards it
        launched.stop()
    return follow(launched.run_dir, launched=launched, offset=launched.events_offset)


def _stop_during_setup(launched, stops: list[int]) -> int:
    """Stop the trainer and wait until it is gone: its SIGINT handler ends setup at once, but a long
    C call (loading weights) may delay it; a second stop kills it (no run folder exists yet)."""
    from peft_advisor import launch

    launched.stop()
    print("peft-advisor: interrupted during setup; stopping the trainer", file=sys.stderr)
    seen = len(stops)
    while launched.running():
        if len(stops) > seen:
            launched.kill()
            print("peft-advisor: stopping it now", file=sys.stderr)
            seen = len(stops)
        time.sleep(SETUP_POLL_S)
    launch.discard_staging(launched)
    return int(ExitCode.INTERRUPTED)


# ---------------------------------------------------------------- monitor


def run_monitor(args) -> int:
    """On a terminal the monitor screen opens; piped, or with --headless, a line per step."""
    run_dir = Path(args.run_dir)
    if not (args.poll > 0 and args.poll <= 3600):  # also NaN
        raise UserError(f"--poll must be more than 0 and at most 3600 seconds, got {args.poll:g}", ExitCode.USAGE)
    if args.tui or (not args.headless and sys.stdout.isatty() and sys.stdin.isatty()):
        if not run_dir.is_dir():
            raise UserError(f"{run_dir}: no such run folder", ExitCode.USAGE)
        from peft_advisor.cli import _open_tui

        return _open_tui(monitor=str(run_dir))
    problem = check_folder(run_dir)
    if problem:
        raise UserError(problem, ExitCode.USAGE)
    return follow(run_dir, poll_s=args.poll)


def follow(run_dir: Path, launched=None, offset: int = 0, poll_s: float = 0.5, out=None) -> int:
    """Print events until the run ends or its trainer is gone; return the exit code.

    With `launched` (our own child), Ctrl-C is forwarded to it as SIGINT so it checkpoints; a
    third Ctrl-C detaches and leaves it running.
    """
    watcher = RunWatcher(run_dir, launched, offset=offset, calibrate="train" if launched else None)
    interrupts = [0]
    previous = {sig: signal.signal(sig, _forwarder(launched, interrupts)) for sig in STOP_SIGNALS} if launched else {}
    try:
        return _follow_loop(watcher, _EvalLines(), interrupts, poll_s, out or sys.stdout)
    except OSError as err:  # events.jsonl unreadable (permissions, a folder or a FIFO in its place)
        raise UserError(f"cannot read {watcher.events.path}: {err.strerror or err}", ExitCode.USAGE) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if overlong_note(watcher.overlong):
            print(f"peft-advisor: {overlong_note(watcher.overlong)}", file=sys.stderr)


def _follow_loop(watcher, summary: RunSummary, interrupts, poll_s, out) -> int:
    """Poll the watcher, printing as events come, until it has an outcome (or a third Ctrl-C)."""
    while interrupts[0] < 3:
        batch = watcher.poll()
        _show(batch.events, summary, out)
        if batch.outcome is not None:
            return _report(batch.outcome)
        if not batch.more:
            time.sleep(poll_s)
    print(f"peft-advisor: detached; the trainer keeps running: peft-advisor monitor {watcher.run_dir}", file=sys.stderr)
    return int(ExitCode.INTERRUPTED)


def _report(outcome) -> int:
    """The outcome's remarks on stderr (a died run: why, and train.log's last lines); its exit code."""
    for note in outcome.notes:
        print(f"peft-advisor: {note}", file=sys.stderr)
    if outcome.died:
        tail = "; last lines of train.log:" if outcome.log_lines else "; train.log is empty or missing"
        print(f"peft-advisor: {outcome.message}{tail}", file=sys.stderr)
        for line in outcome.log_lines:
            print(f"  {line}", file=sys.stderr)
    return outcome.exit_code


def _forwarder(launched, interrupts):
    def forward(signum, frame):
        interrupts[0] += 1
        if interrupts[0] < 3:
            launched.stop()
        what = ("stopping: the trainer saves a checkpoint after this step", "stopping now", "detaching")
        print(f"peft-advisor: {what[min(interrupts[0], 3) - 1]}", file=sys.stderr)

    return forward


# ---------------------------------------------------------------- lines


def _show(events, summary: RunSummary, out) -> None:
    for event in events:
        summary.apply(event)
        line = format_event(event, summary) if _shown(event, summary) else None
        if line:
            print(line, file=out, flush=True)


class _EvalLines(RunSummary):
    """The summary the follow loop prints from, plus when it last printed an evaluation's line."""

    last_eval_line_t: float | None = None


def _shown(event: dict, summary: RunSummary) -> bool:
    """Whether an event gets a line: an evaluation's progress only every EVAL_LINE_EVERY_S (by the
    events' own clock, so `monitor` replays a run with the same lines), other events always."""
    t = event.get("t") if isinstance(event.get("t"), (int, float)) else None
    if event.get("kind") != "eval_progress" or event.get("status") == "stopped":
        if event.get("kind") == "eval_start":
            summary.last_eval_line_t = t
        return True
    last = getattr(summary, "last_eval_line_t", None)
    if last is not None and t is not None and t - last < EVAL_LINE_EVERY_S:
        return False
    summary.last_eval_line_t = t
    return True


def fmt_duration(seconds: float | None) -> str:
    """A negative time (clocks that moved back, a hand-edited file) is unknown, not `-1h59m`."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def progress_bar(fraction: float | None, width: int = BAR_WIDTH) -> str:
    if fraction is None:
        return "[" + "?" * width + "]"
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def format_event(e: dict, s: RunSummary) -> str | None:
    """One line for an event, after it was applied to the summary `s`."""
    kind = e.get("kind")
    if kind == "start":
        resumed = f", resumed at step {e['resumed_from_step']}" if e.get("resumed_from_step") else ""
        several = (s.gpus or 1) > 1
        per_gpu = " per GPU" if several else ""
        est = f"; estimate peak {fmt_bytes(s.estimate_peak_bytes)}{per_gpu}" if s.estimate_peak_bytes else ""
        unit = "processes" if s.device == "cpu" else "GPUs"
        gpus = f", {s.gpus} {unit} {(s.strategy or '').upper()}, global batch {s.global_batch}" if several else ""
        return (
            f"start  {s.method or '?'} on {s.model or '?'} ({s.device or '?'}{gpus}): {fmt_count(s.trainable_params)} "
            f"trainable of {fmt_count(s.total_params)} params, {s.total_steps or '?'} steps{resumed}{est}"
            f"{truncation_note(e)}"  # rows cut at max_seq_len, when more than a handful
        )
    if kind == "step":
        total = s.total_steps or "?"
        parts = [f"step {s.step:>5}/{total}", progress_bar(s.progress), f"{(s.progress or 0) * 100:3.0f}%"]
        parts.append(f"loss {_num(e.get('loss'), '.4f')}")
        parts.append(f"lr {_num(e.get('lr'), '.2e')}")
        if e.get("tokens_per_s") is not None:
            parts.append(f"{e['tokens_per_s']:.0f} tok/s")
        if e.get("mem_peak_bytes"):
            parts.append(f"peak {fmt_bytes(e['mem_peak_bytes'])}")
        parts.append(f"ETA {fmt_duration(s.eta_s)}")
        parts += per_gpu_memory(e)
        return "  ".join(parts)
    if kind == "eval":
        acc = e.get("eval_accuracy")
        accuracy = f"  accuracy {acc * 100:.1f}%" if isinstance(acc, (int, float)) else ""
        return f"eval   step {e.get('step')}  eval_loss {_num(e.get('eval_loss'), '.4f')}{accuracy}"
    if kind in ("eval_start", "eval_progress"):
        return eval_line(e)
    if kind == "checkpoint":
        return f"saved  {e.get('path')} ({fmt_file_bytes(e.get('adapter_bytes'))})"
    if kind == "end":
        parts = [f"end    {s.status}"]
        if s.message:
            parts.append(s.message)
        parts.append(f"final loss {_num(s.final_loss, '.4f')}")
        if s.best_eval_loss is not None:
            parts.append(f"best eval loss {_num(s.best_eval_loss, '.4f')}")
        parts.append(f"wall {fmt_duration(s.wall_s)}")
        if s.mem_peak_bytes:
            est = f" (estimate {fmt_bytes(s.estimate_peak_bytes)})" if s.estimate_peak_bytes else ""
            parts.append(f"peak {fmt_bytes(s.mem_peak_bytes)}{est}")
        parts += per_gpu_memory(e)
        return "  ".join(parts)
    return None


def eval_line(e: dict) -> str:
    """`eval   baseline 12/50 batches`: an evaluation under way (it can take minutes before step 1)."""
    name = eval_name(e.get("step"))
    if e.get("kind") == "eval_start":
        rows = f" ({e['rows']} rows)" if isinstance(e.get("rows"), int) else ""
        return f"eval   {name} 0/{_count(e.get('batches'))} batches{rows}"
    done, total = _count(e.get("done")), _count(e.get("total"))
    if e.get("status") == "stopped":
        return f"eval   {name} stopped at {done}/{total} batches"
    return f"eval   {name} {done}/{total} batches"


def _count(value) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "?"


def per_gpu_memory(e: dict) -> list[str]:
    """`by GPU 10.2 GiB | 10.1 GiB`: each rank's peak, when the run has several and they were measured."""
    values = e.get("mem_peak_bytes_by_rank")
    if not isinstance(values, list) or not any(isinstance(v, int) and v > 0 for v in values):
        return []
    return ["by GPU " + " | ".join(fmt_bytes(v) if isinstance(v, int) and v > 0 else "—" for v in values)]


def _num(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"
