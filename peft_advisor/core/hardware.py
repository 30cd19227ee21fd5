"""What the advisor knows about the GPUs: plain frozen dataclasses, no NVML.

`peft_advisor.probe` fills these from NVML; tests and the TUI build them by hand. Any field NVML
could not give (an older driver, a consumer card, a MIG slice) is `None`, never a made-up value,
so front ends show "—" instead of a wrong number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

NO_GPU_MESSAGE = "no NVIDIA GPU or driver found"
"""Shown when there is no NVIDIA driver or no GPU; the advisor then needs a budget from the user."""

BF16_MIN_CAPABILITY = (8, 0)
"""bfloat16 tensor cores arrived with Ampere (compute capability 8.0)."""


@dataclass(frozen=True)
class ProcessInfo:
    """A process that holds memory on a GPU (compute or graphics context)."""

    pid: int
    """As the driver reports it: inside a container this is the host's pid."""
    name: str | None = None
    """Short command name from /proc/<pid>/comm, or NVML's, or None when neither is readable."""
    used_bytes: int | None = None
    """GPU memory this process holds; None where the driver cannot tell (e.g. Windows WDDM)."""


@dataclass(frozen=True)
class GpuInfo:
    """One NVIDIA GPU as NVML saw it at one moment."""

    index: int
    """NVML index (the order of `nvidia-smi`, not necessarily CUDA's order)."""
    name: str | None = None
    uuid: str | None = None
    total_bytes: int | None = None
    used_bytes: int | None = None
    """NVML `used`: includes CUDA contexts and PyTorch's cached blocks, so it reads higher than
    torch's `memory_allocated` (and, with the v2 API, excludes the driver's reserve)."""
    free_bytes: int | None = None
    reserved_bytes: int | None = None
    """Memory the driver keeps for itself (NVML memory v2 only; None with the v1 API)."""
    compute_capability: tuple[int, int] | None = None
    """(major, minor), e.g. (9, 0) for H100/H200."""
    driver_version: str | None = None
    """Kernel driver version, e.g. "580.95.05"."""
    cuda_driver_version: str | None = None
    """Newest CUDA version the driver supports, e.g. "13.0" (not the toolkit torch was built with)."""
    utilization_pct: int | None = None
    """Share of the last sample period in which a kernel ran."""
    memory_utilization_pct: int | None = None
    """Share of the last sample period in which device memory was read or written."""
    temperature_c: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    """Enforced power limit."""
    mig_mode: str | None = None
    """"enabled", "disabled", or None where the GPU has no MIG (most cards)."""
    processes: tuple[ProcessInfo, ...] = field(default_factory=tuple)

    @property
    def bf16(self) -> bool | None:
        """bfloat16 support; None when the compute capability is unknown."""
        if self.compute_capability is None:
            return None
        return tuple(self.compute_capability) >= BF16_MIN_CAPABILITY

    def to_dict(self) -> dict:
        """JSON-ready dict; `bf16` is included although it is derived."""
        data = asdict(self)
        data["bf16"] = self.bf16
        if self.compute_capability is not None:
            data["compute_capability"] = list(self.compute_capability)
        return data


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one probe: the GPUs, or why there are none.

    A missing driver is an expected outcome, not an error, so it is data here (`ok=False` and a
    one-line `message`) rather than an exception.
    """

    gpus: tuple[GpuInfo, ...] = ()
    message: str = NO_GPU_MESSAGE
    """One line for people: "2 NVIDIA GPUs found", or why none were found (no hint: each front end adds its own, e.g. the CLI's ": give --vram")."""
    ok: bool = False
    """True when at least one GPU was read."""

    def to_dict(self) -> dict:
        return {"ok": self.ok, "message": self.message, "gpus": [g.to_dict() for g in self.gpus]}

    def gpu(self, index: int) -> GpuInfo | None:
        """The GPU with this NVML index, or None."""
        return next((g for g in self.gpus if g.index == index), None)


def found_message(count: int) -> str:
    return f"{count} NVIDIA GPU{'s' if count != 1 else ''} found"


def usable_vram_bytes(gpu: GpuInfo, reserve_bytes: int = 0) -> int | None:
    """Free memory minus a safety reserve: the default VRAM budget when the user gives none.

    Free, not total, because other processes (a desktop, another job) already hold the rest.
    None when NVML did not report free memory.
    """
    if gpu.free_bytes is None:
        return None
    return max(0, gpu.free_bytes - reserve_bytes)
