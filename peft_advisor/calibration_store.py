"""Where local calibration records live: JSON lines in the user cache.

`$PEFT_ADVISOR_CACHE/calibration.jsonl`, else `$XDG_CACHE_HOME/peft-advisor/calibration.jsonl`,
else `~/.cache/peft-advisor/calibration.jsonl` (the same folder as the converted demo model).
Appending is one `write` of one line on a file opened with O_APPEND, so two runs ending at once
do not interleave; reading skips lines it cannot use, so a torn or foreign line costs one record,
never the file. The arithmetic is in `core/calibration.py`.
"""

from __future__ import annotations

from peft_advisor.paths import cache_root  # noqa: F401 (re-exported)

import json
import os
import sys
import time
from pathlib import Path

from peft_advisor.core.calibration import CalibrationRecord, apply_calibration, model_key

FILE_NAME = "calibration.jsonl"




def store_path() -> Path:
    return cache_root() / FILE_NAME


def append(record: CalibrationRecord, path: Path | None = None) -> Path:
    """Add one record; a record with no usable ratio is refused (it would only be skipped later)."""
    if record.ratio is None:
        raise ValueError(f"not a usable calibration record: {record}")
    path = Path(path or store_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record.to_dict(), separators=(",", ":"), sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return path


def load(path: Path | None = None) -> list[CalibrationRecord]:
    """Every usable record; a missing file is no records, a bad line is skipped."""
    path = Path(path or store_path())
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as err:
        print(f"peft-advisor: cannot read {path}: {err.strerror}; estimates are not calibrated", file=sys.stderr)
        return []
    records = []
    for line in raw.splitlines():
        try:
            data = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: a line nested past Python's stack
            continue
        record = CalibrationRecord.from_dict(data)
        if record is not None:
            records.append(record)
    return records


def record_run(*, gpu: str | None, model: str, settings, measured_peak_bytes: int | None,
               estimated_peak_bytes: int | None, source: str, path: Path | None = None) -> CalibrationRecord | None:
    """Keep one finished run as calibration when it measured a GPU peak; never raises for I/O
    (calibration is a bonus: a read-only cache must not fail the run that produced it)."""
    if not gpu or not measured_peak_bytes or not estimated_peak_bytes:
        return None
    record = CalibrationRecord(
        gpu=gpu, model=model_key(model), method=settings.method, settings=settings.to_dict(),
        measured_peak_bytes=int(measured_peak_bytes), estimated_peak_bytes=int(estimated_peak_bytes),
        t=time.time(), source=source,
    )
    if record.ratio is None:
        return None
    try:
        append(record, path)
    except OSError as err:
        print(f"peft-advisor: cannot write calibration to {path or store_path()}: {err.strerror}", file=sys.stderr)
        return None
    return record


def calibrated_estimate(spec, settings, gpu_name: str | None, model_id: str | None = None,
                        total_vram_bytes: int | None = None, path: Path | None = None):
    """`estimate()` corrected by the local runs on this GPU and model, when there are any.

    Call it only with the name of a GPU that was probed (or given as --gpu-name): calibration from
    one card says nothing about another. The model is keyed by the spec's id (a preset id for Hub
    ids of presets), falling back to `model_id`.
    """
    from peft_advisor.core.estimate import estimate

    est = estimate(spec, settings, total_vram_bytes) if total_vram_bytes is not None else estimate(spec, settings)
    if not gpu_name:
        return est
    return apply_calibration(est, load(path), gpu_name, getattr(spec, "id", None) or model_id or "")


def calibrator(gpu_name: str | None, model: str, path: Path | None = None):
    """`est -> est` that applies this GPU's and model's local calibration (records read once), for
    code that makes many estimates (recommend's search); None when there is nothing to apply."""
    if not gpu_name:
        return None
    records = [r for r in load(path) if r.ratio is not None]
    if not records:
        return None

    def calibrate(est):
        return apply_calibration(est, records, gpu_name, model)

    return calibrate


# ---------------------------------------------------------------- from a run folder


def visible_gpu_name() -> str | None:
    """Name of the GPU a child's `cuda:0` is: the first of CUDA_VISIBLE_DEVICES (an index or a
    UUID), else NVML's GPU 0. None without a GPU or NVML."""
    from peft_advisor.probe import probe

    result = probe()
    if not result.ok or not result.gpus:
        return None
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    gpu = None
    if first.isdigit():
        gpu = result.gpu(int(first))
    elif first.startswith(("GPU-", "MIG-")):
        gpu = next((g for g in result.gpus if g.uuid and g.uuid.startswith(first)), None)
    gpu = gpu or result.gpus[0]
    return gpu.name


def record_from_run_dir(run_dir, gpu_name: str | None = None, source: str = "train",
                        path: Path | None = None) -> CalibrationRecord | None:
    """Keep a finished run (its events.jsonl and recipe.toml) as calibration, when it ran on a GPU
    and measured its peak: status ok, or stopped (cancelled) after at least 2 steps, since the
    peak is reached in the first step. Returns the record, or None when the run does not qualify.
    `gpu_name` None probes the GPU the child used."""
    from peft_advisor.core import recipe as rc
    from peft_advisor.core.errors import UserError
    from peft_advisor.core.events import read_events, summarize

    run_dir = Path(run_dir)
    events, _ = read_events(run_dir / "events.jsonl")
    s = summarize(events)
    usable = s.status == "ok" or (s.status == "cancelled" and s.step >= 2)
    if not usable or not (s.device or "").startswith("cuda") or not s.mem_peak_bytes or not s.estimate_peak_bytes:
        return None
    if (s.gpus or 1) > 1:  # a per-GPU peak under DDP/FSDP is no calibration for one GPU's settings
        return None
    try:
        recipe = rc.load(run_dir / "recipe.toml")
        settings = rc.settings_from_recipe(recipe)
    except UserError:
        return None
    gpu_name = gpu_name or visible_gpu_name()
    return record_run(gpu=gpu_name, model=spec_id(recipe.model.id), settings=settings,
                      measured_peak_bytes=s.mem_peak_bytes, estimated_peak_bytes=s.estimate_peak_bytes,
                      source=f"{source} {run_dir}", path=path)


def spec_id(model_id: str) -> str:
    """The ModelSpec id the advisor would use for this model (so `calibrated_estimate` finds the
    record), else the id itself (a Hub model that is no preset)."""
    from peft_advisor.core.errors import UserError
    from peft_advisor.core.model_spec import load_model_spec

    try:
        return load_model_spec(model_id).id
    except (UserError, ValueError, KeyError):
        return model_id
