"""Step time of each method relative to LoRA, from the H200 measurements.

`peft_advisor/data/speed.json` is written by `python bench/calibrate.py` from
`bench/results/h200_*.jsonl`: for every measured shape that also has a LoRA run, the ratio
LoRA tokens/s ÷ method tokens/s; the file keeps the median and the range per method. These are
small shapes (<= 8k tokens a step) on a fast GPU, where LoRA's extra small kernels matter and
full fine-tuning can even be quicker; the study's L40S runs at Llama-3.2-3B scale found full
fine-tuning 2.3x slower. The matrix keeps both; this module answers "how much slower here".
GaLore's layer-wise and 8-bit variants have their own entries (`galore+layerwise`, `galore+8bit`):
layer-wise GaLore steps each weight in its own backward hook and is much slower than plain GaLore.
A method this trainer has not measured takes the study's training-time ratio (`Method.time_vs_lora`),
the figure the matrix's speed column is derived from, and says so.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def speed_table() -> dict:
    text = resources.files("peft_advisor.data").joinpath("speed.json").read_text(encoding="utf-8")
    return json.loads(text)


def measured_shapes() -> str:
    """The shapes the figures were measured at, in words (every speed claim says it)."""
    return str(speed_table().get("shapes", "an H200"))


def measured_step_time(method: str) -> float | None:
    """Median step time of `method` ÷ LoRA's, or None when not measured."""
    entry = speed_table()["methods"].get(method)
    return float(entry["median"]) if entry else None


def step_time_range(method: str) -> tuple[float, float] | None:
    entry = speed_table()["methods"].get(method)
    return (float(entry["min"]), float(entry["max"])) if entry else None


ADAMW_8BIT_TIME_FACTOR = 1.11
"""Step time with bitsandbytes' 8-bit AdamW over plain AdamW: Llama-3.2-1B LoRA 8 × 1024 on an H100,
40,910 → 36,771 tokens/s (bench/results/h100_round3_speed.md; one run). Paged variants are counted
the same (not measured)."""


def speed_key(method: str, galore_layerwise: bool = False, galore_8bit: bool = False) -> str:
    """The speed table's entry for a method's variant (layer-wise wins where both are on: it was
    measured without 8-bit states, and it is the slower change)."""
    if method == "galore" and galore_layerwise:
        return "galore+layerwise"
    if method == "galore" and galore_8bit:
        return "galore+8bit"
    return method


def base_step_time(key: str) -> tuple[float, str]:
    """(step time ÷ LoRA's without checkpointing, where that figure comes from, in words) for a
    `speed_key`: this trainer's median, else the study's training time, else LoRA's (assumed)."""
    measured = measured_step_time(key)
    if measured is not None:
        lo_hi = step_time_range(key)
        spread = f", {lo_hi[0]:.2f}–{lo_hi[1]:.2f}× across them" if lo_hi and key != "lora" and lo_hi[0] != lo_hi[1] else ""
        return measured, f"measured {measured:.2f}× on {measured_shapes()}{spread}"
    from peft_advisor.core.catalog import method_info

    m = method_info(key.split("+")[0])
    if m.time_vs_lora is not None:
        return m.time_vs_lora, (f"not measured on this trainer: the study's training time, {m.time_vs_lora:.2f}× "
                                f"LoRA's, from {m.study_run} on an L40S")
    return 1.0, "not measured: assumed LoRA's"
