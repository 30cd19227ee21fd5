"""Step time of each method relative to LoRA, from the H200 measurements.

`peft_advisor/data/speed.json` is written by `python bench/calibrate.py` from
`bench/results/h200_*.jsonl`: for every measured shape that also has a LoRA run, the ratio
LoRA tokens/s ÷ method tokens/s; the file keeps the median and the range per method. These are
small shapes (<= 8k tokens a step) on a fast GPU, where LoRA's extra small kernels matter and
full fine-tuning can even be quicker; the study's L40S runs at Llama-3.2-3B scale found full
fine-tuning 2.3x slower. The matrix keeps both; this module answers "how much slower here".
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


def step_time_vs_lora(method: str) -> float:
    """Median step time of `method` ÷ LoRA's on the same shapes (1.0 when not measured)."""
    entry = speed_table()["methods"].get(method)
    return float(entry["median"]) if entry else 1.0


def step_time_range(method: str) -> tuple[float, float] | None:
    entry = speed_table()["methods"].get(method)
    return (float(entry["min"]), float(entry["max"])) if entry else None
