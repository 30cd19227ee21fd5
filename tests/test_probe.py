"""The GPU probe: NVML mocked per function (as gpustat's tests do), plus the real no-GPU path.

The fake `pynvml` module reuses the real bindings' error classes and constants, so
`except pynvml.NVMLError_NotSupported` in the code under test meets the same classes it would
meet on a real machine. Nothing here needs a GPU except the test marked `gpu`.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace as NS

import pynvml as real_nvml
import pytest

from peft_advisor import probe as probe_mod
from peft_advisor.cli import main as cli_main
from peft_advisor.cli import probe_cmd
from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.hardware import (
    NO_GPU_MESSAGE,
    GpuInfo,
    ProbeResult,
    usable_vram_bytes,
)
from peft_advisor.core.units import GIB, MIB
from tests.fakes import FakeProber, fake_no_gpu_result, fake_probe_result

REPO = Path(__file__).resolve().parents[1]
NOT_SUPPORTED = real_nvml.NVMLError_NotSupported


def _gpu(**over) -> dict:
    """Everything one fake GPU answers; a value that is an exception is raised instead."""
    gpu = {
        "name": "NVIDIA H200",
        "uuid": "GPU-aaaa",
        "mem_v2": NS(total=140 * GIB, reserved=1 * GIB, free=100 * GIB, used=39 * GIB),
        "mem_v1": NS(total=140 * GIB, free=100 * GIB, used=40 * GIB),
        "cc": (9, 0),
        "util": NS(gpu=87, memory=40),
        "temp": 51,
        "power_mw": 312_500,
        "limit_mw": 700_000,
        "mig": [real_nvml.NVML_DEVICE_MIG_DISABLE, real_nvml.NVML_DEVICE_MIG_DISABLE],
        "compute": [],
        "graphics": [],
    }
    gpu.update(over)
    return gpu


class FakeNvml(types.ModuleType):
    """A stand-in for the `pynvml` module, with call counts."""

    def __init__(self, gpus: list[dict], init_error: Exception | None = None):
        super().__init__("pynvml")
        for name in dir(real_nvml):  # error classes and constants, the real ones
            if name.startswith(("NVMLError", "NVML_", "nvmlMemory_v")):
                setattr(self, name, getattr(real_nvml, name))
        self.gpus, self.init_error = gpus, init_error
        self.calls: dict[str, int] = {}
        self.process_names = {}

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def _get(self, handle, key):
        value = self.gpus[handle][key]
        if isinstance(value, Exception):
            raise value
        return value

    def nvmlInit(self):
        self._count("init")
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self):
        self._count("shutdown")

    def nvmlSystemGetDriverVersion(self):
        return "580.95.05"

    def nvmlSystemGetCudaDriverVersion(self):
        return 13000

    def nvmlSystemGetProcessName(self, pid):
        if pid not in self.process_names:
            raise real_nvml.NVMLError_NotFound()
        return self.process_names[pid]

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        if isinstance(self.gpus[i], Exception):
            raise self.gpus[i]
        return i

    def nvmlDeviceGetName(self, h):
        self._count("name")
        return self._get(h, "name")

    def nvmlDeviceGetUUID(self, h):
        return self._get(h, "uuid")

    def nvmlDeviceGetMemoryInfo(self, h, version=None):
        return self._get(h, "mem_v2" if version else "mem_v1")

    def nvmlDeviceGetCudaComputeCapability(self, h):
        return self._get(h, "cc")

    def nvmlDeviceGetUtilizationRates(self, h):
        return self._get(h, "util")

    def nvmlDeviceGetTemperature(self, h, sensor):
        assert sensor == real_nvml.NVML_TEMPERATURE_GPU
        return self._get(h, "temp")

    def nvmlDeviceGetPowerUsage(self, h):
        return self._get(h, "power_mw")

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return self._get(h, "limit_mw")

    def nvmlDeviceGetMigMode(self, h):
        return self._get(h, "mig")

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return self._get(h, "compute")

    def nvmlDeviceGetGraphicsRunningProcesses(self, h):
        return self._get(h, "graphics")


@pytest.fixture
def fake_nvml(monkeypatch):
    """Install a FakeNvml as `pynvml`; call it with the GPUs (and an init error)."""

    def install(gpus, init_error=None) -> FakeNvml:
        nv = FakeNvml(gpus, init_error)
        monkeypatch.setitem(sys.modules, "pynvml", nv)
        return nv

    return install


def _nvml_library_present() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


# --- the adapter, NVML mocked ---------------------------------------------------------------


def test_two_gpus_with_all_fields(fake_nvml):
    nv = fake_nvml([_gpu(), _gpu(name="NVIDIA GeForce RTX 3060", uuid="GPU-bbbb", cc=(8, 6))])
    result = probe_mod.probe()

    assert result.ok and result.message == "2 NVIDIA GPUs found"
    g0, g1 = result.gpus
    assert g0 == GpuInfo(
        index=0,
        name="NVIDIA H200",
        uuid="GPU-aaaa",
        total_bytes=140 * GIB,
        used_bytes=39 * GIB,  # v2: the driver's reserve is separate
        free_bytes=100 * GIB,
        reserved_bytes=1 * GIB,
        compute_capability=(9, 0),
        driver_version="580.95.05",
        cuda_driver_version="13.0",
        utilization_pct=87,
        memory_utilization_pct=40,
        temperature_c=51,
        power_w=312.5,
        power_limit_w=700.0,
        mig_mode="disabled",
        processes=(),
    )
    assert g0.bf16 is True
    assert (g1.index, g1.name, g1.compute_capability, g1.bf16) == (1, "NVIDIA GeForce RTX 3060", (8, 6), True)
    assert nv.calls == {"init": 1, "shutdown": 1, "name": 2}


@pytest.mark.parametrize(
    "field, attrs",
    [
        ("temp", {"temperature_c": None}),
        ("power_mw", {"power_w": None}),
        ("limit_mw", {"power_limit_w": None}),
        ("util", {"utilization_pct": None, "memory_utilization_pct": None}),
        ("cc", {"compute_capability": None, "bf16": None}),
        ("mig", {"mig_mode": None}),
        ("uuid", {"uuid": None}),
        ("compute", {"processes": ()}),
    ],
)
def test_unsupported_field_becomes_none(fake_nvml, field, attrs):
    fake_nvml([_gpu(**{field: NOT_SUPPORTED()})])
    result = probe_mod.probe()
    assert result.ok
    gpu = result.gpus[0]
    for attr, value in attrs.items():
        assert getattr(gpu, attr) == value
    assert gpu.total_bytes == 140 * GIB  # the rest of the GPU is still read


def test_function_missing_from_old_bindings_becomes_none(fake_nvml):
    nv = fake_nvml([_gpu()])
    nv.nvmlDeviceGetMigMode = None  # shadows the method: as if the bindings lacked it
    assert probe_mod.probe().gpus[0].mig_mode is None


def test_memory_falls_back_to_v1(fake_nvml):
    missing = real_nvml.NVMLError_FunctionNotFound()
    fake_nvml([_gpu(mem_v2=missing)])
    gpu = probe_mod.probe().gpus[0]
    assert (gpu.total_bytes, gpu.used_bytes, gpu.free_bytes, gpu.reserved_bytes) == (
        140 * GIB,
        40 * GIB,
        100 * GIB,
        None,
    )


def test_memory_v1_when_bindings_lack_v2(fake_nvml):
    nv = fake_nvml([_gpu()])
    del nv.nvmlMemory_v2
    assert probe_mod.probe().gpus[0].used_bytes == 40 * GIB


def test_memory_unreadable_is_none(fake_nvml):
    fake_nvml([_gpu(mem_v2=NOT_SUPPORTED(), mem_v1=NOT_SUPPORTED())])
    gpu = probe_mod.probe().gpus[0]
    assert (gpu.total_bytes, gpu.free_bytes) == (None, None)
    assert usable_vram_bytes(gpu) is None


def test_mig_enabled(fake_nvml):
    on = real_nvml.NVML_DEVICE_MIG_ENABLE
    fake_nvml([_gpu(mig=[on, on]), _gpu()])
    g0, g1 = probe_mod.probe().gpus
    assert (g0.mig_mode, g1.mig_mode) == ("enabled", "disabled")


def test_process_list(fake_nvml):
    me = os.getpid()
    gone = 2**31 - 7  # no such pid in /proc: the name comes from NVML
    unknown = 2**31 - 11  # neither /proc nor NVML knows it
    nv = fake_nvml(
        [
            _gpu(
                compute=[NS(pid=me, usedGpuMemory=3 * GIB), NS(pid=gone, usedGpuMemory=None)],
                graphics=[NS(pid=me, usedGpuMemory=3 * GIB), NS(pid=unknown, usedGpuMemory=MIB)],
            )
        ]
    )
    nv.process_names[gone] = "/usr/bin/Xorg"
    procs = probe_mod.probe().gpus[0].processes

    my_name = Path(f"/proc/{me}/comm").read_text().strip()
    assert [(p.pid, p.name, p.used_bytes) for p in procs] == [
        (me, my_name, 3 * GIB),  # listed once though it is in both lists
        (gone, "Xorg", None),
        (unknown, None, MIB),
    ]


@pytest.mark.parametrize(
    "error, message",
    [
        (real_nvml.NVMLError_LibraryNotFound, NO_GPU_MESSAGE),
        (real_nvml.NVMLError_DriverNotLoaded, probe_mod.DRIVER_NOT_LOADED_MESSAGE),
        (real_nvml.NVMLError_NoPermission, probe_mod.NO_PERMISSION_MESSAGE),
        (real_nvml.NVMLError_Unknown, "NVML unavailable (Unknown Error)"),
    ],
)
def test_init_failure_gives_message_and_no_shutdown(fake_nvml, error, message):
    nv = fake_nvml([_gpu()], init_error=error())
    result = probe_mod.probe()
    assert result == ProbeResult((), message, False)
    assert nv.calls == {"init": 1}  # nvmlShutdown only after a successful init


def test_driver_without_gpus(fake_nvml):
    nv = fake_nvml([])
    assert probe_mod.probe() == ProbeResult((), NO_GPU_MESSAGE, False)
    assert nv.calls == {"init": 1, "shutdown": 1}


def test_unreadable_gpu_is_skipped_and_reported(fake_nvml):
    fake_nvml([real_nvml.NVMLError_GpuIsLost(), _gpu()])
    result = probe_mod.probe()
    assert result.ok and [g.index for g in result.gpus] == [1]
    assert result.message == "1 NVIDIA GPU found; GPU 0 unreadable: GPU is lost"


def test_missing_bindings(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    assert probe_mod.probe() == ProbeResult((), probe_mod.NO_BINDINGS_MESSAGE, False)


# --- snapshot(): one session for polling ----------------------------------------------------


def test_snapshot_keeps_nvml_open_and_reads_memory_fresh(fake_nvml):
    nv = fake_nvml([_gpu()])
    prober = probe_mod.NvmlProber()
    first = prober.snapshot()
    nv.gpus[0]["mem_v2"] = NS(total=140 * GIB, reserved=GIB, free=60 * GIB, used=79 * GIB)
    second = prober.snapshot()
    assert (first.gpus[0].used_bytes, second.gpus[0].used_bytes) == (39 * GIB, 79 * GIB)
    assert nv.calls == {"init": 1, "name": 1}  # static fields read once
    prober.close()
    prober.close()
    assert nv.calls["shutdown"] == 1


def test_snapshot_remembers_a_failed_init(fake_nvml):
    nv = fake_nvml([], init_error=real_nvml.NVMLError_LibraryNotFound())
    prober = probe_mod.NvmlProber()
    results = [prober.snapshot() for _ in range(3)]
    assert all(r.message == NO_GPU_MESSAGE and not r.ok for r in results)
    prober.close()
    assert nv.calls == {"init": 1}


def test_cuda_version_format():
    assert probe_mod._cuda_version(13000) == "13.0"
    assert probe_mod._cuda_version(12040) == "12.4"
    assert probe_mod._cuda_version(None) is None


# --- core.hardware ------------------------------------------------------------------------


@pytest.mark.parametrize("cc, bf16", [((7, 5), False), ((8, 0), True), ((9, 0), True), ((12, 0), True)])
def test_bf16_from_compute_capability(cc, bf16):
    assert GpuInfo(index=0, compute_capability=cc).bf16 is bf16


def test_usable_vram_subtracts_reserve_and_never_goes_negative():
    gpu = GpuInfo(index=0, free_bytes=10 * GIB)
    assert usable_vram_bytes(gpu, reserve_bytes=GIB) == 9 * GIB
    assert usable_vram_bytes(gpu, reserve_bytes=20 * GIB) == 0


def test_result_to_dict_is_json():
    data = json.loads(json.dumps(fake_probe_result().to_dict()))
    assert data["ok"] is True and len(data["gpus"]) == 2
    g0 = data["gpus"][0]
    assert g0["compute_capability"] == [8, 9] and g0["bf16"] is True
    assert g0["processes"][0] == {"pid": 1234, "name": "Xorg", "used_bytes": 512 * MIB}
    assert fake_probe_result().gpu(1).name == "NVIDIA H200"
    assert fake_probe_result().gpu(7) is None


# --- the CLI --------------------------------------------------------------------------------


def test_cli_table_lists_gpus_and_processes(capsys):
    args = NS(json=False)
    assert probe_cmd.run(args, prober=FakeProber()) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "driver 580.95.05  CUDA 13.0"
    assert lines[1].split()[:2] == ["GPU", "NAME"]
    assert "NVIDIA GeForce RTX 4090" in lines[2] and "2.00 GiB / 24.00 GiB" in lines[2]
    assert "NVIDIA H200" in lines[3] and "disabled" in lines[3] and "9.0" in lines[3]
    assert lines[5].split() == ["GPU", "PID", "MEMORY", "PROCESS"]
    assert lines[6].split() == ["0", "1234", "512.0", "MiB", "Xorg"]


def test_cli_json_parses(capsys):
    assert probe_cmd.run(NS(json=True), prober=FakeProber()) == 0
    data = json.loads(capsys.readouterr().out)
    assert [g["name"] for g in data["gpus"]] == ["NVIDIA GeForce RTX 4090", "NVIDIA H200"]


def test_cli_no_gpu_raises_no_gpu(capsys):
    with pytest.raises(UserError) as err:
        probe_cmd.run(NS(json=True), prober=FakeProber(fake_no_gpu_result()))
    assert err.value.code == ExitCode.NO_GPU
    assert str(err.value) == "no NVIDIA GPU or driver found (give recommend --vram GIB instead)"
    assert json.loads(capsys.readouterr().out)["ok"] is False


def test_cli_end_to_end_with_fake_nvml(fake_nvml, capsys):
    fake_nvml([_gpu(), _gpu(mig=[1, 1])])
    assert cli_main(["probe", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [g["mig_mode"] for g in data["gpus"]] == ["disabled", "enabled"]


def test_fake_prober_snapshots_advance():
    a, b = fake_probe_result(), fake_no_gpu_result()
    fake = FakeProber(snapshots=[a, b])
    assert [fake.snapshot() for _ in range(3)] == [a, b, b]


# --- the real machine ---------------------------------------------------------------------


needs_no_nvml = pytest.mark.skipif(_nvml_library_present(), reason="this machine has an NVIDIA driver")


@needs_no_nvml
def test_real_probe_without_driver():
    result = probe_mod.probe()
    assert result == ProbeResult((), NO_GPU_MESSAGE, False)
    assert probe_mod.snapshot() == result


def _run_cli(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "peft_advisor", *argv]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


@needs_no_nvml
def test_real_cli_without_driver():
    proc = _run_cli("probe")
    assert proc.returncode == ExitCode.NO_GPU
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"peft-advisor: {NO_GPU_MESSAGE} (give recommend --vram GIB instead)"]


@needs_no_nvml
def test_real_cli_json_without_driver():
    proc = _run_cli("probe", "--json")
    assert proc.returncode == ExitCode.NO_GPU
    assert json.loads(proc.stdout) == {"ok": False, "message": NO_GPU_MESSAGE, "gpus": []}


def test_imports_stay_cheap():
    code = (
        "import sys, peft_advisor.core.hardware, peft_advisor.probe, peft_advisor.cli.probe_cmd;"
        "print(sorted(m for m in ('pynvml', 'torch', 'textual', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.gpu
def test_real_probe_on_gpu():
    result = probe_mod.probe()
    assert result.ok, result.message
    gpu = result.gpus[0]
    assert gpu.name and gpu.total_bytes > 0 and gpu.free_bytes is not None
    assert gpu.compute_capability is not None and gpu.driver_version and gpu.cuda_driver_version
    json.dumps(result.to_dict())
    prober = probe_mod.NvmlProber()
    assert prober.snapshot().gpus[0].uuid == gpu.uuid
    prober.close()
