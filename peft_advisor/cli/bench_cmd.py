"""`peft-advisor bench RECIPE`: run each candidate method for the same short budget, side by side.

One trainer child per candidate, one after another (they would fight over the GPU), each in its
own run folder under the bench folder. Progress goes to stderr; the table to stdout; bench.json
and bench.md to the bench folder, rewritten after every candidate so an interrupted bench keeps
what it measured. A candidate that fails (out of memory, a library error, no CUDA for QLoRA) is a
row with its reason, never the end of the bench. Ctrl-C stops the running child the way `train`
does (it checkpoints and ends `cancelled`), skips the rest and writes the files.

Each child is followed by the run watcher (`core.watch`), as `train` and the app follow theirs;
every candidate that ran on a GPU is kept there as local calibration (`calibration_store`).
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time
from pathlib import Path

from peft_advisor.core import bench
from peft_advisor.core import run_folder as rf
from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.units import fmt_bytes
from peft_advisor.core.watch import Batch, RunWatcher, overlong_note

TIME_LIMIT_ENV = "PEFT_ADVISOR_TIME_LIMIT_S"
"""Seconds of training the child may spend; a trainer that honours it says `time_limit_s` in its
start event, stops cleanly after the step that crosses it and runs its final eval."""
GRACE_S = 60.0
"""How long past its limit a child that honours the limit may take (its last step and final eval)
before the bench stops it anyway."""
POLL_S = 0.25


def register(sub) -> None:
    p = sub.add_parser("bench", help="run several methods on a recipe's model and data for an equal budget")
    p.add_argument("recipe", metavar="RECIPE", help="recipe TOML file (its model, data and shapes are kept); "
                                                   "with --tui, a bench folder to view instead")
    p.add_argument("--methods", help=f"comma list (default, or empty: all: {', '.join(bench.known_candidates()[:8])}; "
                                     "also galore-8bit, galore-layerwise)")
    p.add_argument("--steps", type=int, metavar="N", help=f"optimizer steps per method (default: the recipe's, at most {bench.DEFAULT_STEPS})")
    p.add_argument("--time-budget", type=float, metavar="MIN", help="minutes of training in all, split evenly over the methods")
    p.add_argument("--out", metavar="DIR", help="bench folder, new or empty (default: runs/bench-<timestamp>)")
    p.add_argument("--force", action="store_true", help="reuse an existing bench folder, replacing its runs")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow a recipe with model.trust_remote_code = true to run the model's own Python code")
    p.add_argument("--tui", action="store_true", help="show the table and every loss curve in the terminal UI "
                                                      "when done (RECIPE a bench folder: show it, run nothing)")
    p.set_defaults(func=run_bench)


def run_bench(args) -> int:
    from peft_advisor.core import recipe as rc

    if getattr(args, "tui", False) and Path(args.recipe).is_dir():
        return _view(Path(args.recipe))

    recipe = _absolute_paths(rc.load(args.recipe), Path(args.recipe).parent)
    rc.check_remote_code(recipe, args.recipe, getattr(args, "trust_remote_code", False))  # as train does
    names = bench.parse_methods(args.methods)
    out = Path(args.out or f"runs/bench-{time.strftime('%Y%m%d-%H%M%S')}").absolute()
    gpu = _gpu_name()
    runnable = sum(c.runnable for c in bench.plan(recipe, names, gpu is not None, bench.Budget(steps=1), str(out)))
    budget = bench.make_budget(recipe, args.steps, args.time_budget, runnable)  # time is split over these
    candidates = bench.plan(recipe, names, gpu is not None, budget, str(out))
    _prepare_out(out, names, args.force)
    result = bench.BenchResult(recipe=str(args.recipe), model=recipe.model.id, data=recipe.data.path,
                               budget=budget, gpu=gpu, started=time.time())
    print(f"peft-advisor: bench of {len(names)} methods, {budget.describe()}, in {out}", file=sys.stderr)
    runner = Runner(out, gpu, budget, len(candidates))
    previous = {sig: signal.signal(sig, runner.on_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}  # kill = Ctrl-C
    try:
        for index, cand in enumerate(candidates, 1):
            row = runner.run(index, cand) if cand.runnable and not runner.interrupted else _not_run(cand, runner)
            _fill_estimate(row, cand)
            result.rows.append(row)
            _write(out, result)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    result.finished, result.interrupted = time.time(), runner.interrupted
    _write(out, result)
    print(bench.table(result.rows))
    print(f"peft-advisor: wrote {out / 'bench.md'} and {out / 'bench.json'}", file=sys.stderr)
    code = int(_exit_code(result))
    if getattr(args, "tui", False):
        _view(out)
    return code


def _view(bench_dir: Path) -> int:
    """The terminal UI on a bench folder: its table and all the candidates' loss curves."""
    from peft_advisor.cli import _open_tui

    if not (bench_dir / "bench.json").is_file():
        raise UserError(f"{bench_dir}: holds no bench.json (give a folder `peft-advisor bench` wrote)", ExitCode.USAGE)
    return _open_tui(bench=str(bench_dir))


