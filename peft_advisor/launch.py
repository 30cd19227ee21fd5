"""Start, watch and stop trainer child processes, without importing the training stack.

The child is `python -m peft_advisor.train RECIPE --run-dir DIR [--resume]`, started from an
argument list (never a shell) in its own session, so closing the terminal or the TUI does not
kill a run. Its stdout and stderr go to train.log. For a new run the launcher first makes a hidden
staging folder next to the run folder to hold train.log; the child fills it and renames it into
place once the recipe, model and data are known to be good. If the child fails before that, no run
folder exists: `wait_started` reads the one-line reason from the staging log and removes it.

A recipe whose [distributed] table asks for several processes is started through the engine's
own launcher instead, `python -m torch.distributed.run ...` or `python -m accelerate.commands.launch
...`, with the same trainer module after it; that launcher is the child we watch and signal (it
forwards SIGINT to every rank), and rank 0 does what the single child does above.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from peft_advisor.core import recipe as rc
from peft_advisor.core import run_folder as rf
from peft_advisor.core.catalog import method_info
from peft_advisor.core.distributed import deepspeed_missing
from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.sources import check_sources

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


SHUTDOWN_TIMEOUT_S = "300"  # torchrun's wait for the ranks after forwarding a stop: room for a checkpoint


def build_argv(recipe_path, run_dir, resume: bool = False, dist=None, port: int | None = None) -> list[str]:
    """The child's command line, run with the interpreter running us; behind torchrun or
    accelerate when `dist` (a recipe's [distributed] table) asks for more than one process."""
    argv = ["-m", "peft_advisor.train", str(recipe_path), "--run-dir", str(run_dir)] + (["--resume"] if resume else [])
    if dist is None or rc.world_size(dist) == 1:
        return [sys.executable, *argv]
    return launcher_argv(dist, dist.master_port if port is None else port) + argv


def launcher_argv(d, port: int) -> list[str]:
    """torchrun or `accelerate launch` for one node of the run, up to the training module."""
    per_node = rc.processes_per_node(d)
    if d.launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(per_node),
                "--nnodes", str(d.nnodes), "--node_rank", str(d.node_rank),
                "--master_addr", d.master_addr, "--master_port", str(port)]
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(per_node * d.nnodes),
            "--num_machines", str(d.nnodes), "--machine_rank", str(d.node_rank),
            "--main_process_ip", d.master_addr, "--main_process_port", str(port),
            "--mixed_precision", d.mixed_precision, "--dynamo_backend", "no"]
    if d.strategy != "fsdp":
        return argv + ["--multi_gpu"]
    version = d.fsdp_version or fsdp_version_installed()
    return argv + ["--use_fsdp", "--fsdp_version", str(version), "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
                   "--fsdp_reshard_after_forward", "true" if version == 2 else "FULL_SHARD",
                   "--fsdp_state_dict_type", "FULL_STATE_DICT"]


def fsdp_version_installed() -> int:
    """2 where torch (>= 2.6, `fully_shard`) and accelerate (>= 1.6) have FSDP2, else 1; read from
    the package metadata, so the launcher stays free of torch (the trainer checks the modules)."""
    from importlib.metadata import PackageNotFoundError, version

    def at_least(name: str, wanted: tuple[int, int]) -> bool:
        try:
            parts = version(name).split("+")[0].split(".")
            return tuple(int(p) for p in parts[:2] if p.isdigit()) >= wanted
        except (PackageNotFoundError, ValueError):
            return False

    return 2 if at_least("torch", (2, 6)) and at_least("accelerate", (1, 6)) else 1


