"""The run folder protocol: the one place that says what a run folder holds and how the launcher
(parent), the trainer (child) and the watchers (CLI, app, bench) agree on it.

A run folder is made whole or not at all (a staging folder renamed into place), is written by one
trainer at a time (an OS lock the kernel drops when that trainer dies, however it dies), and its
checkpoints appear only when complete (written under `.partial/`, then renamed). Files the user
reads are replaced atomically (a temp file beside them, then a rename), never half-written.

Pure: imports neither torch nor textual, so every front end can use it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

try:  # POSIX; elsewhere the lock is advisory by convention only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

from peft_advisor.core.errors import ExitCode

EVENTS, RUN_JSON, LOG, RECIPE, LOCK = "events.jsonl", "run.json", "train.log", "recipe.toml", ".lock"
MARKERS = (EVENTS, RUN_JSON)  # either one makes a folder a run folder
STAGING_ENV = "PEFT_ADVISOR_STAGING"  # the launcher's staging folder, which the child renames into place
SETUP_EXIT_FILE = "setup_exit_code"  # in the staging folder: the code of a failed setup (torchrun exits 1)
FAULT_ENV = "PEFT_ADVISOR_FAULT"  # tests only: a fault the trainer injects at a precise moment
GPU_CAP_ENV = "PEFT_ADVISOR_GPU_CAP_GIB"  # caps the trainer's allocator: rehearse a smaller card
CHECKPOINT_PREFIX = "checkpoint-"
PARTIAL = ".partial"  # checkpoints being written; renamed out of it when complete
CHECKPOINT_LAST_FILE = "trainer_state.json"  # Trainer writes it after the weights, optimizer and RNG state

END_CODES = {"ok": ExitCode.OK, "cancelled": ExitCode.INTERRUPTED, "oom": ExitCode.OOM, "error": ExitCode.TRAIN_FAILED}


def exit_code(status: str | None) -> int:
    """The exit code of a run that ended with `status` (an `end` event's); unknown is a failure."""
    return int(END_CODES.get(status or "", ExitCode.TRAIN_FAILED))


def is_run_folder(path) -> bool:
    """A folder a trainer made: it holds events.jsonl or run.json."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in MARKERS)


# ---------------------------------------------------------------- atomic files


def atomic_write_text(path, text: str, mode: int | None = None) -> None:
    """A temp file in the same folder, flushed to disk, then renamed over `path`: a reader sees the
    old file or the new one, and a full disk or a kill leaves the old one (the temp file is removed).
    The new file keeps the old one's permissions (else `mode`, else 0o644). The one atomic write of
    the project: run folders, recipes, the README's matrix, bench tables."""
    import tempfile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        keep = path.stat().st_mode & 0o7777 if path.exists() else None
        os.chmod(tmp, keep if keep is not None else (mode if mode is not None else 0o644))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path) -> dict:
    """A JSON object from a file, or {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def read_run_json(run_dir) -> dict:
    return read_json(Path(run_dir) / RUN_JSON)


def read_summary(folder):
    """The run's events folded as every front end folds them; an unreadable events.jsonl (or a
    folder in its place) is an empty run, so listings still show the folder."""
    from peft_advisor.core.events import read_events, summarize

    try:
        events = read_events(Path(folder) / EVENTS)[0]
    except OSError:
        events = []
    return summarize(events)


# ---------------------------------------------------------------- checkpoints


def checkpoint_step(path) -> int | None:
    name = Path(path).name
    digits = name.removeprefix(CHECKPOINT_PREFIX)
    return int(digits) if name.startswith(CHECKPOINT_PREFIX) and digits.isdigit() else None


def is_complete_checkpoint(path) -> bool:
    """Complete when Trainer's last file is there (folders renamed out of `.partial/` always are;
    this also catches torn folders left by older versions or other tools)."""
    return Path(path).is_dir() and (Path(path) / CHECKPOINT_LAST_FILE).is_file()


def checkpoints(run_dir) -> list[Path]:
    """`checkpoint-N` folders, lowest N first."""
    found = [(checkpoint_step(p), p) for p in Path(run_dir).glob(CHECKPOINT_PREFIX + "*") if p.is_dir()]
    return [p for step, p in sorted((s, p) for s, p in found if s is not None)]


def last_complete_checkpoint(run_dir) -> tuple[Path | None, list[Path]]:
    """The newest complete checkpoint, and the newer incomplete ones passed over (to say so)."""
    skipped = []
    for path in reversed(checkpoints(run_dir)):
        if is_complete_checkpoint(path):
            return path, skipped
        skipped.append(path)
    return None, skipped


def has_checkpoint(run_dir) -> bool:
    return last_complete_checkpoint(run_dir)[0] is not None


# ---------------------------------------------------------------- one trainer per folder


class FolderBusy(Exception):
    """Another live process holds the folder's lock; `pid` is what it wrote there (or None)."""

    def __init__(self, pid: int | None):
        super().__init__(pid)
        self.pid = pid