def _absolute_paths(recipe, recipe_dir: Path):
    """The candidates' recipes live in the bench folder: a relative data file (found from the
    working folder or the recipe's folder, as the trainer looks) or model folder must stay found."""
    from peft_advisor.core import recipe as rc

    changes = {}
    for key, value, bases in (("data.path", recipe.data.path, (Path.cwd(), recipe_dir)), ("model.id", recipe.model.id, (Path.cwd(),))):
        if value == "demo" or Path(value).expanduser().is_absolute():
            continue
        found = next((base / Path(value).expanduser() for base in bases if (base / Path(value).expanduser()).exists()), None)
        if found is not None:
            changes[key] = str(found.absolute())
    return rc.updated(recipe, changes) if changes else recipe


def _not_run(cand, runner) -> bench.Row:
    if runner.interrupted and cand.runnable:
        return bench.skipped_row(cand, "not-run", "the bench was interrupted first")
    return bench.skipped_row(cand)


def _exit_code(result) -> ExitCode:
    if result.interrupted:
        return ExitCode.INTERRUPTED
    statuses = {r.status for r in result.rows}
    if "ok" in statuses:
        return ExitCode.OK
    if statuses == {"needs-cuda"}:
        return ExitCode.NO_GPU
    if statuses <= {"oom", "needs-cuda"}:
        return ExitCode.OOM
    return ExitCode.TRAIN_FAILED


# ---------------------------------------------------------------- one child per candidate


