"""Byte units. Names in this project say their unit (`peak_bytes`, `budget_gib`); convert only at
the edges, with these helpers."""

from __future__ import annotations

GIB = 1024**3
MIB = 1024**2
MB = 10**6  # the adapter budget (`--adapter-mb`) counts 10^6 bytes, like file sizes on disk


def gib_to_bytes(gib: float) -> int:
    return int(round(gib * GIB))


def bytes_to_gib(n: float) -> float:
    return n / GIB


def fmt_bytes(n: float | None) -> str:
    """Human size with binary units for memory (GiB, MiB, KiB)."""
    if n is None:
        return "—"
    n = float(n)
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}" if unit == "GiB" else f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def fmt_file_bytes(n: float | None) -> str:
    """Human size with decimal units (MB, GB), as file managers show adapter files."""
    if n is None:
        return "—"
    n = float(n)
    if n >= 10**9:
        return f"{n / 10**9:.2f} GB"
    if n >= 10**6:
        return f"{n / 10**6:.1f} MB"
    if n >= 10**3:
        return f"{n / 10**3:.1f} kB"
    return f"{int(n)} B"


def fmt_count(n: float | None) -> str:
    """1_234_567 -> '1.23 M'."""
    if n is None:
        return "—"
    n = float(n)
    for suffix, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {suffix}"
    return str(int(n))
