"""Local calibration: measured peaks of the user's own runs correct later estimates.

The estimator is tuned on an H200 with one software stack; another GPU, driver or library version
can reserve a few percent more or less. Each run that measured its peak (a `bench` candidate, a
`train` run that ended ok on a GPU) leaves a `CalibrationRecord`. A later estimate for the same
GPU and model is scaled by the median measured/estimated ratio of those records, the same method's
records first (methods differ most), else any method's, and says so in `Estimate.calibrated`.

A ratio, not an offset: the error of the model grows with the run's size, and one ratio carries
over from the shapes that were measured to the ones that were not. Pure: records in, estimate
out; `peft_advisor/calibration_store.py` reads and writes them.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import asdict, dataclass, field, replace

RATIO_BOUNDS = (0.5, 2.0)
"""A ratio outside this is a broken measurement (another process on the card, a wrong model),
not an estimator error: such records are ignored."""


@dataclass(frozen=True)
class CalibrationRecord:
    """One measured run: what the estimator said and what PyTorch's allocator reserved."""

    gpu: str
    """GPU name as NVML reports it, e.g. "NVIDIA H200"."""
    model: str
    """Model key (`model_key`): a preset id, "demo", or an absolute model folder."""
    method: str
    settings: dict = field(default_factory=dict)
    """`Settings.to_dict()` of the run, kept so the records can be re-examined later."""
    measured_peak_bytes: int = 0
    """Peak reserved by PyTorch's caching allocator (CUDA context excluded), as estimated."""
    estimated_peak_bytes: int = 0
    """The uncalibrated estimate for the same run."""
    t: float = 0.0
    """Unix seconds when the run ended."""
    source: str = ""
    """Where it came from: "bench" or "train", and the run folder."""

    @property
    def ratio(self) -> float | None:
        if self.measured_peak_bytes <= 0 or self.estimated_peak_bytes <= 0:
            return None
        ratio = self.measured_peak_bytes / self.estimated_peak_bytes
        return ratio if RATIO_BOUNDS[0] <= ratio <= RATIO_BOUNDS[1] else None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CalibrationRecord | None:
        """A record from one parsed JSON line, or None when it is not one (a foreign or old line)."""
        if not isinstance(data, dict):
            return None
        try:
            record = cls(
                gpu=str(data["gpu"]),
                model=str(data["model"]),
                method=str(data["method"]),
                settings=dict(data.get("settings") or {}),
                measured_peak_bytes=_whole(data["measured_peak_bytes"]),
                estimated_peak_bytes=_whole(data["estimated_peak_bytes"]),
                t=float(data.get("t") or 0.0),
                source=str(data.get("source") or ""),
            )
        except (KeyError, TypeError, ValueError):
            return None
        return record if record.gpu and record.model and record.method else None


def _whole(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(value)
    return int(value)


def gpu_key(name: str | None) -> str:
    """GPU names compare without case or repeated spaces ("NVIDIA  H200" is "nvidia h200")."""
    return re.sub(r"\s+", " ", (name or "").strip().lower())


def model_key(model: str) -> str:
    """The key a model is recorded under: a ModelSpec id (a preset id, "demo") in lower case, or an
    absolute folder for a local model (`.../folder/config.json` counts as the folder)."""
    text = (model or "").strip()
    if text.startswith(("/", ".", "~")) or "\\" in text:
        import os

        path = os.path.abspath(os.path.expanduser(text)).rstrip("/")
        return path[: -len("/config.json")] if path.endswith("/config.json") else path
    return text.lower()


def matching(records, gpu: str, model: str, method: str | None = None) -> list[CalibrationRecord]:
    """Records of this GPU and model (and method, when given) with a usable ratio."""
    g, m = gpu_key(gpu), model_key(model)
    return [
        r for r in records
        if gpu_key(r.gpu) == g and model_key(r.model) == m and (method is None or r.method == method)
        and r.ratio is not None
    ]


def calibration_ratio(records, gpu: str, model: str, method: str) -> tuple[float, int, bool] | None:
    """(median measured/estimated, number of records, same method?) or None without records."""
    same = matching(records, gpu, model, method)
    used = same or matching(records, gpu, model)
    if not used:
        return None
    return statistics.median(r.ratio for r in used), len(used), bool(same)


def apply_calibration(estimate, records, gpu: str | None, model: str):
    """The estimate scaled by the local ratio for (gpu, model, its method); unchanged without one.

    Peak, low and high scale together; the breakdown gains a `calibration` entry (the difference)
    so it still sums to the peak. The CUDA context and the adapter size are not touched: they are
    not what the allocator measurement says anything about.
    """
    if not gpu:
        return estimate
    found = calibration_ratio(records, gpu, model, estimate.settings.method)
    if found is None:
        return estimate
    ratio, count, same = found
    peak = int(round(estimate.peak_bytes * ratio))
    breakdown = dict(estimate.breakdown)
    breakdown["calibration"] = peak - estimate.peak_bytes
    runs = f"{count} local run{'s' if count != 1 else ''}" + ("" if same else " of other methods")
    return replace(
        estimate,
        peak_bytes=peak,
        low_bytes=int(round(estimate.low_bytes * ratio)),
        high_bytes=int(round(estimate.high_bytes * ratio)),
        breakdown=breakdown,
        calibrated=f"calibrated on {runs} ({gpu}, {model}): measured/estimated x{ratio:.3f}",
    )