class Runner:
    """Runs candidates one at a time; Ctrl-C stops the current child and the ones after it."""

    def __init__(self, out: Path, gpu: str | None, budget: bench.Budget, count: int):
        self.out, self.gpu, self.budget, self.count = out, gpu, budget, count
        self.current = None
        self.interrupted = False

    def on_interrupt(self, signum, frame) -> None:
        again = self.interrupted
        self.interrupted = True
        if self.current is not None:
            self.current.stop()
        what = "stopping now" if again else "stopping the current method (it saves a checkpoint); the rest are skipped"
        print(f"peft-advisor: {what}", file=sys.stderr, flush=True)

    def run(self, index: int, cand) -> bench.Row:
        from peft_advisor import launch
        from peft_advisor.core import recipe as rc

        tag = f"[{index}/{self.count}] {cand.name}"
        recipe_path = rc.save(cand.recipe, self.out / "recipes" / f"{cand.name}.toml", force=True,
                              header=f"bench candidate {cand.name}")
        env = {TIME_LIMIT_ENV: f"{self.budget.time_s:.1f}"} if self.budget.time_s is not None else {}
        print(f"{tag}: starting (lr {cand.recipe.train.lr:g})", file=sys.stderr, flush=True)
        try:
            self.current = launch.start(recipe_path, cand.recipe.output.dir, env=env)
        except UserError as err:
            return bench.skipped_row(cand, "error", str(err))
        try:
            return self._follow(tag, cand)
        finally:
            self.current = None

    def _follow(self, tag: str, cand) -> bench.Row:
        """Follow the child through the run watcher (as `train` and the app do) until the run is
        over, stopping it once its time budget is spent."""
        from peft_advisor import launch

        child, run_dir = self.current, Path(cand.recipe.output.dir)
        watcher = RunWatcher(run_dir, child, calibrate="bench" if self.gpu else None, gpu_name=self.gpu)
        events, progress, clock = [], Progress(tag), BudgetClock(self.budget.time_s)
        started, outcome = False, None
        while outcome is None:
            try:
                started = started or launch.check_started(child)
            except UserError as err:
                return bench.skipped_row(cand, _setup_status(err), str(err))
            batch = watcher.poll() if started else Batch([], [], None, False)
            events += batch.events
            progress.show(batch.events)
            if clock.expired(events):
                print(f"{tag}: time budget reached; stopping it", file=sys.stderr, flush=True)
                child.stop()
            outcome = batch.outcome
            if outcome is None and not batch.more:
                time.sleep(POLL_S)
        return self._row(tag, cand, watcher, events, outcome, clock.stopped)

    def _row(self, tag: str, cand, watcher: RunWatcher, events, outcome, stopped_at_budget: bool) -> bench.Row:
        """The candidate's row, and its lines on stderr: status, notes, calibration kept."""
        row = bench.fold(cand.name, cand.method, events, lr=cand.recipe.train.lr, adapter_bytes=saved_bytes(watcher.run_dir),
                         stopped_at_budget=stopped_at_budget, run_dir=str(watcher.run_dir))
        if outcome.died:  # the watcher's words, and the last line the child printed (it names the error)
            row.reason = outcome.message + (f": {outcome.log_lines[-1].strip()[:300]}" if outcome.log_lines else "")
        notes = [*outcome.notes, overlong_note(watcher.overlong)]
        status = f"{tag}: {bench.STATUS_TEXT.get(row.status, row.status)}" + (f": {row.reason}" if row.reason else "")
        record = outcome.calibration
        if record is not None:
            notes.append(f"kept as calibration for {record.gpu}, {record.model} (measured/estimated {record.ratio:.3f})")
        for line in [status, *(f"{tag}: {note}" for note in notes if note)]:
            print(line, file=sys.stderr, flush=True)
        return row


class BudgetClock:
    """When a candidate's time budget runs out (once): it counts from the end of setup and of the
    baseline eval (known once the first step is reported), plus grace when the child enforces
    the limit itself (its start event says `time_limit_s`)."""

    def __init__(self, time_s: float | None):
        self.time_s, self.deadline, self.stopped = time_s, None, False

    def expired(self, events) -> bool:
        if self.time_s is None or self.stopped:
            return False
        if self.deadline is None:
            self.deadline = self._deadline(events)
        self.stopped = self.deadline is not None and time.time() > self.deadline
        return self.stopped

    def _deadline(self, events) -> float | None:
        """Unix time to stop at, once the first step is reported."""
        if not any(e.get("kind") == "step" for e in events):
            return None
        before = [e for e in events if e.get("kind") == "start" or (e.get("kind") == "eval" and not e.get("step"))]
        begun = max((e.get("t") or 0.0 for e in before), default=0.0) or time.time()
        honoured = any(e.get("time_limit_s") for e in events if e.get("kind") == "start")
        return begun + self.time_s + (GRACE_S if honoured else 0.0)


def _setup_status(err: UserError) -> str:
    if err.code == ExitCode.NO_GPU:
        return "needs-cuda"
    if err.code == ExitCode.INTERRUPTED:
        return "cancelled"
    return "oom" if err.code == ExitCode.OOM else "error"


