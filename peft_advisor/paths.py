"""Where peft-advisor keeps files of its own (the converted demo model, local calibration)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$PEFT_ADVISOR_CACHE, else $XDG_CACHE_HOME/peft-advisor, else ~/.cache/peft-advisor."""
    if os.environ.get("PEFT_ADVISOR_CACHE"):
        return Path(os.environ["PEFT_ADVISOR_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "peft-advisor"
