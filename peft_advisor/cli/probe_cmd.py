"""`peft-advisor probe [--json]`: the GPUs NVML sees, as a table or JSON.

With no GPU or driver the one-line reason goes to stderr and the exit code is `NO_GPU`, so
scripts can fall back to `--vram`. With `--json` stdout still gets the (empty) result.
"""

from __future__ import annotations

import json

from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.hardware import GpuInfo, ProbeResult
from peft_advisor.core.units import fmt_bytes


def register(sub) -> None:
    p = sub.add_parser("probe", help="show the NVIDIA GPUs, their memory and what holds it")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args, prober=None) -> int:
    """`prober` is injectable for tests; the real one reads NVML."""
    if prober is None:
        from peft_advisor.probe import NvmlProber

        prober = NvmlProber()
    result = prober.probe()
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif result.ok:
        print(format_table(result))
    if not result.ok:  # probe has no --vram: say where the budget goes
        raise UserError(f"{result.message} (give recommend --vram GIB instead)", ExitCode.NO_GPU)
    return int(ExitCode.OK)


def _or_dash(value, fmt: str = "{}") -> str:
    return "—" if value is None else fmt.format(value)


def _row(g: GpuInfo) -> list[str]:
    cc = g.compute_capability
    return [
        str(g.index),
        g.name or "—",
        f"{fmt_bytes(g.used_bytes)} / {fmt_bytes(g.total_bytes)}",
        fmt_bytes(g.free_bytes),
        "—" if cc is None else f"{cc[0]}.{cc[1]}",
        {True: "yes", False: "no", None: "—"}[g.bf16],
        _or_dash(g.utilization_pct, "{}%"),
        _or_dash(g.temperature_c, "{}°C"),
        f"{_or_dash(g.power_w, '{:.0f}')} / {_or_dash(g.power_limit_w, '{:.0f} W')}",
        g.mig_mode or "—",
    ]


_HEADER = ["GPU", "NAME", "USED / TOTAL", "FREE", "CC", "BF16", "UTIL", "TEMP", "POWER", "MIG"]


def _align(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def format_table(result: ProbeResult) -> str:
    """Driver line, one row per GPU, then the processes holding memory on each."""
    first = result.gpus[0]
    lines = [f"driver {first.driver_version or '—'}  CUDA {first.cuda_driver_version or '—'}"]
    lines += _align([_HEADER] + [_row(g) for g in result.gpus])
    procs = [
        [str(g.index), str(p.pid), fmt_bytes(p.used_bytes), p.name or "—"]
        for g in result.gpus
        for p in g.processes
    ]
    if procs:
        lines += ["", *_align([["GPU", "PID", "MEMORY", "PROCESS"], *procs])]
    return "\n".join(lines)
