"""Fakes shared by tests of callers (CLI, TUI): deterministic GPUs without NVML.

Use `FakeProber(fake_probe_result())` wherever code takes a `peft_advisor.probe.Prober`.
"""

from __future__ import annotations

from peft_advisor.core.hardware import NO_GPU_MESSAGE, GpuInfo, ProbeResult, ProcessInfo
from peft_advisor.core.units import GIB, MIB


def fake_gpus() -> tuple[GpuInfo, GpuInfo]:
    """A 24 GiB consumer card with a desktop on it, and an idle 140 GiB datacentre card."""
    return (
        GpuInfo(
            index=0,
            name="NVIDIA GeForce RTX 4090",
            uuid="GPU-00000000-0000-0000-0000-000000000000",
            total_bytes=24 * GIB,
            used_bytes=2 * GIB,
            free_bytes=22 * GIB,
            reserved_bytes=512 * MIB,
            compute_capability=(8, 9),
            driver_version="580.95.05",
            cuda_driver_version="13.0",
            utilization_pct=12,
            memory_utilization_pct=5,
            temperature_c=45,
            power_w=61.5,
            power_limit_w=450.0,
            mig_mode=None,
            processes=(
                ProcessInfo(pid=1234, name="Xorg", used_bytes=512 * MIB),
                ProcessInfo(pid=5678, name="python", used_bytes=1536 * MIB),
            ),
        ),
        GpuInfo(
            index=1,
            name="NVIDIA H200",
            uuid="GPU-11111111-1111-1111-1111-111111111111",
            total_bytes=140 * GIB,
            used_bytes=0,
            free_bytes=140 * GIB,
            reserved_bytes=None,
            compute_capability=(9, 0),
            driver_version="580.95.05",
            cuda_driver_version="13.0",
            utilization_pct=0,
            memory_utilization_pct=0,
            temperature_c=30,
            power_w=75.0,
            power_limit_w=700.0,
            mig_mode="disabled",
            processes=(),
        ),
    )


def fake_probe_result() -> ProbeResult:
    return ProbeResult(gpus=fake_gpus(), message="2 NVIDIA GPUs found", ok=True)


def fake_no_gpu_result() -> ProbeResult:
    return ProbeResult(gpus=(), message=NO_GPU_MESSAGE, ok=False)


class FakeProber:
    """A `Prober` that returns canned results and counts calls.

    `snapshots` (optional) are returned one per `snapshot()` call, the last one repeating, so a
    test can make memory use change between polls.
    """

    def __init__(self, result: ProbeResult | None = None, snapshots: list[ProbeResult] | None = None):
        self.result = fake_probe_result() if result is None else result
        self.snapshots = list(snapshots or [])
        self.probe_calls = 0
        self.snapshot_calls = 0

    def probe(self) -> ProbeResult:
        self.probe_calls += 1
        return self.result

    def snapshot(self) -> ProbeResult:
        self.snapshot_calls += 1
        if not self.snapshots:
            return self.result
        return self.snapshots[min(self.snapshot_calls, len(self.snapshots)) - 1]
