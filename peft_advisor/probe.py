"""The NVML adapter: read every NVIDIA GPU into `core.hardware` dataclasses.

`import pynvml` (nvidia-ml-py) happens inside functions, so importing this module costs nothing
and works without the bindings. A missing driver or GPU is an expected outcome: `probe()` never
raises for it and returns `ProbeResult(ok=False, message=...)` instead.

Two ways in:
- `probe()`: one-shot (init, read, shutdown), for the CLI.
- `snapshot()`: for 1 Hz polling from the TUI; keeps one NVML session open (`Nvml`) and shuts it
  down at interpreter exit, and caches what cannot change (names, UUIDs, driver versions).

Front ends depend on the `Prober` protocol, so tests inject a fake (tests/fakes.py).
"""

from __future__ import annotations

import atexit
import threading
from typing import Any, Protocol

from peft_advisor.core.hardware import (
    NO_GPU_MESSAGE,
    GpuInfo,
    ProbeResult,
    ProcessInfo,
    found_message,
)

DRIVER_NOT_LOADED_MESSAGE = "NVIDIA driver installed but not loaded"
NO_PERMISSION_MESSAGE = "no permission to query the NVIDIA GPU (NVML)"
NO_BINDINGS_MESSAGE = "nvidia-ml-py is not installed, cannot probe GPUs"


class Prober(Protocol):
    """What front ends need; `NvmlProber` is the real one, tests pass a fake."""

    def probe(self) -> ProbeResult: ...

    def snapshot(self) -> ProbeResult: ...


def _safe(nv: Any, fn_name: str, *args: Any) -> Any:
    """gpustat's `safenvml`: a field NVML cannot give (not supported, no permission, a function
    the bindings or driver lack) becomes None instead of failing the whole probe."""
    fn = getattr(nv, fn_name, None)
    if fn is None:
        return None
    try:
        return fn(*args)
    except nv.NVMLError:
        return None


