"""Silence the library messages in train.log that are not the user's business, and only those.

train.log is what the user reads when a run goes wrong (and the app's log panel shows its tail), so
every line there should be about their run. A few messages come from the libraries talking to each
other, whatever the recipe says: transformers' own deprecations of names it uses internally, and
bitsandbytes trying (and failing, harmlessly: it falls back to its own kernel) to fetch a CPU
kernel from the Hub at import time, which it does for any method because peft imports it. Those
are filtered here, each by its own words; every other warning, including other FutureWarnings and
any from the user's model code, still reaches the log.
"""

from __future__ import annotations

import logging
import warnings

FUTURE_WARNINGS = (
    # transformers v5 renamed gradient checkpointing; its Trainer still reads the old names itself.
    r"`is_gradient_checkpointing` is deprecated and will be removed in v6",
    r"`gradient_checkpointing` is deprecated and will be removed in v6",
)
"""Regexes matched against the start of a FutureWarning's message."""

LOG_RECORDS = {
    # bitsandbytes on a CPU with AVX512-BF16 asks the Hub for a faster 4-bit kernel; offline, or
    # when the publisher check fails, it logs this and uses its own kernel.
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward",),
    "kernels._internals.hf_hub": ("Skipping publisher trust check",),
}
"""Logger name -> starts of the messages to drop from it (a logger's filter sees only its own records)."""


class _DropMessages(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def install() -> None:
    """Call once, early in the trainer child (before transformers or bitsandbytes is imported)."""
    for message in FUTURE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
    for name, starts in LOG_RECORDS.items():
        logging.getLogger(name).addFilter(_DropMessages(starts))