class Progress:
    """A stderr line at the start, every tenth of the steps (or 10 s), and at the end of a child."""

    def __init__(self, tag: str):
        self.tag, self.every, self.last_t = tag, 1, 0.0

    def show(self, events) -> None:
        for e in events:
            kind = e.get("kind")
            if kind == "start":
                total = e.get("total_steps")
                self.every = max(1, int(total) // 10) if isinstance(total, int) and total > 0 else 1
                planned = f"{total} step{'s' if total != 1 else ''}" if isinstance(total, int) else "? steps"
                print(f"{self.tag}: training on {e.get('device')}, {planned} planned", file=sys.stderr, flush=True)
            elif kind == "step" and isinstance(e.get("step"), int):
                now = time.monotonic()
                if e["step"] % self.every == 0 or e["step"] == 1 or now - self.last_t >= 10:
                    self.last_t = now
                    print(self._step_line(e), file=sys.stderr, flush=True)

    def _step_line(self, e: dict) -> str:
        parts = [f"{self.tag}: step {e['step']}"]
        if isinstance(e.get("loss"), (int, float)):
            parts.append(f"loss {e['loss']:.4f}")
        if isinstance(e.get("tokens_per_s"), (int, float)):
            parts.append(f"{e['tokens_per_s']:.0f} tok/s")
        if e.get("mem_peak_bytes"):
            parts.append(f"peak {fmt_bytes(e['mem_peak_bytes'])}")
        return "  ".join(parts)


def saved_bytes(run_dir: Path) -> int | None:
    """Size of the saved adapter (or whole model, with its shards) in a finished run folder."""
    for name in ("adapter_model.safetensors", "model.safetensors"):
        if (run_dir / name).is_file():
            return (run_dir / name).stat().st_size
    shards = list(run_dir.glob("model-*-of-*.safetensors"))
    return sum(p.stat().st_size for p in shards) if shards else None


# ---------------------------------------------------------------- the bench folder


def _gpu_name() -> str | None:
    from peft_advisor.calibration_store import visible_gpu_name

    return visible_gpu_name()


def _fill_estimate(row: bench.Row, cand) -> None:
    """Rows whose child never reported its estimate (it could not start) get the parent's."""
    if row.peak_estimated_bytes is not None or cand.recipe is None:
        return
    try:
        from peft_advisor.core.estimate import estimate
        from peft_advisor.core.model_spec import load_model_spec
        from peft_advisor.core.recipe import settings_from_recipe

        row.peak_estimated_bytes = estimate(load_model_spec(cand.recipe.model.id), settings_from_recipe(cand.recipe)).peak_bytes
    except (UserError, ValueError, KeyError):
        pass  # a model the estimator does not know: the column stays empty


def _prepare_out(out: Path, names: list[str], force: bool) -> None:
    """A new (or empty) folder, or with --force an old bench folder whose candidate runs are replaced.
    Only folders that are run folders are ever removed; a folder of other things is left alone."""
    ours = {*names, "recipes", "bench.json", "bench.md"}  # what a bench (even an interrupted one) writes

    def not_ours(p: Path) -> bool:
        return not (p.name in ours or p.name.startswith(".") or _is_run(p))

    foreign = sorted(p.name for p in out.iterdir() if not_ours(p)) if out.is_dir() else []
    if foreign:
        raise UserError(f"{out}: holds {foreign[0]!r}, not a bench's; give a new or empty --out", ExitCode.EXISTS)
    clashes = [out / n for n in names if (out / n).exists()] + [p for p in (out / "bench.json",) if p.exists()]
    if clashes and not force:
        raise UserError(f"{out}: already holds a bench ({clashes[0].name}); use --force or another --out", ExitCode.EXISTS)
    for path in clashes:
        if path.is_dir():
            if not _is_run(path):
                raise UserError(f"{path}: exists and is not a run folder; not removing it", ExitCode.EXISTS)
            shutil.rmtree(path)
    try:
        (out / "recipes").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{out}: cannot create: {err.strerror}", ExitCode.USAGE) from None


def _is_run(path: Path) -> bool:
    """A folder a trainer made (`run_folder.is_run_folder`), the only kind --force may remove. A
    train.log alone no longer counts: the launcher keeps a failed setup's log in a hidden staging
    folder, so such a folder is someone else's, and is left alone."""
    return rf.is_run_folder(path)


def _write(out: Path, result: bench.BenchResult) -> None:
    rf.atomic_write_text(out / "bench.json", json.dumps(result.to_dict(), indent=2, allow_nan=True) + "\n")
    rf.atomic_write_text(out / "bench.md", bench.render_markdown(result))