def _text(value: Any) -> str | None:
    """Old bindings return bytes for strings, new ones str."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def _init_failure_message(nv: Any, err: Exception) -> str:
    if isinstance(err, nv.NVMLError_LibraryNotFound):
        return NO_GPU_MESSAGE
    if isinstance(err, nv.NVMLError_DriverNotLoaded):
        return DRIVER_NOT_LOADED_MESSAGE
    if isinstance(err, nv.NVMLError_NoPermission):
        return NO_PERMISSION_MESSAGE
    return f"NVML unavailable ({err})"


def _cuda_version(raw: int | None) -> str | None:
    """NVML encodes CUDA 13.0 as 13000 and 12.4 as 12040."""
    if not raw:
        return None
    return f"{raw // 1000}.{(raw % 1000) // 10}"


def _memory(nv: Any, handle: Any) -> tuple[int | None, int | None, int | None, int | None]:
    """(total, used, free, reserved). The v2 call separates the driver's reserve from `used`;
    bindings or drivers without it fall back to v1, whose `used` includes the reserve."""
    version = getattr(nv, "nvmlMemory_v2", None)
    if version is not None:
        try:
            mem = nv.nvmlDeviceGetMemoryInfo(handle, version=version)
            return mem.total, mem.used, mem.free, mem.reserved
        except (nv.NVMLError, TypeError):  # TypeError: bindings without `version=`
            pass
    mem = _safe(nv, "nvmlDeviceGetMemoryInfo", handle)
    if mem is None:
        return None, None, None, None
    return mem.total, mem.used, mem.free, None


def _mig_mode(nv: Any, handle: Any) -> str | None:
    modes = _safe(nv, "nvmlDeviceGetMigMode", handle)
    if not modes:
        return None
    return "enabled" if modes[0] == getattr(nv, "NVML_DEVICE_MIG_ENABLE", 1) else "disabled"


def _process_name(nv: Any, pid: int) -> str | None:
    """/proc/<pid>/comm is cheap and needs no permission for our own user's processes; NVML's
    name is the fallback (e.g. a pid from another namespace)."""
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip() or None
    except OSError:
        path = _text(_safe(nv, "nvmlSystemGetProcessName", pid))
        return (path or "").rsplit("/", 1)[-1] or None  # NVML gives a full path


def _processes(nv: Any, handle: Any) -> tuple[ProcessInfo, ...]:
    """Compute and graphics processes, one entry per pid (a process can be both)."""
    seen: dict[int, ProcessInfo] = {}
    for fn_name in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        for proc in _safe(nv, fn_name, handle) or ():
            if proc.pid not in seen:
                used = getattr(proc, "usedGpuMemory", None)
                seen[proc.pid] = ProcessInfo(proc.pid, _process_name(nv, proc.pid), used)
    return tuple(seen.values())


def _power_w(milliwatts: int | None) -> float | None:
    return None if milliwatts is None else milliwatts / 1000.0


class Nvml:
    """One NVML session: `nvmlInit` once, `nvmlShutdown` once and only if init succeeded.

    A failed init is remembered, so polling a machine without a driver does not retry the
    library load every second. Thread-safe: the TUI polls from a worker thread.
    """

    def __init__(self) -> None:
        self._nv: Any = None
        self._failure: ProbeResult | None = None
        self._static: dict[int, dict] = {}
        self._system: dict = {}
        self._lock = threading.Lock()

    def __enter__(self) -> Nvml:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> ProbeResult | None:
        """Init NVML if needed; returns a failed ProbeResult, or None when NVML is ready."""
        if self._nv is not None or self._failure is not None:
            return self._failure
        try:
            import pynvml as nv
        except ImportError:
            self._failure = ProbeResult((), NO_BINDINGS_MESSAGE, False)
            return self._failure
        try:
            nv.nvmlInit()
        except nv.NVMLError as err:
            self._failure = ProbeResult((), _init_failure_message(nv, err), False)
            return self._failure
        self._nv = nv
        self._system = {
            "driver_version": _text(_safe(nv, "nvmlSystemGetDriverVersion")),
            "cuda_driver_version": _cuda_version(_safe(nv, "nvmlSystemGetCudaDriverVersion")),
        }
        return None

    def close(self) -> None:
        with self._lock:
            nv, self._nv = self._nv, None
            self._static.clear()
            if nv is not None:
                try:
                    nv.nvmlShutdown()
                except nv.NVMLError:
                    pass

    def read(self) -> ProbeResult:
        """Every GPU now. Never raises for NVML errors: a failure becomes the message."""
        with self._lock:
            failure = self._open()
            if failure is not None:
                return failure
            nv = self._nv
            try:
                count = nv.nvmlDeviceGetCount()
            except nv.NVMLError as err:
                return ProbeResult((), f"NVML cannot count GPUs ({err})", False)
            gpus, skipped = [], []
            for i in range(count):
                try:
                    handle = nv.nvmlDeviceGetHandleByIndex(i)
                except nv.NVMLError as err:
                    skipped.append(f"GPU {i} unreadable: {err}")
                    continue
                gpus.append(self._gpu(i, handle))
            if not gpus:
                return ProbeResult((), "; ".join([NO_GPU_MESSAGE, *skipped]), False)
            return ProbeResult(tuple(gpus), "; ".join([found_message(len(gpus)), *skipped]), True)

    def _static_fields(self, index: int, handle: Any) -> dict:
        """Fields that cannot change while the driver is loaded: read once per session."""
        if index not in self._static:
            nv = self._nv
            cc = _safe(nv, "nvmlDeviceGetCudaComputeCapability", handle)
            self._static[index] = {
                "name": _text(_safe(nv, "nvmlDeviceGetName", handle)),
                "uuid": _text(_safe(nv, "nvmlDeviceGetUUID", handle)),
                "compute_capability": tuple(cc) if cc else None,
                **self._system,
            }
        return self._static[index]

    def _gpu(self, index: int, handle: Any) -> GpuInfo:
        nv = self._nv
        total, used, free, reserved = _memory(nv, handle)
        util = _safe(nv, "nvmlDeviceGetUtilizationRates", handle)
        sensor = getattr(nv, "NVML_TEMPERATURE_GPU", 0)
        return GpuInfo(
            index=index,
            **self._static_fields(index, handle),
            total_bytes=total,
            used_bytes=used,
            free_bytes=free,
            reserved_bytes=reserved,
            utilization_pct=None if util is None else util.gpu,
            memory_utilization_pct=None if util is None else util.memory,
            temperature_c=_safe(nv, "nvmlDeviceGetTemperature", handle, sensor),
            power_w=_power_w(_safe(nv, "nvmlDeviceGetPowerUsage", handle)),
            power_limit_w=_power_w(_safe(nv, "nvmlDeviceGetEnforcedPowerLimit", handle)),
            mig_mode=_mig_mode(nv, handle),
            processes=_processes(nv, handle),
        )


class NvmlProber:
    """The real `Prober`. `snapshot()` reuses one session, shut down at interpreter exit."""

    def __init__(self) -> None:
        self._session: Nvml | None = None

    def probe(self) -> ProbeResult:
        with Nvml() as nvml:
            return nvml.read()

    def snapshot(self) -> ProbeResult:
        if self._session is None:
            self._session = Nvml()
            atexit.register(self._session.close)
        return self._session.read()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            atexit.unregister(self._session.close)
            self._session = None


_default = NvmlProber()


def probe() -> ProbeResult:
    """Every NVIDIA GPU, or why there is none (one init/shutdown)."""
    return _default.probe()


def snapshot() -> ProbeResult:
    """Like `probe()`, but cheap enough to call every second: NVML stays initialised."""
    return _default.snapshot()


def free_ram_bytes(meminfo: str = "/proc/meminfo") -> int | None:
    """The machine's available RAM (what offloaded activations may pin without swapping): psutil's
    `available` when it is installed, else MemAvailable from /proc/meminfo; None when neither can
    be read (the advice then does not check RAM)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return int(psutil.virtual_memory().available)
    try:
        with open(meminfo, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None