def busy_message(run_dir, pid: int | None) -> str:
    who = f"trainer pid {pid}" if pid else "another trainer"
    return f"{run_dir}: run folder in use by {who}; wait for it to end or stop it first"


class RunLock:
    """An exclusive `flock` on FOLDER/.lock, held for the trainer's life. The kernel drops it when
    the process dies (Ctrl-C, kill -9, a crash), so a stale lock never blocks a resume."""

    def __init__(self, folder) -> None:
        self.path = Path(folder) / LOCK
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise FolderBusy(lock_holder(self.path.parent)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def lock_holder(folder) -> int | None:
    """The pid written in a held lock, else None (no lock file, or nobody holds it)."""
    path = Path(folder) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:  # held exclusively: by a live trainer
                text = os.read(fd, 32).decode("ascii", "replace").strip()
                return int(text) if text.isdigit() and valid_pid(int(text)) else 0
            fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


# ---------------------------------------------------------------- processes


def valid_pid(pid) -> bool:
    """A process id as the kernel hands out: run.json is a file anyone can edit, and os.kill reads
    0 as 'my process group' and -1 as 'every process I may signal'."""
    return isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < 2**31


def trainer_alive(pid: int | None) -> bool:
    """Is `pid` a live (not zombie) trainer? Checks /proc where there is one."""
    if not valid_pid(pid):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    if not proc.is_dir():
        return True
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes()
    except OSError:
        return False
    return state not in ("Z", "X") and b"peft_advisor.train" in cmdline


def stop(run_dir) -> bool:
    """SIGINT to the trainer recorded in run_dir/run.json; False when none is running."""
    pid = read_run_json(run_dir).get("pid")
    if not trainer_alive(pid):  # which also checks that it is a real pid
        return False
    os.kill(pid, signal.SIGINT)
    return True


def publish_checkpoint(run_dir, name: str) -> Path:
    """Move a whole checkpoint from `.partial/` into the run folder (one rename), and sync the folder
    so the rename survives a power cut."""
    run_dir = Path(run_dir)
    final = run_dir / name
    if final.exists():  # the same step saved again (a resume that re-saves): the new one wins
        import shutil

        shutil.rmtree(final)
    os.rename(run_dir / PARTIAL / name, final)
    try:
        os.rmdir(run_dir / PARTIAL)  # nothing else is being written there
    except OSError:
        pass
    _fsync_dir(run_dir)
    return final


def _fsync_dir(folder) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def discard_partial(run_dir) -> None:
    """Checkpoints a killed trainer left half-written (only ever under `.partial/`)."""
    import shutil

    shutil.rmtree(Path(run_dir) / PARTIAL, ignore_errors=True)


# ---------------------------------------------------------------- faults (tests only)

_fault_calls: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Tests set FAULT_ENV to `NAME:ACTION[:N]` to break the trainer at the N-th pass (default 1)
    through the point called NAME: `kill` is SIGKILL to itself, `term` SIGTERM to itself, `enospc`
    a full disk; `NAME:slow:SECONDS` pauses at every pass. Unset, this costs one dictionary lookup."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    parts = spec.split(":")
    if parts[0] != name or len(parts) < 2:
        return
    if parts[1] == "slow":  # NAME:slow:SECONDS: a pause at every pass (a slow evaluation)
        time.sleep(float(parts[2]) if len(parts) > 2 else 1.0)
        return
    _fault_calls[name] = _fault_calls.get(name, 0) + 1
    if _fault_calls[name] != (int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 1):
        return
    if parts[1] in ("kill", "term"):
        os.kill(os.getpid(), signal.SIGKILL if parts[1] == "kill" else signal.SIGTERM)
    if parts[1] == "enospc":
        import errno

        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ---------------------------------------------------------------- resuming


def acquire_or_refuse(folder) -> RunLock:
    """The folder's lock, or one line naming the pid that holds it."""
    from peft_advisor.core.errors import UserError

    try:
        return RunLock(folder).acquire()
    except FolderBusy as busy:
        raise UserError(busy_message(folder, busy.pid), ExitCode.EXISTS) from None
    except OSError as err:
        raise UserError(f"{folder}: cannot lock the run folder: {err.strerror or err}", ExitCode.USAGE) from None


class RunComplete(Exception):
    """`--resume` of a run that already reached its last step: nothing to do (exit 0)."""


# Keys whose change makes a checkpoint's weights or optimizer state the wrong shape.
STATE_KEYS = ("model.id", "method.name", "method.rank", "method.targets", "method.vera_rank",
              "method.galore_rank", "method.galore_layerwise", "method.galore_8bit", "method.oft_block_size",
              "method.lokr_factor", "method.c3a_block_size", "train.optimizer")


def check_resumable(run_dir, recipe) -> None:
    """Before a resume: refuse a recipe that changed what the checkpoint holds (PyTorch would only
    say 'parameter group doesn't match'), and stop at once if the run already ended at its last step."""
    from peft_advisor.core import recipe as rc
    from peft_advisor.core.errors import UserError

    run_dir = Path(run_dir)
    try:
        before = rc.load(run_dir / RECIPE)
    except UserError:
        before = None
    if before is not None:
        for key in STATE_KEYS:
            old, new = _key(before, key), _key(recipe, key)
            if old != new:
                raise UserError(f"{run_dir}: {key} changed since the run started ({_show(old)} -> {_show(new)}); "
                                f"a checkpoint cannot resume with it: resume with {run_dir / RECIPE} "
                                f"or start a new run", ExitCode.BAD_RECIPE)
        world_change(run_dir, before, recipe)
    # Trainer's state at the top of the folder is written when a run ends (ok or cancelled), after
    # its last step; a finished run is one whose state reached the steps the recipe asks for.
    state = read_json(run_dir / CHECKPOINT_LAST_FILE)
    done, planned = state.get("global_step"), state.get("max_steps")
    wanted = recipe.train.max_steps or planned
    if isinstance(done, int) and isinstance(wanted, int) and 0 < wanted <= done:
        raise RunComplete(f"{run_dir}: the run is complete (step {done} of {wanted}); nothing to resume. "
                          f"Raise train.max_steps to train further")


def world_change(run_dir, before, recipe) -> str | None:
    """A resume on another number of processes than the checkpoint was written with: the one-line
    note when it can (DDP and one-process checkpoints hold every rank's full state; FSDP's are
    saved as full state dicts, see train/dist.py), a refusal when it cannot (ZeRO's optimizer
    states are partitioned per rank; a change of engine changes the checkpoint's layout)."""
    from peft_advisor.core import recipe as rc
    from peft_advisor.core.errors import UserError

    was, now = read_run_json(run_dir).get("world_size") or 1, rc.world_size(recipe.distributed)
    old, new = (before.distributed.strategy if was > 1 else "single"), (recipe.distributed.strategy if now > 1 else "single")
    if was == now and old == new:
        return None
    engines = {"single": "plain", "ddp": "plain", "fsdp": "fsdp", "zero2": "zero", "zero3": "zero"}
    if engines[old] != engines[new] or (engines[old] == "zero" and old != new):
        raise UserError(f"{run_dir}: the checkpoint was written with {old} on {was} process(es); it cannot resume "
                        f"with {new}: keep distributed.strategy = \"{before.distributed.strategy}\" or start a new run",
                        ExitCode.BAD_RECIPE)
    if engines[old] == "zero":
        raise UserError(f"{run_dir}: a DeepSpeed {old} checkpoint holds optimizer states partitioned over {was} "
                        f"processes and resumes only on {was}; for another count convert it with DeepSpeed's "
                        "ds_to_universal.py (not automated here), or train on from its weights (zero_to_fp32.py) "
                        "in a new run", ExitCode.BAD_RECIPE)
    t = recipe.train
    batch_was, batch_now = before.train.micro_batch * before.train.grad_accum * was, t.micro_batch * t.grad_accum * now
    if batch_was == batch_now:
        return f"resuming a checkpoint of {was} process(es) on {now}; global batch {batch_now} as before"
    keep = batch_was // (t.micro_batch * now) if batch_was % (t.micro_batch * now) == 0 else None
    hint = f"; set train.grad_accum = {keep} to keep it" if keep else ""
    return f"resuming a checkpoint of {was} process(es) on {now}: the global batch changes from {batch_was} to {batch_now}{hint}"


def _key(recipe, dotted: str):
    section, name = dotted.split(".")
    return getattr(getattr(recipe, section), name)


def _show(value) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC, or PyTorch's serializer's words for it (it raises RuntimeError, not OSError)."""
    import errno

    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return "No space left on device" in text or ("inline_container" in text and "write" in text.lower())


def rotate_checkpoints(run_dir, keep: int | None) -> None:
    """Keep the newest `keep` complete checkpoints, removing older ones (oldest first, so a kill
    mid-way never leaves fewer than `keep`); torn folders older than the newest complete one go too."""
    import shutil

    if not keep:
        return
    found = checkpoints(run_dir)
    complete = [p for p in found if is_complete_checkpoint(p)]
    if not complete:
        return
    newest = checkpoint_step(complete[-1])
    doomed = complete[:-keep] + [p for p in found if not is_complete_checkpoint(p) and checkpoint_step(p) < newest]
    for path in sorted(doomed, key=checkpoint_step):
        shutil.rmtree(path, ignore_errors=True)
