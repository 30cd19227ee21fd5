"""Trainable parameters and saved bytes of the peft adapters beyond LoRA and VeRA (issue 17).

Each count follows the parameter shapes peft 0.21 creates for one `nn.Linear` target (checked
against the study's saved adapters on Llama-3.2-3B, within 2 %, and against this project's own
saved adapters on a tiny model, tests). Only sizes live here; the estimator counts what each
method saves for backward as autograd saves it (checked on the CPU on real block shapes,
bench/results/cpu_saved_audit.md), plus the delta weights that LoKr, LoHa and SHiRA build
(`estimate.DELTA_WEIGHT_BYTES`); the catalog's `memory_measured` says which have been checked on a
GPU, and the advice says "memory not yet measured" for the others.
"""

from __future__ import annotations

from dataclasses import dataclass

INDEX_BYTES = 8
"""SHiRA saves each trained value with its int64 index into the flattened weight."""
SHIRA_INDEX_MEMORY_BYTES = 8
"""In memory SHiRA keeps each trained value's row and column as two int32s (a (2, n) tensor)."""
INDEX_BUFFER_BYTES = 8
"""OFT's rows/cols buffers are int64."""


@dataclass(frozen=True)
class Knobs:
    """The per-method settings the counts need (mirrors estimate.Settings' fields)."""

    rank: int
    oft_block_size: int
    lokr_factor: int
    c3a_block_size: int


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """peft's LoKr split of a dimension into m ≤ n with m·n = dimension (m near `factor`, or near
    √dimension when factor = -1); a transcription of `peft.tuners.lokr.layer.factorization`."""
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    factor = dimension if factor == -1 else factor
    m, n = 1, dimension
    while m < n:
        new_m = m + 1
        while dimension % new_m:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > m + n or new_m > factor:
            break
        m, n = new_m, new_n
    return (n, m) if m > n else (m, n)


def oft_block(d_in: int, block: int) -> int:
    """The block size peft uses: `block` if it divides d_in, else the nearest divisor (peft warns)."""
    if block >= d_in:
        return d_in
    higher = block
    while higher <= d_in and d_in % higher:
        higher += 1
    lower = block
    while lower > 1 and d_in % lower:
        lower -= 1
    return lower if block - lower <= higher - block else higher


def oft_index_bytes(d_in: int, block: int) -> int:
    """OFT's two int64 buffers per target (rows and cols of a block's upper triangle)."""
    b = oft_block(d_in, block)
    return 2 * (b * (b - 1) // 2) * INDEX_BUFFER_BYTES


def _lokr(d_in: int, d_out: int, k: Knobs) -> int:
    in_m, in_n = factorization(d_in, k.lokr_factor)
    out_l, out_k = factorization(d_out, k.lokr_factor)
    w1 = out_l * in_m  # decompose_both = False: W1 is always a full matrix
    w2 = out_k * in_n if not k.rank < max(out_k, in_n) / 2 else k.rank * (out_k + in_n)
    return w1 + w2


def layer_params(family: str, d_in: int, d_out: int, is_mlp: bool, k: Knobs) -> int:
    """Trainable parameters of one adapted linear layer (d_in → d_out)."""
    if family == "oft":
        b = oft_block(d_in, k.oft_block_size)
        return (d_in // b) * (b * (b - 1) // 2)  # upper triangle of each skew-symmetric block
    if family == "lokr":
        return _lokr(d_in, d_out, k)
    if family == "loha":
        return 2 * k.rank * (d_in + d_out)
    if family == "ia3":  # feed-forward layers scale their input, the others their output
        return d_in if is_mlp else d_out
    if family == "miss":
        return k.rank * d_out
    if family == "c3a":
        return d_in * d_out // k.c3a_block_size
    if family == "shira":
        return k.rank * (d_in + d_out)
    raise ValueError(f"no adapter count for family {family!r}")


def saved_bytes_per_param(family: str) -> int:
    """fp32 values, plus SHiRA's int64 index for each."""
    return 4 + (INDEX_BYTES if family == "shira" else 0)