def free_port() -> int:
    """A TCP port free right now on this machine (for a one-node run with master_port = 0)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def distributed_env(d) -> dict:
    """Environment for the launcher: which GPUs, and time for the ranks to checkpoint on a stop."""
    env = {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", SHUTDOWN_TIMEOUT_S)}
    if d.gpu_ids:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in d.gpu_ids)
    return env


def child_argv_env(recipe_path, run_dir, resume: bool = False, node_rank: int | None = None,
                   name=None) -> tuple[list[str], dict]:
    """The command line and extra environment a recipe's run needs (its [distributed] table;
    `node_rank` overrides the table's, so every node can run the one recipe file). `name` is the
    recipe as the person wrote it, for the one-line refusals (default: `recipe_path`)."""
    recipe = rc.load(recipe_path)
    if node_rank is not None:
        recipe = rc.updated(recipe, {"distributed.node_rank": node_rank})
    # a local model folder or data file that is not there: said now, not after the child's imports
    check_sources(recipe.model.id, recipe.data.path, Path(recipe_path).parent)
    refuse_techniques(recipe, name or recipe_path)  # no CUDA or a package missing for a technique or the method
    d = recipe.distributed
    missing = deepspeed_missing(d.strategy) if rc.world_size(d) > 1 else None
    if missing:  # said now, not from every rank
        raise UserError(missing, ExitCode.BAD_RECIPE)
    pinned = method_info(recipe.method.name).fsdp_version  # QLoRA: FSDP1 only (the catalog says why)
    if d.strategy == "fsdp" and not d.fsdp_version and pinned:
        d = replace(d, fsdp_version=pinned)  # as the trainer decides (train/dist.py fsdp_version)
    if rc.world_size(d) == 1:
        env = {"CUDA_VISIBLE_DEVICES": str(d.gpu_ids[0])} if d.gpu_ids else {}
        return build_argv(recipe_path, run_dir, resume), env
    port = free_port() if d.master_port == 0 and d.nnodes == 1 else d.master_port
    return build_argv(recipe_path, run_dir, resume, d, port), distributed_env(d)


def refuse_techniques(recipe: rc.Recipe, name, cuda_here=None) -> None:
    """The check before any child starts, for every front end (train, the app, bench): the child's
    own refusal (train/techniques.py), in the same words. NO_GPU when there is no GPU, else
    BAD_RECIPE (a package missing)."""
    from peft_advisor.core.techniques import refusal_for

    cuda_here = cuda_here or CudaHere()
    line = refusal_for(recipe, cuda_here)
    if line:
        raise UserError(f"{name}: {line}", ExitCode.BAD_RECIPE if cuda_here() else ExitCode.NO_GPU)


class CudaHere:
    """Is there an NVIDIA GPU (NVML, as `probe` reads it)? Probed once, on first use: torch takes
    seconds to import, and most recipes never ask."""

    def __init__(self) -> None:
        self._found: bool | None = None

    def __call__(self) -> bool:
        if self._found is None:
            from peft_advisor.probe import probe

            self._found = probe().ok
        return self._found


@dataclass
class Launched:
    """A started child: its process, run folder, log and where its new events begin."""

    process: subprocess.Popen
    run_dir: Path
    log_path: Path
    staging_dir: Path | None
    events_offset: int = 0  # bytes of events.jsonl written before this launch (a resume)
    log_offset: int = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def started(self) -> bool:
        """True once OUR child is past setup: the folder names it in run.json (another trainer may
        have won the folder) and it has written its `start` event."""
        events = self.run_dir / rf.EVENTS
        if not (events.is_file() and events.stat().st_size > self.events_offset):
            return False
        return rf.read_run_json(self.run_dir).get("pid") == self.pid

    def stop(self) -> None:
        """SIGINT: the child saves a checkpoint at the end of the step and ends `cancelled`."""
        if self.running():
            self.process.send_signal(signal.SIGINT)

    def kill(self) -> None:
        """SIGKILL to the child's whole process group (a launcher's ranks too): a stop that could not wait."""
        if self.running():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)


ALLOCATOR_CONF = "expandable_segments:True"


def allocator_env(env: dict) -> dict:
    """The trainer's environment with PyTorch's CUDA allocator set to grow segments in place,
    unless the person set it. With fixed segments the cache holds freed blocks of one size that a
    request of another cannot use: on the fits benchmark reserved ran 0.7-2x one fp32 logits buffer
    above allocated at the peak (bench/results/h100_memory_trace.md), memory no estimate can
    predict; expandable segments map pages as needed, so the peak follows what is allocated.
    PYTORCH_CUDA_ALLOC_CONF is the name every torch reads (2.9 ignores PYTORCH_ALLOC_CONF for CUDA)."""
    if env.get("PYTORCH_CUDA_ALLOC_CONF") or env.get("PYTORCH_ALLOC_CONF"):
        return env
    return {**env, "PYTORCH_CUDA_ALLOC_CONF": ALLOCATOR_CONF}


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def write_run_json(folder: Path, pid: int, argv: list[str]) -> None:
    rf.atomic_write_json(folder / rf.RUN_JSON, {"pid": pid, "argv": argv, "started": time.time()})


@contextlib.contextmanager
def _sigint_not_ignored():
    """SIGINT is how the child is asked to stop, but an ignored signal stays ignored across exec:
    a launcher started from a background job (which ignores SIGINT) would start a trainer deaf to
    it until its own handler is set. For the spawn, SIGINT is the default (main thread only)."""
    ignored = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        yield
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def check_resume(run_dir: Path, recipe_path) -> None:
    """What the child checks before it touches a folder it resumes, said before any process starts."""
    holder = rf.lock_holder(run_dir)
    if holder is not None:
        raise UserError(rf.busy_message(run_dir, holder), ExitCode.EXISTS)
    rf.check_resumable(run_dir, rc.load(recipe_path))  # may raise RunComplete
    if not rf.has_checkpoint(run_dir):
        raise UserError(f"{run_dir}: no checkpoint-N folder to resume from", ExitCode.USAGE)


def make_staging(run_dir: Path) -> Path:
    """The hidden folder beside the run folder that holds train.log until the child renames it."""
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", suffix=".starting", dir=run_dir.parent))
        os.chmod(folder, 0o755)
    except OSError as err:
        raise UserError(f"{run_dir}: cannot create the run folder: {err.strerror or err}", ExitCode.USAGE) from None
    return folder


def start(recipe_path, run_dir, resume: bool = False, env: dict | None = None, node_rank: int | None = None) -> Launched:
    """Start the child; returns at once (see `wait_started`)."""
    run_dir = Path(run_dir).absolute()
    argv, dist_env = child_argv_env(Path(recipe_path).absolute(), run_dir, resume, node_rank,
                                    name=recipe_path)  # may refuse the recipe
    staging = None
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: is a file, not a run folder", ExitCode.USAGE)
    if resume:
        if not run_dir.is_dir():
            raise UserError(f"{run_dir}: no such run folder to resume", ExitCode.USAGE)
        check_resume(run_dir, recipe_path)  # here too, so nothing is written into the folder
        folder = run_dir
    else:
        if run_dir.exists():
            raise UserError(f"{run_dir}: run folder exists; pass --resume or another --run-dir", ExitCode.EXISTS)
        staging = folder = make_staging(run_dir)
    child_env = allocator_env({**os.environ, **dist_env, **(env or {})})
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), child_env.get("PYTHONPATH")]))
    if staging is not None:
        child_env[rf.STAGING_ENV] = str(staging)
    log = folder / "train.log"
    launched_offsets = (_size(run_dir / "events.jsonl"), _size(log))
    try:
        with open(log, "ab") as fh, _sigint_not_ignored():
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=child_env, start_new_session=True
            )
    except OSError as err:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"cannot start the trainer: {err}", ExitCode.TRAIN_FAILED) from None
    if staging is not None:  # a resumed run's child writes run.json once it holds the folder's lock
        write_run_json(folder, process.pid, argv)
    return Launched(process, run_dir, log, staging, *launched_offsets)


def run_worker_node(recipe_path, run_dir, resume: bool = False, node_rank: int | None = None) -> int:
    """A node other than 0 of a multi-node run: its launcher in the foreground, output to this
    terminal. It writes nothing of its own: rank 0, on node 0, keeps the run folder and events."""
    argv, dist_env = child_argv_env(Path(recipe_path).absolute(), Path(run_dir).absolute(), resume, node_rank,
                                    name=recipe_path)
    env = allocator_env({**os.environ, **dist_env})  # every node's ranks on the same allocator
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env)
    except OSError as err:
        raise UserError(f"cannot start the trainer: {err}", ExitCode.TRAIN_FAILED) from None
    for _ in range(3):
        try:
            return process.wait()
        except KeyboardInterrupt:  # the launcher got the terminal's Ctrl-C too: let it stop its ranks
            continue
    return int(ExitCode.INTERRUPTED)


def failure_message(log_text: str) -> str:
    """The child's one-line reason (`peft-advisor: ...`), else the last lines it printed."""
    lines = [line for line in log_text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("peft-advisor: "):
            return line.removeprefix("peft-advisor: ")
    return "the trainer exited during setup: " + " | ".join(lines[-5:]) if lines else "the trainer exited during setup"


def check_started(launched: Launched) -> bool:
    """Non-blocking (for the TUI): True once training has started, False while the child is still
    setting up; if it exited during setup, raise its one-line reason (and discard the staging)."""
    if launched.started():
        return True
    code = launched.process.poll()
    if code is None:
        return False
    if launched.started():
        return True
    raise _setup_failure(launched, code)


def wait_started(launched: Launched, poll_s: float = 0.2, timeout_s: float | None = None) -> None:
    """Block until the child has started training; if it exits first, raise its reason."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not check_started(launched):
        if deadline is not None and time.monotonic() > deadline:
            raise UserError("the trainer did not start in time", ExitCode.TRAIN_FAILED)
        time.sleep(poll_s)


def discard_staging(launched: Launched) -> None:
    """Remove the staging folder of a child that never got past setup (it stays hidden otherwise)."""
    if launched.staging_dir is not None and not launched.running():
        shutil.rmtree(launched.staging_dir, ignore_errors=True)


def _setup_exit(launched: Launched, code: int) -> tuple[int, str]:
    """torchrun exits 1 when a rank fails; the first rank to fail left the real code, and its
    one-line reason, in the staging folder ("" when it left none: then the log's last line says)."""
    if launched.staging_dir is None:
        return code, ""
    try:
        text = (launched.staging_dir / rf.SETUP_EXIT_FILE).read_text(encoding="utf-8")
        first, _, message = text.partition("\n")
        return int(first.strip()), message.strip()
    except (OSError, ValueError):
        return code, ""


def _setup_failure(launched: Launched, code: int) -> UserError:
    log = launched.log_path
    if not log.is_file():  # the staging folder became the run folder after all
        log = launched.run_dir / "train.log"
    try:
        with open(log, "rb") as fh:
            fh.seek(launched.log_offset)
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        text = ""
    code, message = _setup_exit(launched, code)
    discard_staging(launched)
    known = {int(c) for c in ExitCode}
    return UserError(message or failure_message(text), ExitCode(code) if code in known and code else ExitCode.TRAIN_FAILED)


# ---------------------------------------------------------------- runs started elsewhere
# (the protocol module owns these; kept importable from here for the front ends)
read_run_json, valid_pid, trainer_alive, stop = rf.read_run_json, rf.valid_pid, rf.trainer_alive, rf.stop
